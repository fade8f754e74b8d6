"""``commy watch TENANT/SERVICE``: a live table of a service's variables.

On a terminal the table is redrawn in place (values, versions, changes per second, age of
the last change); piped, it prints the table once and then one line per change (JSON
lines with ``--json``). Ctrl-C ends it with exit code 0.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from commy.commands._common import print_json

#: at most this many redraws per second, however fast the writers are
MAX_REDRAWS_PER_S = 20


def add_commands(sub) -> None:
    from commy.commands.server import _remote

    p = sub.add_parser(
        "watch",
        help="live table of a service's variables (values, versions, change rate)",
        description="Show a service's variables live: redrawn in place on a terminal, one line per "
        "change when piped. Uses the local mapping when the server is on this machine, a mirror "
        "over the network otherwise (--remote forces the mirror). Ctrl-C quits.",
    )
    p.add_argument("target", metavar="TENANT/SERVICE", help="the service to watch (or SERVICE with --tenant)")
    _remote(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--remote", action="store_true", help="force the remote mirror (client.locality=remote)")
    where.add_argument("--local", action="store_true", help="require the local mapping (client.locality=local)")
    p.add_argument("--interval", type=float, default=0.5, metavar="S",
                   help="redraw at least this often on a terminal (default 0.5 s)")
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    p.set_defaults(func=run)


def _target(args) -> tuple[str, str]:
    from commy.errors import ConfigError

    tenant, sep, service = args.target.partition("/")
    if not sep:
        tenant, service = args.tenant, args.target
    if not tenant or not service:
        raise ConfigError("watch needs TENANT/SERVICE (or SERVICE with --tenant)")
    return tenant, service


def run(args) -> int:
    import anyio

    from commy.commands.server import _config
    from commy.errors import ConfigError

    tenant, service = _target(args)
    cfg = _config(args)
    if not cfg.client.url:
        raise ConfigError("no server URL: pass --url or set client.url / COMMY_CLIENT_URL")
    locality = "remote" if args.remote else "local" if args.local else cfg.client.locality
    tty = sys.stdout.isatty() and not args.json
    try:
        anyio.run(_watch, args, cfg, tenant, service, locality, tty)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error
    finally:
        if tty:
            from commy.watchview import SHOW_CURSOR

            sys.stdout.write(SHOW_CURSOR)
            sys.stdout.flush()
    return 0


async def _watch(args, cfg, tenant: str, service: str, locality: str, tty: bool) -> None:
    import anyio
    import anyio.to_thread

    from commy.client import connect
    from commy.watchview import HIDE_CURSOR, WatchModel, change_lines, render_table, screen

    async with connect(cfg.client.url, tenant=tenant, config=cfg, locality=locality) as client:
        vf = await client.get_virtual_service_file(service)
        if not args.once:
            # Before the first sample: a change between the two would otherwise go unseen
            # until the next one (the watcher's shadow starts at its own start).
            await anyio.to_thread.run_sync(vf.start_file_monitoring)
        model = WatchModel(vf)
        where = "local mapping" if vf.is_local else f"remote mirror via {cfg.client.url}"

        def title() -> str:
            return (f"commy watch {tenant}/{service}  {where}  seq {vf.change_seq}  "
                    f"{time.strftime('%H:%M:%S')}  (Ctrl-C to quit)")

        if args.once:
            rows, _ = model.sample()
            if args.json:
                print_json({r.name: _row_json(r) for r in rows})
            else:
                print("\n".join(render_table(rows, title(), 10_000)))
            vf.close()
            return

        wake = anyio.Event()

        async def listen() -> None:
            nonlocal wake
            async for _event in vf.changes():
                wake.set()

        out = sys.stdout
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                if tty:
                    out.write(HIDE_CURSOR)
                first = True
                while True:
                    rows, moved = model.sample()
                    if tty:
                        width = shutil.get_terminal_size((100, 24)).columns
                        out.write(screen(render_table(rows, title(), width), first))
                    else:
                        if not first:
                            lines = change_lines(rows, moved, args.json)
                        elif args.json:  # every variable once, then changes
                            lines = change_lines(rows, [r.name for r in rows], True)
                        else:
                            lines = render_table(rows, title(), 10_000)
                        out.write("".join(line + "\n" for line in lines))
                    out.flush()
                    first = False
                    # Wait for a change (or, on a terminal, the next tick so rates and
                    # ages move), then a short pause so a burst costs one redraw.
                    with anyio.move_on_after(args.interval if tty else 3600):
                        await wake.wait()
                    wake = anyio.Event()
                    await anyio.sleep(1 / MAX_REDRAWS_PER_S)
        finally:
            vf.close()


def _row_json(r: Any) -> dict[str, Any]:
    value = r.value.hex() if isinstance(r.value, bytes) else r.value
    return {"type": r.type, "value": value, "version": r.version}
