"""Typed variables: values, bounds, layout changes, and the exact diff-to-variable mapping."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commy.errors import (
    AlreadyExists,
    InvalidRequest,
    InvalidValue,
    PermissionDenied,
    VariableNotFound,
)
from commy.kernels.python import PythonKernel
from commy.virtual_file import VirtualServiceFile


@pytest.fixture
def vf(tmp_path):
    with VirtualServiceFile.create(tmp_path, kernel=PythonKernel()) as f:
        yield f


INT_BOUNDS = {"i8": (-128, 127), "i16": (-(2**15), 2**15 - 1), "i32": (-(2**31), 2**31 - 1),
              "i64": (-(2**63), 2**63 - 1), "u8": (0, 255), "u16": (0, 2**16 - 1),
              "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1)}


@pytest.mark.parametrize("spec", list(INT_BOUNDS))
def test_int_bounds(vf, spec):
    lo, hi = INT_BOUNDS[spec]
    vf.allocate("x", spec, initial=1)
    for good in (lo, hi, 0 if lo == 0 else -1):
        vf.write("x", good)
        assert vf.read("x") == good
    vf.write("x", 5)
    for bad in (lo - 1, hi + 1, 1.5, "3", None):
        with pytest.raises(InvalidValue):
            vf.write("x", bad)
        assert vf.read("x") == 5, "a refused write must write nothing"


def test_floats_and_bool(vf):
    vf.allocate("d", "f64")
    vf.allocate("f", "f32")
    vf.allocate("b", "bool")
    vf.write("d", 1e300)
    vf.write("f", 1.5)
    vf.write("b", True)
    assert (vf.read("d"), vf.read("f"), vf.read("b")) == (1e300, 1.5, True)
    vf.write("f", math.inf)
    assert vf.read("f") == math.inf
    for name, bad in [("f", 1e39), ("f", True), ("d", "1"), ("b", 1), ("b", None), ("d", True)]:
        before = vf.read(name)
        with pytest.raises(InvalidValue):
            vf.write(name, bad)
        assert vf.read(name) == before


def test_str_bytes_arrays(vf):
    vf.allocate("s", "str[8]")
    vf.allocate("raw", "bytes[4]")
    vf.allocate("arr", "i32[3]")
    vf.write("s", "añb")
    vf.write("raw", b"\x00\x01")
    vf.write("arr", (1, -2, 3))
    assert (vf.read("s"), vf.read("raw"), vf.read("arr")) == ("añb", b"\x00\x01", [1, -2, 3])
    for name, bad in [("s", "ñ" * 5), ("s", b"x"), ("raw", b"12345"), ("raw", "x"),
                      ("arr", [1, 2]), ("arr", [1, 2, 2**40]), ("arr", "abc"), ("arr", 3)]:
        before = vf.read(name)
        with pytest.raises(InvalidValue):
            vf.write(name, bad)
        assert vf.read(name) == before


def test_allocation_errors(vf):
    vf.allocate("x", "i64")
    with pytest.raises(AlreadyExists):
        vf.allocate("x", "i32")
    for bad_name in ["", "a/b", "../x", "x" * 65, "a b", "\x00", "1abc"]:
        with pytest.raises(InvalidRequest):
            vf.allocate(bad_name, "i64")
    for bad_type in ["i128", "str", "str[0]", "bool[2]", "f64[0]", 5]:
        with pytest.raises(InvalidRequest):
            vf.allocate("y", bad_type)
    with pytest.raises(InvalidValue):
        vf.allocate("z", "u8", initial=300)
    assert "z" not in vf
    with pytest.raises(VariableNotFound):
        vf.read("nope")
    with pytest.raises(VariableNotFound):
        vf.write("nope", 1)


def test_directory_capacity_limit(tmp_path):
    from commy.errors import LimitExceeded

    with VirtualServiceFile.create(tmp_path, dir_capacity=2) as vf:
        vf.allocate("a", "i8")
        vf.allocate("b", "i8")
        with pytest.raises(LimitExceeded):
            vf.allocate("c", "i8")


def test_deallocate_and_reallocate(vf):
    vf.allocate("x", "i64", initial=3)
    gen = vf.layout_generation
    vf.deallocate("x")
    assert vf.layout_generation > gen
    assert "x" not in vf.names()
    with pytest.raises(VariableNotFound):
        vf.deallocate("x")
    vf.allocate("x", "str[4]", initial="new")
    assert vf.read("x") == "new"


def test_growth_is_seen_by_other_mapping(tmp_path):
    with VirtualServiceFile.create(tmp_path, data_capacity=8) as a, VirtualServiceFile.open(
        VirtualServiceFile.create(tmp_path).path
    ) as _unused:
        b = VirtualServiceFile.open(a.path)
        size0 = a.accessor.file_size()
        for i in range(200):
            a.allocate(f"v{i}", "f64[8]", initial=[float(i)] * 8)
        assert a.accessor.file_size() > size0
        # b maps the old size; reading a new variable remaps transparently
        assert b.read("v199") == [199.0] * 8
        assert b.accessor.file_size() == a.accessor.file_size()
        b.close()


def test_readonly_mapping_refuses_writes(vf):
    vf.allocate("x", "i64", initial=1)
    with VirtualServiceFile.open(vf.path, readonly=True) as ro:
        assert ro.read("x") == 1
        with pytest.raises(PermissionDenied):
            ro.write("x", 2)
        with pytest.raises(PermissionDenied):
            ro.allocate("y", "i64")
        vf.write("x", 9)
        assert ro.read("x") == 9


def test_versions_and_seq_move_on_write(vf):
    vf.allocate("x", "i64")
    vf.allocate("s", "str[8]")
    v0, s0, seq0 = vf.version("x"), vf.version("s"), vf.change_seq
    vf.write("x", 1)
    vf.write("s", "a")
    assert vf.version("x") == v0 + 1 and vf.version("s") == s0 + 1
    assert vf.change_seq == seq0 + 2


SPECS = ["i8", "u16", "i32", "i64", "f32", "f64", "bool", "str[5]", "bytes[9]", "u8[3]", "f64[2]"]


def _different(spec, old):
    if isinstance(old, bool):
        return not old
    if isinstance(old, float):
        return old + 1.0
    if isinstance(old, int):
        return old + 1 if old < 100 else old - 1
    if isinstance(old, str):
        return "z" if old != "z" else "y"
    if isinstance(old, bytes):
        return b"\x01" + old[1:] if old[:1] != b"\x01" else b"\x02"
    return [_different(spec, old[0])] + list(old[1:])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(st.sampled_from(SPECS), min_size=1, max_size=30), data=st.data())
def test_diff_maps_to_exactly_the_written_variables(tmp_path_factory, specs, data):
    root = tmp_path_factory.mktemp("diff")
    with VirtualServiceFile.create(root, kernel=PythonKernel()) as vf:
        names = [f"v{i}" for i in range(len(specs))]
        for name, spec in zip(names, specs, strict=True):
            vf.allocate(name, spec)
        vf.snapshot_shadow()
        assert vf.detect_changes() == []
        written = data.draw(st.sets(st.sampled_from(names)))
        for name in written:
            vf.write(name, _different(specs[names.index(name)], vf.read(name)))
        assert sorted(vf.changed_variables()) == sorted(written)
        assert sorted(vf.detect_changes()) == sorted(written)
        assert vf.detect_changes() == [], "the shadow moved forward"


def test_diff_after_growth_reports_new_values(tmp_path):
    with VirtualServiceFile.create(tmp_path, data_capacity=8, kernel=PythonKernel()) as vf:
        vf.allocate("a", "i64")
        vf.snapshot_shadow()
        for i in range(100):
            vf.allocate(f"n{i}", "i64", initial=i)
        changed = vf.detect_changes()
        assert set(changed) == {f"n{i}" for i in range(1, 100)}  # n0 == 0 matches the zeroed shadow
