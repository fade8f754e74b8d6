"""Server commands: ``commy serve``, ``keys`` (offline), and ``tenant`` / ``service`` / ``var``
against a running server (``--url``, ``--tenant``, ``--api-key`` or COMMY_CLIENT_API_KEY)."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from commy.commands._common import print_json, table

# ---------------------------------------------------------------- parsers


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="run the commy server until SIGINT/SIGTERM")
    p.add_argument("--host", help="listen address (server.host)")
    p.add_argument("--port", type=int, help="listen port (server.port)")
    p.add_argument("--transport", help="transport plugin (server.transport)")
    p.add_argument("--data-dir", help="data root (data_dir)")
    p.set_defaults(func=run_serve)

    keys = sub.add_parser("keys", help="API keys (offline on the data_dir store, or --url: a running server)")
    ks = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ks.add_parser("create", help="create an API key and print it once")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--server-admin", action="store_true", help="a server-wide admin key (bootstrap)")
    who.add_argument("--tenant", help="the tenant the key belongs to (created if missing)")
    p.add_argument("--principal", default=None, help="principal name (default: admin / client)")
    p.add_argument("--tenant-admin", action="store_true", help="admin on every service of the tenant")
    p.add_argument("--grant", action="append", default=[], metavar="SERVICE=PERM",
                   help="grant read|write|admin on a service ('*' for all); repeatable")
    p.add_argument("--description", default="")
    _data_dir_and_json(p)
    _keys_remote(p)
    p.set_defaults(func=run_keys_create)
    p = ks.add_parser("list", help="list keys (ids only; keys are never stored)")
    p.add_argument("--tenant")
    _data_dir_and_json(p)
    _keys_remote(p)
    p.set_defaults(func=run_keys_list)
    p = ks.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id")
    _data_dir_and_json(p)
    _keys_remote(p)
    p.set_defaults(func=run_keys_revoke)

    tenant = sub.add_parser("tenant", help="tenants on a running server (server admin)")
    ts = tenant.add_subparsers(dest="tenant_command", metavar="ACTION", required=True)
    for action, helptext in (("create", "create a tenant"), ("delete", "delete a tenant and its services")):
        p = ts.add_parser(action, help=helptext)
        p.add_argument("name")
        _remote(p)
        p.set_defaults(func=run_remote, op=f"tenant_{action}")
    p = ts.add_parser("list", help="list tenants")
    _remote(p)
    p.set_defaults(func=run_remote, op="tenant_list")

    service = sub.add_parser("service", help="services on a running server")
    ss = service.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    p = ss.add_parser("create", help="create a service")
    p.add_argument("name")
    p.add_argument("--ephemeral", action="store_true", help="removed when its last client disconnects")
    _remote(p)
    p.set_defaults(func=run_remote, op="service_create")
    for action, helptext in (("delete", "delete a service and its file"), ("show", "show a service")):
        p = ss.add_parser(action, help=helptext)
        p.add_argument("name")
        _remote(p)
        p.set_defaults(func=run_remote, op=f"service_{action}")
    p = ss.add_parser("list", help="list services you can read")
    _remote(p)
    p.set_defaults(func=run_remote, op="service_list")

    var = sub.add_parser("var", help="variables on a running server")
    vs = var.add_subparsers(dest="var_command", metavar="ACTION", required=True)
    p = vs.add_parser("get", help="read a variable")
    p.add_argument("service")
    p.add_argument("name")
    _remote(p)
    p.set_defaults(func=run_remote, op="var_get")
    p = vs.add_parser("set", help="write a variable (value as JSON, or plain text for str)")
    p.add_argument("service")
    p.add_argument("name")
    p.add_argument("value")
    p.add_argument("--create", metavar="TYPE", help="allocate it first with this type (e.g. i64, str[32])")
    _remote(p)
    p.set_defaults(func=run_remote, op="var_set")
    p = vs.add_parser("list", help="list a service's variables and values")
    p.add_argument("service")
    _remote(p)
    p.set_defaults(func=run_remote, op="var_list")


def _keys_remote(p) -> None:
    from commy.commands.admin import remote_options

    remote_options(p, tenant=False)
    p.add_argument("--auth-tenant", help="with --url: the tenant to authenticate to (default: --tenant)")


def _data_dir_and_json(p) -> None:
    p.add_argument("--data-dir", help="data root (data_dir)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _remote(p) -> None:
    p.add_argument("--url", help="server URL (client.url)")
    p.add_argument("--tenant", help="tenant to authenticate to (default: the name for tenant commands)")
    p.add_argument("--api-key", help="API key (client.api_key / COMMY_CLIENT_API_KEY)")
    p.add_argument("--ca-file", help="CA bundle that verifies the server (client.ca_file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _config(args):
    """Config with this command's options on top (they win over file and environment)."""
    from commy.config import load_config

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    for opt in ("host", "port", "transport"):
        if getattr(args, opt, None) is not None:
            overrides[f"server.{opt}"] = getattr(args, opt)
    for opt in ("url", "api_key", "ca_file"):
        if getattr(args, opt, None):
            overrides[f"client.{opt}"] = getattr(args, opt)
    return load_config(getattr(args, "config", None), overrides=overrides)


# ---------------------------------------------------------------- serve


def run_serve(args) -> int:
    import anyio

    from commy.commands._common import progress_printer
    from commy.server import Server

    show = progress_printer(True)  # a terminal sees start-up progress; a pipe or log does not
    show("commy: starting the server (store, plugins, diff kernel) ...")
    cfg = _config(args)
    server = Server(cfg)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            show("commy: starting the listener (TLS certificate, transport) ...")
            url = await tg.start(server.serve)
            show("")
            print(f"commy server listening on {url} (data: {cfg.data_path})", file=sys.stderr, flush=True)
            if url.startswith("wss://") and not cfg.server.cert_file:
                from commy.certs import CA_CERT, DEV_TLS_DIR

                ca = cfg.data_path / DEV_TLS_DIR / CA_CERT
                print(f"TLS: generated development certificate; clients verify it with --ca-file {ca}",
                      file=sys.stderr, flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    print(f"commy: {signal.Signals(signum).name}, shutting down", file=sys.stderr)
                    tg.cancel_scope.cancel()
                    break

    try:
        anyio.run(main)
    finally:
        server.close()
    return 0


# ---------------------------------------------------------------- keys (offline)


def _store(args):
    from commy.backplane import open_store

    # With a shared backplane the keys live there, not in this node's SQLite file.
    return open_store(_config(args))


def run_keys_create(args) -> int:
    from commy.auth.base import ROLE_SERVER_ADMIN, ROLE_TENANT_ADMIN
    from commy.errors import InvalidRequest

    if args.url:
        from commy.commands.admin import run_keys_remote

        return run_keys_remote(args, "keys_create")
    store = _store(args)
    try:
        grants = {}
        for g in args.grant:
            service, sep, perm = g.partition("=")
            if not sep:
                raise InvalidRequest(f"--grant needs SERVICE=PERMISSION, got {g!r}")
            grants[service] = perm
        if args.server_admin:
            principal = args.principal or "admin"
            key, key_id = store.create_api_key(
                None, principal, roles=[ROLE_SERVER_ADMIN], description=args.description
            )
        else:
            if not store.tenant_exists(args.tenant):
                store.create_tenant(args.tenant)
            principal = args.principal or "client"
            roles = [ROLE_TENANT_ADMIN] if args.tenant_admin else []
            key, key_id = store.create_api_key(
                args.tenant, principal, roles=roles, grants=grants, description=args.description
            )
    finally:
        store.close()
    if args.json:
        print_json({"key": key, "key_id": key_id, "tenant": args.tenant, "principal": principal})
    else:
        print(key)
        print(f"key id {key_id} for principal {principal!r}; store the key now, it is shown only once",
              file=sys.stderr)
    return 0


def run_keys_list(args) -> int:
    if args.url:
        from commy.commands.admin import run_keys_remote

        return run_keys_remote(args, "keys_list")
    store = _store(args)
    try:
        rows = store.list_api_keys(args.tenant)
    finally:
        store.close()
    if args.json:
        print_json([
            {"key_id": r.key_id, "tenant": r.tenant, "principal": r.principal, "created": r.created,
             "revoked": r.revoked, "description": r.description}
            for r in rows
        ])
        return 0
    print(table(
        [[r.key_id, r.tenant or "*", r.principal, "revoked" if r.revoked else "active", r.description]
         for r in rows],
        ["key id", "tenant", "principal", "state", "description"],
    ))
    return 0


def run_keys_revoke(args) -> int:
    if args.url:
        from commy.commands.admin import run_keys_remote

        return run_keys_remote(args, "keys_revoke")
    store = _store(args)
    try:
        store.revoke_api_key(args.key_id)
    finally:
        store.close()
    if args.json:
        print_json({"revoked": args.key_id})
    return 0


# ---------------------------------------------------------------- remote commands


def run_remote(args) -> int:
    import anyio

    from commy.errors import ConfigError

    cfg = _config(args)
    if not cfg.client.url:
        raise ConfigError("no server URL: pass --url or set client.url / COMMY_CLIENT_URL")
    tenant = args.tenant or (args.name if args.op.startswith("tenant_") and args.op != "tenant_list" else None)
    if not tenant:
        raise ConfigError("--tenant is required")
    return anyio.run(_remote_main, args, cfg, tenant)


def _parse_value(vt, text: str):
    if vt.base.kind == "str":
        return text
    if vt.base.kind == "bytes":
        return text.encode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        from commy.errors import InvalidValue

        raise InvalidValue(f"{text!r} is not a JSON value for {vt.spec}") from None


def _show(value):
    return value.hex() if isinstance(value, bytes) else value


async def _remote_main(args, cfg, tenant: str) -> int:
    from commy.client import connect
    from commy.vartypes import parse_type

    op = args.op
    out: Any = None
    async with connect(cfg.client.url, tenant=tenant, config=cfg) as c:
        if op == "tenant_create":
            await c.create_tenant(args.name)
            out = {"tenant": args.name, "created": True}
        elif op == "tenant_delete":
            await c.delete_tenant(args.name)
            out = {"tenant": args.name, "deleted": True}
        elif op == "tenant_list":
            out = await c.list_tenants()
        elif op == "service_create":
            info = await c.create_service(args.name, ephemeral=args.ephemeral)
            out = {"service": info.name, "service_id": info.service_id, "ephemeral": info.ephemeral}
        elif op == "service_delete":
            await c.delete_service(args.name)
            out = {"service": args.name, "deleted": True}
        elif op == "service_list":
            out = await c.list_services()
        elif op == "service_show":
            info = await c.get_service(args.name)
            out = {
                "service": info.name, "service_id": info.service_id, "ephemeral": info.ephemeral,
                "seq": info.seq, "layout": info.layout,
                "variables": {n: {"type": v.type, "version": v.version, "persistent": v.persistent}
                              for n, v in info.variables.items()},
            }
        elif op == "var_get":
            out = _show(await c.read_variable(args.service, args.name))
        elif op == "var_set":
            if args.create:
                vt = parse_type(args.create)
                await c.allocate_variable(args.service, args.name, vt.spec, initial=_parse_value(vt, args.value))
            else:
                vt = await c._type_of(tenant, args.service, args.name)
                await c.write_variable(args.service, args.name, _parse_value(vt, args.value))
            out = {"service": args.service, "name": args.name, "written": True}
        elif op == "var_list":
            info = await c.get_service(args.service)
            out = {n: _show(await c.read_variable(args.service, n)) for n in info.variables}
    if args.json:
        print_json(out)
    elif isinstance(out, list):
        print("\n".join(out))
    elif op == "var_list":
        print(table([[n, json.dumps(v, default=str)] for n, v in out.items()], ["variable", "value"]))
    elif op == "service_show":
        print(f"{out['service']} ({out['service_id']}) seq={out['seq']} layout={out['layout']}")
        print(table([[n, v["type"], str(v["version"])] for n, v in out["variables"].items()],
                    ["variable", "type", "version"]))
    elif op == "var_get":
        print(json.dumps(out, default=str) if not isinstance(out, str) else out)
    return 0
