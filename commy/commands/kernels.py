"""``commy kernels``: the diff kernels, their ranking, and which one is selected."""

from __future__ import annotations

from commy.commands._common import config_from, print_json, table


def add_commands(sub) -> None:
    p = sub.add_parser("kernels", help="rank the diff kernels on this machine and show the selected one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from commy.kernels.selection import select_kernel
    from commy.plugins import get_plugins

    cfg = config_from(args)
    plugins = get_plugins(cfg.plugins.disable)
    sel = select_kernel(plugins.kernels, cfg.kernel.name, cfg.kernel.variant, calibrate=True)
    selected = (sel.kernel.name, sel.kernel.variant)
    if args.json:
        print_json(
            {
                "selected": sel.label,
                "why": sel.why,
                "kernels": [
                    {
                        "kernel": c.kernel,
                        "variant": c.variant,
                        "available": c.available,
                        "rank": c.rank,
                        "gbps": c.gbps,
                        "reason": c.reason,
                        "selected": (c.kernel, c.variant) == selected,
                    }
                    for c in sel.table
                ],
            }
        )
        return 0
    rows = [
        [
            "*" if (c.kernel, c.variant) == selected else "",
            c.kernel,
            c.variant,
            "yes" if c.available else "no",
            str(c.rank),
            f"{c.gbps:.1f}" if c.gbps else "-",
            c.reason,
        ]
        for c in sel.table
    ]
    print(table(rows, ["", "kernel", "variant", "available", "rank", "GB/s (16 KiB)", "note"]))
    print(f"selected: {sel.label} — {sel.why}")
    return 0
