"""The self-describing service file: layout round trips, permissions, damage handling."""

from __future__ import annotations

import os
import stat
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commy import fileformat as ff
from commy.errors import FileError, FileFormatError, InvalidRequest
from commy.virtual_file import VirtualServiceFile

SPECS = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64", "bool",
         "str[1]", "str[24]", "bytes[3]", "bytes[40]", "i16[3]", "f64[5]", "u8[17]"]


def value_for(spec: str, draw_int: int):
    """A deterministic valid value for ``spec`` derived from an int."""
    from commy.vartypes import parse_type

    vt = parse_type(spec)
    base = vt.base
    if base.kind == "str":
        return ("é" * vt.capacity)[: vt.capacity // 2] or "x"[: vt.capacity]
    if base.kind == "bytes":
        return bytes((draw_int + i) % 256 for i in range(vt.capacity))
    if base.kind == "bool":
        return bool(draw_int % 2)
    if base.kind == "float":
        v = float(draw_int % 1000) / 8
        return [v + i for i in range(vt.count)] if vt.count else v
    bits = base.itemsize * 8
    lo = -(1 << (bits - 1)) if base.fmt.islower() else 0
    hi = (1 << (bits - 1)) - 1 if base.fmt.islower() else (1 << bits) - 1
    v = lo + draw_int % (hi - lo + 1)
    return [v] * vt.count if vt.count else v


def test_created_file_permissions_and_name(tmp_path):
    root = tmp_path / "data"
    path = ff.create_service_file(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ff.FILE_NAME.match(path.name)
    header = ff.read_header(path.read_bytes())
    assert header.service_id == path.name[len("service_"):-4]
    assert header.file_size == path.stat().st_size
    assert header.data_offset % ff.PAGE == 0 and header.var_count == 0


def test_loose_data_root_is_tightened(tmp_path):
    root = tmp_path / "data"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    ff.create_service_file(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_service_path_rejects_user_names(tmp_path):
    for bad in ["../x.mem", "service_x.mem", "/etc/passwd", "service_" + "0" * 32 + ".mem/../../a"]:
        with pytest.raises(InvalidRequest):
            ff.service_path(tmp_path, bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.lists(st.tuples(st.sampled_from(SPECS), st.integers(0, 2**64), st.booleans()),
                       min_size=1, max_size=40))
def test_layout_round_trip(tmp_path_factory, layout):
    root = tmp_path_factory.mktemp("rt")
    expected = {}
    with VirtualServiceFile.create(root, dir_capacity=64, data_capacity=64) as vf:
        for i, (spec, seed, persistent) in enumerate(layout):
            name = f"v{i}"
            vf.allocate(name, spec, persistent=persistent)
            value = value_for(spec, seed)
            vf.write(name, value)
            expected[name] = (spec, value, persistent)
        path = vf.path
    raw = path.read_bytes()
    header = ff.read_header(raw)
    entries = ff.read_directory(raw, header)
    assert [e.name for e in entries] == list(expected)
    prev_end = header.data_offset
    for e in entries:
        spec, _value, persistent = expected[e.name]
        assert e.vtype.spec == spec.replace(" ", "")
        assert e.persistent == persistent
        assert e.offset % 8 == 0 and e.offset >= prev_end  # no overlap, aligned
        prev_end = e.offset + e.size
    assert prev_end <= header.data_end <= header.file_size == len(raw)
    with VirtualServiceFile.open(path, readonly=True) as again:
        for name, (spec, value, _p) in expected.items():
            got = again.read(name)
            if spec.startswith("f32"):
                assert got == pytest.approx(value)
            else:
                assert got == value


def _service_with_vars(root) -> bytes:
    with VirtualServiceFile.create(root) as vf:
        vf.allocate("a", "i64", initial=7)
        vf.allocate("s", "str[16]", initial="hi")
        return vf.path


def test_truncated_file_is_refused(tmp_path):
    path = _service_with_vars(tmp_path)
    raw = path.read_bytes()
    for cut in [0, 10, ff.HEADER_SIZE - 1, ff.HEADER_SIZE, len(raw) // 2, len(raw) - 1]:
        path.write_bytes(raw[:cut])
        with pytest.raises(FileFormatError):
            VirtualServiceFile.open(path)


def test_foreign_file_is_refused(tmp_path):
    p = tmp_path / "foreign.mem"
    p.write_bytes(os.urandom(20000))
    with pytest.raises(FileFormatError, match="bad magic"):
        VirtualServiceFile.open(p)
    p.write_bytes(b"")
    with pytest.raises(FileFormatError, match="too short"):
        VirtualServiceFile.open(p)
    with pytest.raises(FileError, match="not found"):
        VirtualServiceFile.open(tmp_path / "missing.mem")


def test_wrong_version_is_refused(tmp_path):
    path = _service_with_vars(tmp_path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, ff.OFF_VERSION, 99)
    path.write_bytes(raw)
    with pytest.raises(FileFormatError, match="version 99"):
        VirtualServiceFile.open(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, ff.HEADER_SIZE + 2 * ff.ENTRY_SIZE - 1), st.integers(1, 255)),
                      min_size=1, max_size=6))
def test_corrupted_header_or_directory_never_crashes(tmp_path_factory, flips):
    root = tmp_path_factory.mktemp("corrupt")
    path = _service_with_vars(root)
    raw = bytearray(path.read_bytes())
    for pos, xor in flips:
        raw[pos] ^= xor
    path.write_bytes(raw)
    try:
        vf = VirtualServiceFile.open(path)
    except FileFormatError:
        return
    # If it opens, every variable it lists must be readable inside the mapping.
    with vf:
        for name in vf.names():
            vf.read(name)
