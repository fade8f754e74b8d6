"""The main job behind ``make demo`` / ``commy demo``.

Two processes share one service through the mapping: a writer process updates typed
variables, a reader process (a separate interpreter, mapping the same file) detects and
prints every change with the selected diff kernel. Exits 0 when the reader saw the
writer's final values.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

UPDATES = 20
INTERVAL_S = 0.1


def _writer(path: str, ready, done) -> None:
    from commy.virtual_file import VirtualServiceFile

    with VirtualServiceFile.open(path) as vf:
        ready.wait(10)
        for i in range(1, UPDATES + 1):
            vf.write("counter", i)
            vf.write("temperature", 20.0 + i / 4)
            vf.write("status", f"tick {i}")
            vf.write("samples", [i, i * 2.0, i * 3.0, i * 4.0])
            vf.write("ready", i == UPDATES)
            time.sleep(INTERVAL_S)
        done.set()


def _reader(path: str, ready, done, result) -> None:
    from commy.virtual_file import VirtualServiceFile

    with VirtualServiceFile.open(path, readonly=True) as vf:
        vf.snapshot_shadow()
        print(f"[reader pid {_pid()}] mapped {Path(path).name} read-only, kernel {vf.kernel.name}/{vf.kernel.variant}", flush=True)
        ready.set()
        seen = vf.change_seq
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not vf.wait_for_seq(seen, timeout=0.5):
                if done.is_set():
                    break
                continue
            seen = vf.change_seq
            changed = vf.detect_changes()
            if changed:
                values = ", ".join(f"{n}={vf.read(n)!r}" for n in sorted(changed))
                print(f"[reader pid {_pid()}] seq {seen:4d} changed: {values}", flush=True)
            if vf.read("ready"):
                break
        result.value = vf.read("counter")


def _pid() -> int:
    import os

    return os.getpid()


def run_demo(data_dir: str | None = None) -> int:
    from commy.virtual_file import VirtualServiceFile

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="commy-demo-") as tmp:
        root = data_dir or tmp
        with VirtualServiceFile.create(root) as vf:
            vf.allocate("counter", "i64")
            vf.allocate("temperature", "f64")
            vf.allocate("status", "str[32]")
            vf.allocate("samples", "f64[4]")
            vf.allocate("ready", "bool")
            path = str(vf.path)
        print(f"commy demo: service file {path}")
        print("variables: counter i64, temperature f64, status str[32], samples f64[4], ready bool")
        ready, done = ctx.Event(), ctx.Event()
        result = ctx.Value("q", -1)
        reader = ctx.Process(target=_reader, args=(path, ready, done, result), name="commy-demo-reader")
        writer = ctx.Process(target=_writer, args=(path, ready, done), name="commy-demo-writer")
        reader.start()
        writer.start()
        writer.join(45)
        reader.join(45)
        for proc in (writer, reader):
            if proc.is_alive():
                proc.kill()
        ok = writer.exitcode == 0 and reader.exitcode == 0 and result.value == UPDATES
        print(f"commy demo: writer exit {writer.exitcode}, reader exit {reader.exitcode}, "
              f"reader saw counter={result.value} (expected {UPDATES}): {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
