"""``commy bench <name>``: benchmarks that print one JSON object (ratios in one run)."""

from __future__ import annotations

import importlib

from commy.commands._common import print_json, progress_printer

# name → (module, function); a benchmark whose module is missing is not offered.
BENCHES = {
    "local": ("commy.bench.local", "run_local_bench"),
    "kernels": ("commy.bench.kernels", "run_kernel_bench"),
    "remote": ("commy.bench.remote", "run_remote_bench"),
    "events": ("commy.bench.events", "run_events_bench"),
    "load": ("commy.bench.load", "run_load_bench"),
    "scaleout": ("commy.bench.scaleout", "run_scaleout_bench"),
}


def _available() -> list[str]:
    names = []
    for name, (module, _func) in BENCHES.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def add_commands(sub) -> None:
    import importlib.util  # noqa: F401 - find_spec lives there

    p = sub.add_parser("bench", help="run a benchmark and print JSON")
    p.add_argument("name", choices=_available(), help="which benchmark")
    p.add_argument("--json", action="store_true", help="print only the JSON object (default output is JSON too)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    module, func = BENCHES[args.name]
    fn = getattr(importlib.import_module(module), func)
    show = progress_printer(not args.quiet)
    result = fn(progress=show)
    show("")
    print_json(result)
    return 0
