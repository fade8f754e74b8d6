"""docs/quickstart.md and README.md run as written: every ```sh and ```python block, in order, in a
scratch directory; the ```text block that starts ``commy serve`` is started by this test
in the background (on a free port instead of 8765, the only change made to the text).
Other ```text blocks (make, activate, interactive watch) are not run."""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "quickstart.md"
BIN = Path(sys.executable).parent
DEFAULT_PORT = "8765"


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _start_server(command: str, cwd: Path, env: dict[str, str], port: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        f"exec {command} --port {port}", shell=True, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True
    )
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        lines = []
        while sel.select(60):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                return proc
    proc.kill()
    raise AssertionError(f"`{command}` did not start: {''.join(lines)}")


README = Path(__file__).parent.parent / "README.md"


@pytest.mark.parametrize("doc", [DOC, README], ids=["quickstart", "readme"])
def test_every_block_is_marked(doc: Path) -> None:
    kinds = {kind for kind, _ in blocks(doc.read_text())}
    assert kinds <= {"sh", "python", "text"}, f"unmarked or unknown code blocks: {kinds}"


@pytest.mark.parametrize("doc", [DOC, README], ids=["quickstart", "readme"])
def test_quickstart_runs_as_written(tmp_path, doc: Path) -> None:
    found = blocks(doc.read_text())
    assert any(k == "python" for k, _ in found) and any(k == "sh" for k, _ in found)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["COMMY_KERNEL"] = "python"  # no calibration run per command: the page is about usage
    state = tmp_path / "env.sh"
    state.write_text("")
    server = None
    try:
        for index, (kind, body) in enumerate(found):
            body = body.replace(DEFAULT_PORT, port)
            where = f"{doc.name} block {index + 1} ({kind}):\n{body}"
            if kind == "text":
                if body.startswith("commy serve"):
                    server = _start_server(body.strip(), tmp_path, env, port)
                continue
            if kind == "sh":
                # One shell session across blocks: exports carry over, like a terminal.
                script = f"set -euo pipefail\nsource {state}\n{body}\nexport -p > {state}\n"
                out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=120)
            else:
                file = tmp_path / f"block{index + 1}.py"
                file.write_text(body)
                script = f"set -euo pipefail\nsource {state}\nexec {sys.executable} {file}\n"
                out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, f"{where}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
            assert "Traceback" not in out.stderr, where
    finally:
        if server is not None:
            server.terminate()
            assert server.wait(15) == 0, "commy serve stops cleanly"
    assert server is not None, "the quickstart starts a server with `commy serve`"


@pytest.mark.parametrize("doc", ["README.md", "docs/quickstart.md"])
def test_links_resolve(doc) -> None:
    path = Path(__file__).parent.parent / doc
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc} links to missing {target}"
