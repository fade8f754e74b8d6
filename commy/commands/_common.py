"""Helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any

from commy.config import Config, load_config


def config_from(args) -> Config:
    return load_config(getattr(args, "config", None))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def progress_printer(enabled: bool):
    """Progress lines on a terminal's stderr, nothing when piped or disabled."""
    if not enabled or not sys.stderr.isatty():
        return lambda message: None

    def show(message: str) -> None:
        sys.stderr.write(f"\r\x1b[2K{message}")
        sys.stderr.flush()

    return show


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
