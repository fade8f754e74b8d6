"""The process-wide default kernel, chosen once from config and the ranking."""

from __future__ import annotations

import threading

from commy.kernels.selection import Selection, select_kernel

_lock = threading.Lock()
_selection: Selection | None = None


def default_selection() -> Selection:
    global _selection
    with _lock:
        if _selection is None:
            from commy.config import load_config
            from commy.plugins import get_plugins

            cfg = load_config()
            plugins = get_plugins(cfg.plugins.disable)
            _selection = select_kernel(plugins.kernels, cfg.kernel.name, cfg.kernel.variant)
        return _selection


def default_kernel():
    return default_selection().kernel
