"""Crashes and damaged storage on the local path: nothing torn, nothing stuck, typed errors."""

from __future__ import annotations

import os
import random
import resource
import signal
import time

import pytest

from commy.errors import FileError, FileFormatError
from commy.virtual_file import VirtualServiceFile

KILLS = 300


def _fork(fn) -> int:
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def test_writer_killed_mid_write_never_tears_or_sticks(tmp_path):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("pair", "u64[4]")
        vf.allocate("text", "str[64]", initial="a" * 64)
        vf.allocate("n", "i64")
        path = vf.path

    def hammer():
        w = VirtualServiceFile.open(path)
        i = w.read("n")
        while True:
            i += 1
            w.write("pair", [i] * 4)
            w.write("text", chr(97 + i % 26) * 64)
            w.write("n", i)

    rng = random.Random(1)
    with VirtualServiceFile.open(path, readonly=True) as reader:
        versions = []
        for _ in range(KILLS):
            pid = _fork(hammer)
            time.sleep(rng.uniform(0.0005, 0.004))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pair = reader.read("pair")
            text = reader.read("text")
            assert len(set(pair)) == 1, f"torn array after a crash: {pair}"
            assert len(text) == 64 and len(set(text)) == 1, f"torn text after a crash: {text!r}"
            versions.append(reader.version("pair"))
        # The next writer is never blocked by a lock or state the dead ones left behind.
        with VirtualServiceFile.open(path) as survivor:
            deadline = time.monotonic() + 2
            survivor.write("pair", [7] * 4)
            survivor.write("text", "z" * 64)
            assert time.monotonic() < deadline
            assert reader.read("pair") == [7] * 4 and reader.read("text") == "z" * 64
    assert versions[-1] > versions[0], "the writers really were writing when killed"


def test_allocator_killed_mid_layout_change_leaves_a_valid_file(tmp_path):
    with VirtualServiceFile.create(tmp_path, data_capacity=64, dir_capacity=1024) as vf:
        path = vf.path

    def allocate_forever():
        w = VirtualServiceFile.open(path)
        base = len(w.names())
        for i in range(base, 10_000):
            w.allocate(f"v{os.getpid()}_{i}", "f64[32]", initial=[1.0] * 32)

    rng = random.Random(2)
    for _ in range(40):
        pid = _fork(allocate_forever)
        time.sleep(rng.uniform(0.001, 0.01))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with VirtualServiceFile.open(path) as check:  # validates header + every entry
            for name in check.names():
                assert check.read(name) == [1.0] * 32
    with VirtualServiceFile.open(path) as again:
        again.allocate("after", "i64", initial=5)
        assert again.read("after") == 5


def test_full_disk_is_a_typed_error_not_a_crash(tmp_path):
    with VirtualServiceFile.create(tmp_path, data_capacity=64) as vf:
        vf.allocate("keep", "i64", initial=1)
        path = vf.path
        size = os.path.getsize(path)
    r, w = os.pipe()

    def grow_past_limit():
        os.close(r)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))  # "the disk is full"
        v = VirtualServiceFile.open(path)
        try:
            v.allocate("big", "bytes[1000000]")
            os.write(w, b"no error")
        except FileError as exc:
            v.write("keep", 2)  # the service keeps working
            os.write(w, f"FileError {exc.code} {v.read('keep')}".encode())

    pid = _fork(grow_past_limit)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    out = os.read(r, 1000).decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert out == "FileError FILE_ERROR 2", out
    with VirtualServiceFile.open(path) as vf:
        assert "big" not in vf.names() and vf.read("keep") == 2


def test_read_only_data_root(tmp_path):
    # Root bypasses permission bits, so make the root unusable the way a read-only
    # mount does for everybody: a regular file where the directory should be.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(FileError, match="cannot prepare data root"):
        VirtualServiceFile.create(blocker / "data")


def test_deleted_replaced_truncated_files_are_detected(tmp_path):
    vf = VirtualServiceFile.create(tmp_path)
    vf.allocate("x", "i64", initial=3)
    vf.check_backing()
    path = vf.path
    path.unlink()
    with pytest.raises(FileError, match="deleted"):
        vf.check_backing()
    assert vf.read("x") == 3, "the mapping itself stays readable"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(FileError, match="replaced"):
        vf.check_backing()
    vf.close()
    other = VirtualServiceFile.create(tmp_path)
    os.truncate(other.path, 4096)
    with pytest.raises(FileFormatError, match="truncated"):
        other.check_backing()
    other.close()
    third = VirtualServiceFile.create(tmp_path)
    new = tmp_path / "new.mem"
    new.write_bytes(b"\0" * 8192)
    os.replace(new, third.path)  # renamed over: the mapped inode has no link left
    with pytest.raises(FileError, match="replaced"):
        third.check_backing()
    third.close()
