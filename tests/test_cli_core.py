"""The ``commy`` command line as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

COMMY = [sys.executable, "-m", "commy.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COMMY_")}
    full_env.update(env or {})
    return subprocess.run([*COMMY, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def test_help_lists_core_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("plugins", "kernels", "bench", "demo"):
        assert cmd in out.stdout


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("commy")
    assert exe.exists(), "`make install` puts the commy console script into .venv/bin"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("commy ")


def test_errors_are_short_and_typed():
    out = run("kernels", env={"COMMY_KERNEL": "no-such-kernel"})
    assert out.returncode == 1
    assert out.stderr.startswith("commy: error [PLUGIN_ERROR]: unknown kernel 'no-such-kernel'")
    assert "Traceback" not in out.stderr
    out = run("--debug", "kernels", env={"COMMY_KERNEL": "no-such-kernel"})
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_bad_config_names_key_and_source(tmp_path):
    cfg = tmp_path / "commy.toml"
    cfg.write_text("[kernel]\nnmae = 'x'\n")
    out = run("--config", str(cfg), "plugins")
    assert out.returncode == 1
    assert "kernel.nmae" in out.stderr and str(cfg) in out.stderr


def test_bench_local_json():
    out = run("bench", "local", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("read_ns_p50", "write_ns_p50", "raw_read_ns_p50", "raw_write_ns_p50"):
        assert isinstance(data[key], float) and data[key] > 0
    assert out.stderr == "", "no progress output when not on a terminal"


def test_demo_exits_zero_and_shows_values():
    start = time.monotonic()
    out = run("demo", timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - start < 60, "make demo must finish within 60 s"
    assert "wss://127.0.0.1:" in out.stdout, "the demo runs a server over WSS on loopback"
    assert "(vf.is_local=True)" in out.stdout and "(vf.is_local=False)" in out.stdout
    # the remote reader printed the local writer's last tick as a change event
    events = [line for line in out.stdout.splitlines() if line.startswith("[remote reader") and "event" in line]
    assert events and "counter=20" in events[-1] and "status='tick 20'" in events[-1], out.stdout
    assert "commy demo: OK" in out.stdout
    assert out.stderr == "", "no progress output when not on a terminal"
