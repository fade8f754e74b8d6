"""``commy demo``: the main job that ``make demo`` runs."""

from __future__ import annotations


def add_commands(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo: a server on loopback, a local writer and a remote reader showing live change events",
        description="What `make demo` runs: an embedded server (WSS, generated dev certificate, temp data "
        "dir), a writer process using the local mapping and a reader process forced remote printing each "
        "change event. Exits 0 once the reader has seen the final values.",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output on the terminal")
    p.set_defaults(func=run)


def run(args) -> int:
    from commy.demo import run_demo

    return run_demo(progress=not args.quiet)
