"""``commy demo``: the main job that ``make demo`` runs."""

from __future__ import annotations


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="run the demo: processes sharing a service, with live change events")
    p.set_defaults(func=run)


def run(args) -> int:
    from commy.demo import run_demo

    return run_demo()
