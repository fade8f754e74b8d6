"""CLI: offline key management, `commy serve` with a graceful stop, remote commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from serverkit import make_config, running

from commy.cli import build_parser, main
from commy.commands.server import _remote_main


def _run(capsys, *argv: str):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_keys_offline(tmp_path, capsys):
    d = str(tmp_path / "data")
    code, out, _ = _run(capsys, "keys", "create", "--server-admin", "--data-dir", d)
    assert code == 0 and out.strip().startswith("commy_")
    code, out, _ = _run(capsys, "keys", "create", "--tenant", "acme", "--grant", "svc=read", "--data-dir", d, "--json")
    created = json.loads(out)
    assert created["tenant"] == "acme" and created["key"].startswith("commy_")
    code, out, _ = _run(capsys, "keys", "list", "--data-dir", d, "--json")
    rows = json.loads(out)
    assert {r["tenant"] for r in rows} == {None, "acme"}
    assert all("key" not in r for r in rows)
    code, _, _ = _run(capsys, "keys", "revoke", created["key_id"], "--data-dir", d)
    assert code == 0
    code, out, _ = _run(capsys, "keys", "list", "--data-dir", d, "--json", "--tenant", "acme")
    assert json.loads(out)[0]["revoked"] is True
    code, _, err = _run(capsys, "keys", "revoke", "nope", "--data-dir", d)
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = _run(capsys, "keys", "create", "--tenant", "acme", "--grant", "svc=owner", "--data-dir", d)
    assert code == 1 and "INVALID_REQUEST" in err


def test_serve_stops_gracefully_on_sigterm(tmp_path):
    env = {**os.environ, "COMMY_DATA_DIR": str(tmp_path / "data"), "COMMY_KERNEL": "python"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "commy.cli", "serve", "--transport", "inprocess"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stderr.readline()
        assert "listening on inproc://" in line, line
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "data" / "commy.sqlite3").exists()


@pytest.mark.anyio
async def test_remote_commands(tmp_path, capsys, monkeypatch):
    config = make_config(tmp_path / "data")
    async with running(config) as (server, url):
        key = server.create_admin_key()
        parser = build_parser()

        async def cli(*argv: str):
            args = parser.parse_args(list(argv))
            tenant = args.tenant or getattr(args, "name", None)
            monkeypatch.setattr(config.client, "url", url)
            monkeypatch.setattr(config.client, "api_key", key)
            await _remote_main(args, config, tenant)
            return capsys.readouterr().out

        await cli("tenant", "create", "acme")
        assert json.loads(await cli("tenant", "list", "--tenant", "acme", "--json")) == ["acme"]
        await cli("service", "create", "svc", "--tenant", "acme")
        await cli("var", "set", "svc", "n", "41", "--create", "i64", "--tenant", "acme")
        await cli("var", "set", "svc", "n", "42", "--tenant", "acme")
        await cli("var", "set", "svc", "s", "hello world", "--create", "str[16]", "--tenant", "acme")
        assert json.loads(await cli("var", "get", "svc", "n", "--tenant", "acme", "--json")) == 42
        assert json.loads(await cli("var", "list", "svc", "--tenant", "acme", "--json")) == {
            "n": 42, "s": "hello world"}
        shown = json.loads(await cli("service", "show", "svc", "--tenant", "acme", "--json"))
        assert shown["variables"]["s"]["type"] == "str[16]"
        assert "svc" in await cli("service", "list", "--tenant", "acme")
        await cli("service", "delete", "svc", "--tenant", "acme")
        assert json.loads(await cli("service", "list", "--tenant", "acme", "--json")) == []
        await cli("tenant", "delete", "acme")
