"""The real ``commy`` console script against a real server started with ``commy serve``
(TLS, another process), and ``commy watch`` driven in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

COMMY = str(Path(sys.executable).with_name("commy"))

#: every subcommand the product promises (issue 7); the security ones are checked apart
COMMANDS = ["serve", "demo", "plugins", "kernels", "bench", "keys", "tenant", "service", "var", "watch"]
SECURITY_COMMANDS = ["certs", "grant", "revoke"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMY_")}
    env.update(extra)
    return env


def commy(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([COMMY, *args], capture_output=True, text=True, env=env or _env(), timeout=timeout)


def _subcommands() -> dict[str, list[str]]:
    """{command: [actions]} from the parser itself, so new commands are checked too."""
    import argparse

    from commy.cli import build_parser

    found: dict[str, list[str]] = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                actions = [
                    a for sa in sub._actions if isinstance(sa, argparse._SubParsersAction) for a in sa.choices
                ]
                found[name] = actions
    return found


def test_help_lists_every_command() -> None:
    out = commy("--help")
    assert out.returncode == 0
    listed = set(re.findall(r"^    (\w+)\s", out.stdout, re.M))
    missing = [c for c in COMMANDS if c not in listed]
    assert not missing, f"commy --help does not list {missing}"
    subs = _subcommands()
    assert set(subs["keys"]) >= {"create", "list", "revoke"}
    assert set(subs["tenant"]) >= {"create", "list", "delete"}
    assert set(subs["service"]) >= {"create", "list", "delete", "show"}
    assert set(subs["var"]) >= {"get", "set", "list"}


def test_help_lists_security_commands() -> None:
    missing = [c for c in SECURITY_COMMANDS if c not in _subcommands()]
    assert not missing, f"commy --help does not list {missing}"


def test_help_everywhere(capsys) -> None:
    from commy.cli import main

    for name, actions in _subcommands().items():
        for argv in [[name], *[[name, a] for a in actions]]:
            with pytest.raises(SystemExit) as exit_:
                main([*argv, "--help"])
            assert exit_.value.code == 0, argv
            assert capsys.readouterr().out.startswith("usage: commy"), argv


def test_usage_errors_exit_2_without_traceback() -> None:
    out = commy("no-such-command")
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr
    out = commy("bench", "nope")
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(env, config path)`` of a ``commy serve`` subprocess with its own config file."""
    from commy.certs import create_ca, issue_server_cert

    root = tmp_path_factory.mktemp("cli-e2e")
    ca = create_ca(root / "tls", days=1)
    cert = issue_server_cert(root / "tls", hosts=("127.0.0.1",), days=1)
    config = root / "commy.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        '[kernel]\nname = "python"\n'
        f'[server]\nhost = "127.0.0.1"\nport = 0\ncert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
        f'[client]\nca_file = "{ca.cert_file}"\ntimeout = 20.0\n'
    )
    created = commy("--config", str(config), "keys", "create", "--server-admin", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    proc = subprocess.Popen([COMMY, "--config", str(config), "serve"], stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = _wait_for_url(proc)
        # The lean client transport: a one-shot command starts ~0.5 s faster without httpx;
        # the default transport is exercised by the flags-only call below.
        env = _env(COMMY_CONFIG=str(config), COMMY_CLIENT_URL=url, COMMY_CLIENT_API_KEY=key,
                   COMMY_CLIENT_TRANSPORT="wss-lean")
        yield env, str(config), url, key
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, "commy serve stops cleanly on SIGTERM"


def _wait_for_url(proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    seen = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"listening on (wss://\S+)", line)
            if m:
                return m.group(1)
    raise AssertionError(f"commy serve did not start: {''.join(seen)}")


def test_tenant_service_var_commands_against_commy_serve(served) -> None:
    env, config, url, key = served

    def ok(*args: str) -> str:
        out = commy(*args, env=env)
        assert out.returncode == 0, (args, out.stderr)
        assert "Traceback" not in out.stderr
        return out.stdout

    ok("tenant", "create", "acme")
    assert "acme" in json.loads(ok("tenant", "list", "--tenant", "acme", "--json"))
    created = json.loads(ok("service", "create", "sensors", "--tenant", "acme", "--json"))
    assert created["service"] == "sensors" and created["service_id"]
    ok("var", "set", "sensors", "temp", "21.5", "--create", "f64", "--tenant", "acme")
    ok("var", "set", "sensors", "label", "hello world", "--create", "str[32]", "--tenant", "acme")
    ok("var", "set", "sensors", "temp", "22.25", "--tenant", "acme")
    assert json.loads(ok("var", "get", "sensors", "temp", "--tenant", "acme", "--json")) == 22.25
    assert ok("var", "get", "sensors", "label", "--tenant", "acme").strip() == "hello world"
    assert json.loads(ok("var", "list", "sensors", "--tenant", "acme", "--json")) == {
        "temp": 22.25, "label": "hello world"}
    shown = json.loads(ok("service", "show", "sensors", "--tenant", "acme", "--json"))
    assert shown["variables"]["temp"]["type"] == "f64" and shown["variables"]["temp"]["version"] >= 1
    assert "temp" in ok("service", "show", "sensors", "--tenant", "acme")
    assert json.loads(ok("service", "list", "--tenant", "acme", "--json")) == ["sensors"]
    # the same with explicit flags instead of the environment
    flags_env = _env()
    out = commy("var", "get", "sensors", "temp", "--tenant", "acme", "--url", url, "--api-key", key,
                "--config", config, env=flags_env)
    assert out.returncode == 0 and out.stdout.strip() == "22.25", out.stderr

    # errors: short, typed, on stderr, exit 1
    out = commy("var", "get", "sensors", "nope", "--tenant", "acme", env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("commy: error [") and "NOT_FOUND]" in out.stderr and "Traceback" not in out.stderr
    out = commy("var", "set", "sensors", "temp", "warm", "--tenant", "acme", env=env)
    assert out.returncode == 1 and "INVALID" in out.stderr
    out = commy("var", "get", "sensors", "temp", "--tenant", "acme", env={**env, "COMMY_CLIENT_API_KEY": "commy_bad"})
    assert out.returncode == 1 and "UNAUTHORIZED" in out.stderr
    out = commy("--debug", "var", "get", "sensors", "nope", "--tenant", "acme", env=env)
    assert out.returncode == 1 and "Traceback" in out.stderr

    ok("service", "delete", "sensors", "--tenant", "acme")
    assert json.loads(ok("service", "list", "--tenant", "acme", "--json")) == []
    ok("tenant", "delete", "acme")


# ---------------------------------------------------------------- commy watch


_WRITER = """
import sys, time, commy
url, key, ca, locality = sys.argv[1:5]
import ssl
with commy.connect_sync(url, tenant="watch", api_key=key, locality=locality,
                        ssl_context=ssl.create_default_context(cafile=ca)) as c:
    vf = c.get_virtual_service_file("svc")
    time.sleep(1.0)
    for i in range(1, 41):
        vf.write("counter", i)
        vf.write("label", f"tick {i}")
        time.sleep(0.025)
    time.sleep(0.5)
"""


def _fresh_service(url: str, key: str, ca: str, tenant: str, variables: dict[str, str], **initial) -> None:
    import ssl

    import commy
    from commy.errors import AlreadyExists, NotFound

    with commy.connect_sync(url, tenant=tenant, api_key=key, ssl_context=ssl.create_default_context(cafile=ca)) as c:
        try:
            c.create_tenant(tenant)
        except AlreadyExists:
            pass
        try:
            c.delete_service("svc")
        except NotFound:
            pass
        c.create_service("svc")
        for name, vtype in variables.items():
            c.allocate_variable("svc", name, vtype, initial=initial.get(name))


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_watch_redraws_a_live_table_in_a_terminal(served, tmp_path, mode) -> None:
    env, config, url, key = served
    ca = re.search(r'ca_file = "([^"]+)"', Path(config).read_text()).group(1)
    _fresh_service(url, key, ca, "watch", {"counter": "i64", "label": "str[16]"})

    argv = ["watch", "watch/svc", "--interval", "0.2"] + (["--remote"] if mode == "remote" else ["--local"])
    child = pexpect.spawn(COMMY, argv, env=env, dimensions=(30, 110), encoding="utf-8", timeout=30)
    log = []
    child.logfile_read = type("Log", (), {"write": lambda self, s: log.append(s), "flush": lambda self: None})()
    try:
        where = "remote mirror" if mode == "remote" else "local mapping"
        child.expect(f"commy watch watch/svc  {where}")
        child.expect(r"counter\s+i64\s+0\s+0\s")
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, url, key, ca, "local"], env=env)
        try:
            child.expect(r"counter\s+i64\s+40\s+40\s+\d+\.\d\s+\d+\.\ds ago")
            child.expect(r"label\s+str\[16\]\s+'tick 40'")
        finally:
            assert writer.wait(30) == 0
        time.sleep(0.3)
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, "Ctrl-C ends a watch with exit code 0"
    screen = "".join(log)
    assert screen.count("\x1b[H") >= 3, "redrawn in place (cursor home), not scrolled"
    assert screen.endswith("\x1b[?25h") or "\x1b[?25h" in screen[-200:], "cursor shown again on exit"
    assert "Traceback" not in screen


def test_watch_piped_prints_lines(served) -> None:
    env, config, url, key = served
    ca = re.search(r'ca_file = "([^"]+)"', Path(config).read_text()).group(1)
    _fresh_service(url, key, ca, "pipe", {"n": "i64"}, n=5)
    out = commy("watch", "pipe/svc", "--once", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"n": {"type": "i64", "value": 5, "version": 0}}
    proc = subprocess.Popen([COMMY, "watch", "pipe/svc"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "commy watch pipe/svc" in _readline(proc)
        for _ in range(4):
            _readline(proc)  # blank, header, rule, the row
        assert commy("var", "set", "svc", "n", "6", "--tenant", "pipe", env=env).returncode == 0
        line = _readline(proc)
        assert re.match(r"\d\d:\d\d:\d\d  n = 6  \(version 1\)", line), line
        assert "\x1b" not in line, "no escape sequences when piped"
    finally:
        proc.send_signal(2)
        assert proc.wait(10) == 0


def _readline(proc: subprocess.Popen, timeout: float = 20) -> str:
    """The next stdout line, failing (not hanging) after ``timeout`` seconds."""
    import queue
    import threading

    lines = getattr(proc, "_lines", None)
    if lines is None:  # one reader thread per process: select() cannot see Python's buffer
        lines = proc._lines = queue.Queue()  # type: ignore[attr-defined]
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no output within {timeout} s") from None
