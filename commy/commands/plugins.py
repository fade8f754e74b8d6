"""``commy plugins``: what was discovered, what it registered, what is blocked."""

from __future__ import annotations

from commy.commands._common import config_from, print_json, table


def add_commands(sub) -> None:
    p = sub.add_parser("plugins", help="list loaded plugins and what they registered")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from commy.plugins import get_plugins

    cfg = config_from(args)
    plugins = get_plugins(cfg.plugins.disable)
    infos = plugins.info()
    if args.json:
        print_json(
            {
                "plugins": [
                    {
                        "name": i.name,
                        "distribution": i.distribution,
                        "version": i.version,
                        "builtin": i.builtin,
                        "registered": i.registered,
                    }
                    for i in infos
                ],
                "blocked": plugins.blocked,
            }
        )
        return 0
    rows = []
    for i in infos:
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i.registered.items()) or "-"
        rows.append([i.name, i.distribution, i.version, "builtin" if i.builtin else "entry point", what])
    print(table(rows, ["plugin", "distribution", "version", "source", "registered"]))
    print(f"blocked: {', '.join(plugins.blocked) if plugins.blocked else 'none'}")
    return 0
