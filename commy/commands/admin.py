"""Access management against a running server: ``commy grant``, ``commy revoke``,
``commy grants``, and the ``--url`` form of ``commy keys``.

    commy grant bob 'sensor-*' write --tenant acme --url wss://host:8765/commy --api-key ...
    commy grant bob --role tenant-admin --tenant acme ...
    commy revoke bob 'sensor-*' --tenant acme ...
    commy grants --tenant acme ...

A revoke applies to bob's live sessions at once (their subscriptions stop).
"""

from __future__ import annotations

import sys
from typing import Any

from commy.commands._common import print_json, table


def add_commands(sub) -> None:
    p = sub.add_parser("grant", help="grant a permission on a service (name or glob), or a role")
    p.add_argument("principal")
    p.add_argument("service", nargs="?", help="service name or glob ('*', 'sensor-*')")
    p.add_argument("permission", nargs="?", choices=["read", "write", "admin"])
    p.add_argument("--role", choices=["tenant-admin", "server-admin"])
    remote_options(p)
    p.set_defaults(func=run_admin, op="grant")
    p = sub.add_parser("revoke", help="remove a grant (as granted) or a role; live sessions follow at once")
    p.add_argument("principal")
    p.add_argument("service", nargs="?")
    p.add_argument("--role", choices=["tenant-admin", "server-admin"])
    remote_options(p)
    p.set_defaults(func=run_admin, op="revoke")
    p = sub.add_parser("grants", help="list the grants of a tenant")
    p.add_argument("--principal")
    remote_options(p)
    p.set_defaults(func=run_admin, op="grants")


def remote_options(p, *, tenant: bool = True) -> None:
    p.add_argument("--url", help="server URL (client.url)")
    if tenant:
        p.add_argument("--tenant", help="tenant to act in (and authenticate to)")
    p.add_argument("--api-key", help="API key (client.api_key / COMMY_CLIENT_API_KEY)")
    p.add_argument("--ca-file", help="CA bundle that verifies the server (client.ca_file)")
    p.add_argument("--cert-file", help="client certificate for mTLS (client.cert_file)")
    p.add_argument("--key-file", help="its private key (client.key_file)")
    if not any(a.dest == "json" for a in p._actions):
        p.add_argument("--json", action="store_true", help="machine-readable output")


def _config(args):
    from commy.config import load_config

    overrides: dict[str, Any] = {}
    for opt in ("url", "api_key", "ca_file", "cert_file", "key_file"):
        if getattr(args, opt, None):
            overrides[f"client.{opt}"] = getattr(args, opt)
    return load_config(getattr(args, "config", None), overrides=overrides)


def run_admin(args) -> int:
    import anyio

    from commy.errors import ConfigError

    cfg = _config(args)
    if not cfg.client.url:
        raise ConfigError("no server URL: pass --url or set client.url / COMMY_CLIENT_URL")
    auth_tenant = getattr(args, "auth_tenant", None) or getattr(args, "tenant", None)
    if not auth_tenant:
        raise ConfigError("--tenant is required (the tenant to authenticate to)")
    return anyio.run(_main, args, cfg, auth_tenant)


async def _main(args, cfg, auth_tenant: str) -> int:
    from commy.client import connect
    from commy.errors import InvalidRequest

    op = args.op
    out: Any = None
    async with connect(cfg.client.url, tenant=auth_tenant, config=cfg) as c:
        if op == "grant":
            if args.role:
                await c.grant(args.principal, role=args.role)
            elif args.service and args.permission:
                await c.grant(args.principal, args.service, args.permission)
            else:
                raise InvalidRequest("give SERVICE PERMISSION, or --role")
            out = {"granted": args.role or f"{args.permission} on {args.service}", "principal": args.principal}
        elif op == "revoke":
            if bool(args.role) == bool(args.service):
                raise InvalidRequest("give SERVICE or --role")
            await c.revoke(args.principal, args.service, role=args.role)
            out = {"revoked": args.role or args.service, "principal": args.principal}
        elif op == "grants":
            out = await c.list_grants(args.principal)
        elif op == "keys_create":
            grants = {}
            for g in args.grant:
                service, sep, perm = g.partition("=")
                if not sep:
                    raise InvalidRequest(f"--grant needs SERVICE=PERMISSION, got {g!r}")
                grants[service] = perm
            roles = ["server-admin"] if args.server_admin else (["tenant-admin"] if args.tenant_admin else [])
            out = await c.create_api_key(
                args.principal or ("admin" if args.server_admin else "client"), roles=roles, grants=grants,
                description=args.description, server_wide=bool(args.server_admin),
                tenant=args.tenant,
            )
        elif op == "keys_list":
            out = await c.list_api_keys(tenant=args.tenant)
        elif op == "keys_revoke":
            await c.revoke_api_key(args.key_id)
            out = {"revoked": args.key_id}
    if args.json:
        print_json(out)
    elif op == "grants":
        print(table([[g["principal"], g["service"], g["permission"], g["source"]] for g in out],
                    ["principal", "service", "permission", "source"]))
    elif op == "keys_create":
        print(out["key"])
        print(f"key id {out['key_id']} for principal {out['principal']!r}; store the key now, it is shown only once",
              file=sys.stderr)
    elif op == "keys_list":
        print(table([[k["key_id"], k.get("tenant") or "*", k["principal"], "revoked" if k["revoked"] else "active",
                      k["description"]] for k in out], ["key id", "tenant", "principal", "state", "description"]))
    return 0


def run_keys_remote(args, op: str) -> int:
    """``commy keys create|list|revoke --url ...``: the same through a running server."""
    args.op = op
    if not getattr(args, "tenant", None) and not args.auth_tenant:
        from commy.errors import ConfigError

        raise ConfigError("with --url, give --tenant or --auth-tenant (the tenant to authenticate to)")
    return run_admin(args)
