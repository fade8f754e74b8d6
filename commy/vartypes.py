"""Variable types: how a value is laid out in a service file and checked on write.

A type is written as a short spec: ``i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 bool`` for
scalars, ``f64[16]`` for a fixed-length array of numbers, ``str[32]`` / ``bytes[32]`` for
UTF-8 text / raw bytes of at most 32 bytes.
"""

from __future__ import annotations

import math
import re
import struct

import attrs

from commy.errors import InvalidRequest, InvalidValue

F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
LENGTH_PREFIX = 4  # str/bytes values carry a u32 length before their bytes


@attrs.frozen
class BaseType:
    code: int
    name: str
    fmt: str  # struct / memoryview format character ('' for str/bytes)
    itemsize: int
    kind: str  # int | float | bool | bytes | str


BASE_TYPES: dict[str, BaseType] = {
    t.name: t
    for t in [
        BaseType(1, "i8", "b", 1, "int"),
        BaseType(2, "i16", "h", 2, "int"),
        BaseType(3, "i32", "i", 4, "int"),
        BaseType(4, "i64", "q", 8, "int"),
        BaseType(5, "u8", "B", 1, "int"),
        BaseType(6, "u16", "H", 2, "int"),
        BaseType(7, "u32", "I", 4, "int"),
        BaseType(8, "u64", "Q", 8, "int"),
        BaseType(9, "f32", "f", 4, "float"),
        BaseType(10, "f64", "d", 8, "float"),
        BaseType(11, "bool", "?", 1, "bool"),
        BaseType(12, "bytes", "", 1, "bytes"),
        BaseType(13, "str", "", 1, "str"),
    ]
}
BY_CODE: dict[int, BaseType] = {t.code: t for t in BASE_TYPES.values()}

_SPEC = re.compile(r"^\s*([a-z0-9]+)\s*(?:\[\s*(\d+)\s*\])?\s*$")
MAX_ITEMS = 1 << 24


@attrs.frozen
class VarType:
    """A concrete variable type: base type plus array length or byte capacity."""

    base: BaseType
    count: int = 0  # array length for numbers (0 = scalar)
    capacity: int = 0  # max bytes for str / bytes

    @property
    def size(self) -> int:
        if self.base.kind in ("str", "bytes"):
            return LENGTH_PREFIX + self.capacity
        return self.base.itemsize * max(self.count, 1)

    @property
    def is_array(self) -> bool:
        return self.count > 0

    @property
    def alignment(self) -> int:
        return 8

    @property
    def single_word(self) -> bool:
        """True when one aligned machine access stores the whole value (no seqlock)."""
        return not self.is_array and self.base.kind not in ("str", "bytes")

    @property
    def storage_size(self) -> int:
        """Bytes in the file: multi-word values keep two copies (see docs/file-format.md)."""
        return self.size if self.single_word else 2 * round_up8(self.size)

    @property
    def spec(self) -> str:
        if self.base.kind in ("str", "bytes"):
            return f"{self.base.name}[{self.capacity}]"
        if self.count:
            return f"{self.base.name}[{self.count}]"
        return self.base.name

    def default(self) -> object:
        kind = self.base.kind
        if kind == "str":
            return ""
        if kind == "bytes":
            return b""
        zero = {"int": 0, "float": 0.0, "bool": False}[kind]
        return [zero] * self.count if self.count else zero


def round_up8(n: int) -> int:
    return (n + 7) & ~7


#: parsed specs (VarType is immutable); parsing runs per pushed variable and per reply
_PARSED: dict[str, VarType] = {}
_PARSED_MAX = 4096


def parse_type(spec: str | VarType) -> VarType:
    """Parse ``"i64"``, ``"f64[8]"``, ``"str[32]"``; raises InvalidRequest on nonsense."""
    if isinstance(spec, VarType):
        return spec
    if type(spec) is str:
        parsed = _PARSED.get(spec)
        if parsed is None:
            parsed = _parse(spec)
            if len(_PARSED) < _PARSED_MAX:  # specs may come from peers: stay bounded
                _PARSED[spec] = parsed
        return parsed
    return _parse(spec)


def _parse(spec: object) -> VarType:
    if not isinstance(spec, str):
        raise InvalidRequest(f"variable type must be a string like 'i64' or 'str[32]', got {spec!r}")
    m = _SPEC.match(spec.lower())
    if not m or m.group(1) not in BASE_TYPES:
        names = ", ".join(BASE_TYPES)
        raise InvalidRequest(f"unknown variable type {spec!r}; use one of {names}, optionally with [n]")
    base = BASE_TYPES[m.group(1)]
    n = int(m.group(2)) if m.group(2) is not None else None
    if base.kind in ("str", "bytes"):
        if n is None or n < 1:
            raise InvalidRequest(f"{base.name} needs a capacity in bytes, e.g. '{base.name}[32]'")
        if n > MAX_ITEMS:
            raise InvalidRequest(f"{base.name} capacity {n} exceeds {MAX_ITEMS}")
        return VarType(base, 0, n)
    if n is not None:
        if n < 1 or n > MAX_ITEMS:
            raise InvalidRequest(f"array length must be 1..{MAX_ITEMS}, got {n}")
        if base.kind == "bool":
            raise InvalidRequest("arrays of bool are not supported; use u8[n]")
        return VarType(base, n, 0)
    return VarType(base)


def type_from_code(code: int, count: int, capacity: int) -> VarType:
    base = BY_CODE.get(code)
    if base is None:
        raise KeyError(code)
    return VarType(base, count, capacity)


_INT_RANGES = {
    "b": (-(1 << 7), (1 << 7) - 1),
    "h": (-(1 << 15), (1 << 15) - 1),
    "i": (-(1 << 31), (1 << 31) - 1),
    "q": (-(1 << 63), (1 << 63) - 1),
    "B": (0, (1 << 8) - 1),
    "H": (0, (1 << 16) - 1),
    "I": (0, (1 << 32) - 1),
    "Q": (0, (1 << 64) - 1),
}


def check_number(vt: VarType, name: str, value: object) -> object:
    """Validate one number for ``vt``'s base type; returns the value to store."""
    base = vt.base
    if base.kind == "int":
        if not isinstance(value, int):
            raise InvalidValue(f"{name}: {base.name} needs an int, got {type(value).__name__}")
        lo, hi = _INT_RANGES[base.fmt]
        if not lo <= value <= hi:
            raise InvalidValue(f"{name}: {value} does not fit {base.name} [{lo}, {hi}]")
        return value
    if base.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidValue(f"{name}: {base.name} needs a float, got {type(value).__name__}")
        value = float(value)
        if base.fmt == "f" and math.isfinite(value) and abs(value) > F32_MAX:
            raise InvalidValue(f"{name}: {value} does not fit f32")
        return value
    if base.kind == "bool":
        if not isinstance(value, bool):
            raise InvalidValue(f"{name}: bool needs True or False, got {value!r}")
        return value
    raise InvalidValue(f"{name}: not a number type")


def check_f32(value: object) -> None:
    """Hot-path extra check for f32 scalars: memoryview silently turns overflow into inf."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) > F32_MAX:
        raise InvalidValue(f"{value} does not fit f32")
    if isinstance(value, bool):
        raise InvalidValue("f32 needs a float, got bool")


def check_bool(value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidValue(f"bool needs True or False, got {value!r}")


def check_float(value: object) -> None:
    if isinstance(value, bool):
        raise InvalidValue("float needs a float, got bool")


def encode_value(vt: VarType, name: str, value: object) -> bytes:
    """Full encoding of a value into exactly ``vt.size`` bytes (checks everything)."""
    base = vt.base
    if base.kind == "str":
        if not isinstance(value, str):
            raise InvalidValue(f"{name}: {vt.spec} needs a str, got {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > vt.capacity:
            raise InvalidValue(f"{name}: {len(raw)} UTF-8 bytes do not fit {vt.spec}")
        return struct.pack("<I", len(raw)) + raw.ljust(vt.capacity, b"\0")
    if base.kind == "bytes":
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidValue(f"{name}: {vt.spec} needs bytes, got {type(value).__name__}")
        raw = bytes(value)
        if len(raw) > vt.capacity:
            raise InvalidValue(f"{name}: {len(raw)} bytes do not fit {vt.spec}")
        return struct.pack("<I", len(raw)) + raw.ljust(vt.capacity, b"\0")
    if vt.count:
        if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
            raise InvalidValue(f"{name}: {vt.spec} needs a sequence of {vt.count} numbers")
        items = list(value)  # type: ignore[call-overload]
        if len(items) != vt.count:
            raise InvalidValue(f"{name}: {vt.spec} needs exactly {vt.count} items, got {len(items)}")
        checked = [check_number(vt, name, v) for v in items]
        return struct.pack(f"<{vt.count}{base.fmt}", *checked)
    return struct.pack(f"<{base.fmt}", check_number(vt, name, value))


def decode_value(vt: VarType, raw: bytes | memoryview) -> object:
    base = vt.base
    if base.kind in ("str", "bytes"):
        (n,) = struct.unpack_from("<I", raw, 0)
        if n > vt.capacity:
            n = vt.capacity  # only a foreign writer can produce this; never read past the slot
        data = bytes(raw[LENGTH_PREFIX : LENGTH_PREFIX + n])
        return data.decode("utf-8", errors="replace") if base.kind == "str" else data
    if vt.count:
        return list(struct.unpack_from(f"<{vt.count}{base.fmt}", raw, 0))
    return struct.unpack_from(f"<{base.fmt}", raw, 0)[0]


def make_decoder(vt: VarType):
    """A fast decoder for ``vt`` (precompiled struct; used on the read hot path)."""
    base = vt.base
    if base.kind in ("str", "bytes"):
        cap = vt.capacity
        is_str = base.kind == "str"

        def decode_text(raw: bytes) -> object:
            n = int.from_bytes(raw[:LENGTH_PREFIX], "little")
            data = raw[LENGTH_PREFIX : LENGTH_PREFIX + min(n, cap)]
            return data.decode("utf-8", errors="replace") if is_str else data

        return decode_text
    if vt.count:
        unpack = struct.Struct(f"<{vt.count}{base.fmt}").unpack

        def decode_array(raw: bytes) -> object:
            return list(unpack(raw))

        return decode_array
    unpack1 = struct.Struct(f"<{base.fmt}").unpack
    return lambda raw: unpack1(raw)[0]
