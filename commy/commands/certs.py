"""``commy certs``: a development CA, a server certificate and client certificates.

    commy certs init --dir certs                 # CA + server cert (localhost, 127.0.0.1, ::1)
    commy certs client alice --tenant acme --dir certs

Each step prints the config lines that use what it made.
"""

from __future__ import annotations

import sys
from pathlib import Path

from commy.commands._common import print_json, progress_printer

DEFAULT_DIR = "commy-certs"


def add_commands(sub) -> None:
    certs = sub.add_parser("certs", help="make a development CA, server and client certificates (mTLS)")
    cs = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    p = cs.add_parser("init", help="create a CA and a server certificate in a directory")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"output directory (default: {DEFAULT_DIR})")
    p.add_argument("--host", action="append", default=[], metavar="NAME",
                   help="server DNS name or IP (repeatable; default: localhost 127.0.0.1 ::1)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_init)
    p = cs.add_parser("client", help="issue a client certificate for a principal")
    p.add_argument("principal", help="principal name (the certificate's CN)")
    p.add_argument("--tenant", help="tenant: adds the SAN URI commy://TENANT/PRINCIPAL the default mtls rule maps")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"directory holding the CA (default: {DEFAULT_DIR})")
    p.add_argument("--days", type=float, default=365, help="validity in days (default: 365)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_client)


def run_init(args) -> int:
    from commy import certs
    from commy.errors import ConfigError

    show = progress_printer(not args.json)
    d = Path(args.dir).expanduser()
    if (d / certs.CA_CERT).exists() and not args.force:
        raise ConfigError(f"{d / certs.CA_CERT} exists; pass --force to replace the CA")
    show("creating the CA ...")
    ca = certs.create_ca(d)
    show("creating the server certificate ...")
    hosts = tuple(args.host) or ("localhost", "127.0.0.1", "::1")
    server = certs.issue_server_cert(d, hosts)
    show("")
    if sys.stderr.isatty() and not args.json:
        sys.stderr.write("\r\x1b[2K")
    out = {"ca_file": str(ca.cert_file.resolve()), "cert_file": str(server.cert_file.resolve()),
           "key_file": str(server.key_file.resolve()), "hosts": list(hosts)}
    if args.json:
        print_json(out)
        return 0
    print(f"""# CA and server certificate in {d}/ (the CA key {ca.key_file.name} issues client certificates)
# server side, commy.toml:
[server]
tls = true
cert_file = "{out['cert_file']}"
key_file = "{out['key_file']}"
client_ca_file = "{out['ca_file']}"
authenticators = ["mtls", "api_key"]

# client side, commy.toml:
[client]
ca_file = "{out['ca_file']}"
# next: commy certs client alice --tenant acme --dir {args.dir}""")
    return 0


def run_client(args) -> int:
    from commy import certs

    show = progress_printer(not args.json)
    show(f"issuing a client certificate for {args.principal} ...")
    issued = certs.issue_client_cert(args.dir, args.principal, args.tenant, days=args.days)
    if sys.stderr.isatty() and not args.json:
        sys.stderr.write("\r\x1b[2K")
    d = Path(args.dir).expanduser()
    out = {"cert_file": str(issued.cert_file.resolve()), "key_file": str(issued.key_file.resolve()),
           "ca_file": str((d / certs.CA_CERT).resolve()), "principal": args.principal,
           "tenant": args.tenant}
    if args.json:
        print_json(out)
        return 0
    print(f"""# client certificate for {args.principal!r} (CN={args.principal}""" +
          (f", SAN URI {certs.client_uri(args.tenant, args.principal)})" if args.tenant else ")") + f"""
[client]
ca_file = "{out['ca_file']}"
cert_file = "{out['cert_file']}"
key_file = "{out['key_file']}\"""")
    if args.tenant:
        print(f"""# the server maps it with the default rule mtls.rules = ["uri:commy://{{tenant}}/{{principal}}"];
# give it permissions, e.g.: commy grant {args.principal} 'sensors*' write --tenant {args.tenant}""")
    else:
        print(f"""# no --tenant: map the CN yourself, e.g. [mtls] rules = ["cn:{args.principal} => TENANT/{args.principal}"]""")
    return 0
