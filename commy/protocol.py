"""The wire protocol: JSON text messages, one per transport message (see docs/protocol.md).

Envelope: ``{"v": 1, "id": <int>, "type": "<MessageName>", ...fields}``. Requests carry an
``id`` that every response (including ``Error``) echoes; pushes have no ``id``. Bytes
travel as base64 strings. Every decoded message is validated against `SCHEMAS` (field
names, field types, size), and decoding raises nothing but `InvalidRequest` / `LimitExceeded`,
whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterator
from typing import Any

from commy.errors import CommyError, InvalidRequest, InvalidValue, LimitExceeded
from commy.vartypes import VarType

try:  # orjson is a core dependency; json keeps a stripped-down install working
    import orjson

    def _dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode("utf-8")

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is installed with commy
    import json

    def _dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    _loads = json.loads

PROTOCOL_VERSION = 1
#: Largest message any peer accepts by default (the transports' default limit too).
MAX_MESSAGE_SIZE = 1 << 20
#: Payloads are split so one message stays at or under this size.
CHUNK_LIMIT = 256 * 1024
#: Raw bytes per snapshot chunk: base64 makes 4/3 of it, the envelope needs a little room.
CHUNK_RAW = (CHUNK_LIMIT - 4096) // 4 * 3
MAX_ID = (1 << 53) - 1  # fits a JavaScript number, so any client can echo it
MAX_STRING = 1 << 20
MAX_LIST = 4096
MAX_DEPTH = 4

# ---------------------------------------------------------------- field validators
# A validator takes the decoded value and returns True when it is acceptable.


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _uint(v: object) -> bool:
    return _is_int(v) and 0 <= v < (1 << 64)  # type: ignore[operator]


def _str(v: object) -> bool:
    return isinstance(v, str) and len(v) <= MAX_STRING


def _name(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 256


def _short_str(v: object) -> bool:
    return isinstance(v, str) and len(v) <= 1024


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bool(v: object) -> bool:
    return isinstance(v, bool)


def _b64(v: object) -> bool:
    return isinstance(v, str) and len(v) % 4 == 0 and len(v) <= MAX_STRING * 2


def _list_of(item: Callable[[object], bool]) -> Callable[[object], bool]:
    def check(v: object) -> bool:
        return isinstance(v, list) and len(v) <= MAX_LIST and all(item(x) for x in v)

    return check


def _json_value(v: object, depth: int = 0) -> bool:
    """A variable value: scalar, or a list of scalars (arrays); nothing deeper."""
    if v is None or isinstance(v, bool | str):
        return not isinstance(v, str) or len(v) <= MAX_STRING * 2
    if isinstance(v, int):
        return -(1 << 63) <= v < (1 << 64)
    if isinstance(v, float):
        return True
    if isinstance(v, list) and depth == 0:
        return len(v) <= (1 << 24) and all(_json_value(x, 1) for x in v)
    return False


def _str_dict(v: object) -> bool:
    return (
        isinstance(v, dict)
        and len(v) <= 64
        and all(isinstance(k, str) and isinstance(x, str | int | bool) for k, x in v.items())
    )


def _details(v: object) -> bool:
    return isinstance(v, dict) and len(v) <= 64 and all(isinstance(k, str) for k in v)


def _record(fields: dict[str, tuple[Callable[[object], bool], bool]]) -> Callable[[object], bool]:
    _REQUIRED_COUNT[id(fields)] = _count_required(fields)

    def check(v: object) -> bool:
        return isinstance(v, dict) and _fields_ok(v, fields) is None

    return check


#: required-field count of each field table (keyed by id), so a complete message skips
#: the search for the missing field
_REQUIRED_COUNT: dict[int, int] = {}


def _count_required(fields: dict[str, tuple[Callable[[object], bool], bool]]) -> int:
    return sum(1 for _check, req in fields.values() if req)


def _fields_ok(
    msg: dict, fields: dict[str, tuple[Callable[[object], bool], bool]], skip: frozenset[str] = frozenset()
) -> str | None:
    """None when ``msg`` (minus the ``skip`` keys) matches ``fields``; else the reason."""
    required = 0
    for key, value in msg.items():
        spec = fields.get(key)
        if spec is None:
            if key in skip:
                continue
            return f"unknown field {key!r}"
        check, req = spec
        # Inline the two commonest checks: a call per field is most of decode's cost.
        if check is _name:
            if not (type(value) is str and 0 < len(value) <= 256):
                return f"bad value for field {key!r}"
        elif check is _uint:
            if not (type(value) is int and 0 <= value < 18446744073709551616):
                return f"bad value for field {key!r}"
        elif not check(value):
            return f"bad value for field {key!r}"
        if req:
            required += 1
    if required != _REQUIRED_COUNT.get(id(fields), -1):
        for key, (_check, req) in fields.items():
            if req and key not in msg:
                return f"missing field {key!r}"
    return None


R = True  # required
O = False  # optional  # noqa: E741

_VAR_INFO = _record(
    {
        "name": (_name, R),
        "type": (_name, R),
        "offset": (_uint, R),
        "size": (_uint, R),
        "version": (_uint, R),
        "persistent": (_bool, R),
    }
)
_VAR_UPDATE = _record({"name": (_name, R), "version": (_uint, R), "value": (_json_value, R)})
_REPORTED = _list_of(_name)
_SERVICE_SUMMARY = _record(
    {"name": (_name, R), "service_id": (_str, R), "ephemeral": (_bool, R)}
)

_GRANT = _record(
    {"principal": (_name, R), "service": (_name, R), "permission": (_name, R), "source": (_name, R)}
)
_KEY_INFO = _record(
    {
        "key_id": (_name, R),
        "tenant": (_name, O),
        "principal": (_name, R),
        "created": (_number, R),
        "revoked": (_bool, R),
        "description": (_short_str, R),
    }
)

#: The optional ``tenant`` field on service-scoped requests defaults to the session's tenant.
_SVC = {"tenant": (_name, O), "service": (_name, R)}

# Request messages (client → server) and their fields.
REQUESTS: dict[str, dict[str, tuple[Callable[[object], bool], bool]]] = {
    "Authenticate": {"tenant": (_name, R), "api_key": (_str, O), "credentials": (_str_dict, O)},
    "CreateTenant": {"name": (_name, R)},
    "DeleteTenant": {"name": (_name, R)},
    "ListTenants": {},
    "CreateService": {**_SVC, "ephemeral": (_bool, O)},
    "GetService": dict(_SVC),
    "DeleteService": dict(_SVC),
    "ListServices": {"tenant": (_name, O)},
    "AllocateVariable": {
        **_SVC,
        "name": (_name, R),
        "var_type": (_name, R),
        "persistent": (_bool, O),
        "initial": (_json_value, O),
    },
    "DeallocateVariable": {**_SVC, "name": (_name, R)},
    "ReadVariable": {**_SVC, "name": (_name, R)},
    "WriteVariable": {**_SVC, "name": (_name, R), "value": (_json_value, R)},
    "ReadService": dict(_SVC),
    # since: resume after this change sequence number (see docs/protocol.md, Resume)
    "Subscribe": {**_SVC, "since": (_uint, O)},
    "Unsubscribe": dict(_SVC),
    "GetServiceFilePath": dict(_SVC),
    "ReportVariableChanges": {**_SVC, "names": (_REPORTED, R)},
    "Heartbeat": {},
    "Disconnect": {},
    # Session and tenant administration (docs/security.md).
    "Logout": {},
    "Grant": {
        "tenant": (_name, O),
        "principal": (_name, R),
        "service": (_name, O),
        "permission": (_name, O),
        "role": (_name, O),
    },
    "Revoke": {"tenant": (_name, O), "principal": (_name, R), "service": (_name, O), "role": (_name, O)},
    "ListGrants": {"tenant": (_name, O), "principal": (_name, O)},
    "CreateApiKey": {
        "tenant": (_name, O),
        "principal": (_name, R),
        "roles": (_list_of(_name), O),
        "grants": (_str_dict, O),
        "description": (_short_str, O),
        "server_wide": (_bool, O),
    },
    "RevokeApiKey": {"key_id": (_name, R)},
    "ListApiKeys": {"tenant": (_name, O)},
}

# Responses (server → client, echo the request id) and pushes (no id).
RESPONSES: dict[str, dict[str, tuple[Callable[[object], bool], bool]]] = {
    "Authenticated": {"tenant": (_name, R), "principal": (_name, R), "roles": (_list_of(_name), R)},
    "Ok": {},
    "TenantInfo": {"name": (_name, R)},
    "TenantList": {"tenants": (_list_of(_name), R)},
    "ServiceInfo": {
        "tenant": (_name, R),
        "service": (_name, R),
        "service_id": (_str, R),
        "ephemeral": (_bool, R),
        "seq": (_uint, R),
        "layout": (_uint, R),
        "variables": (_list_of(_VAR_INFO), R),
    },
    "ServiceList": {"tenant": (_name, R), "services": (_list_of(_SERVICE_SUMMARY), R)},
    "VariableInfo": {"tenant": (_name, R), "service": (_name, R), "variable": (_VAR_INFO, R)},
    "VariableValue": {
        "tenant": (_name, R),
        "service": (_name, R),
        "name": (_name, R),
        "var_type": (_name, R),
        "version": (_uint, R),
        "seq": (_uint, R),
        "value": (_json_value, R),
    },
    "Written": {
        "tenant": (_name, R),
        "service": (_name, R),
        "name": (_name, R),
        "version": (_uint, R),
        "seq": (_uint, R),
    },
    "ServiceSnapshot": {
        "tenant": (_name, R),
        "service": (_name, R),
        "chunk": (_uint, R),
        "chunks": (_uint, R),
        "size": (_uint, R),
        "data": (_b64, R),
    },
    "Subscribed": {"tenant": (_name, R), "service": (_name, R), "seq": (_uint, R), "resume": (_name, O)},
    "ServiceFilePath": {
        "tenant": (_name, R),
        "service": (_name, R),
        "service_id": (_str, R),
        "path": (_str, R),
        "size": (_uint, R),
        "locality_token": (_b64, R),
        "permission": (_name, R),
        "readonly": (_bool, O),
    },
    "VariablesUpdated": {
        "tenant": (_name, R),
        "service": (_name, R),
        "seq": (_uint, R),
        "layout": (_uint, R),
        "variables": (_list_of(_VAR_UPDATE), R),
    },
    "Heartbeat": {},
    "GrantList": {"tenant": (_name, R), "grants": (_list_of(_GRANT), R)},
    "ApiKeyCreated": {"key": (_str, R), "key_id": (_name, R), "tenant": (_name, O), "principal": (_name, R)},
    "ApiKeyList": {"keys": (_list_of(_KEY_INFO), R)},
    # push: the server ended a subscription (revoked permission or credentials, logout)
    "SubscriptionClosed": {"tenant": (_name, R), "service": (_name, R), "code": (_name, R), "message": (_str, R)},
    "Error": {"code": (_name, R), "message": (_str, R), "details": (_details, O)},
}

for _table in (*REQUESTS.values(), *RESPONSES.values()):
    _REQUIRED_COUNT[id(_table)] = _count_required(_table)

PUSHES = frozenset({"VariablesUpdated", "SubscriptionClosed"})
MESSAGE_TYPES = frozenset(REQUESTS) | frozenset(RESPONSES)
_ENVELOPE = frozenset({"type", "id"})

# ---------------------------------------------------------------- encode / decode


def encode(msg: dict[str, Any]) -> str:
    """One message as JSON text (``v`` is added); `LimitExceeded` if it is too big."""
    out = {"v": PROTOCOL_VERSION, **msg}
    try:
        text = _dumps(out)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"message cannot be encoded: {exc}") from None
    return text


def decode(
    text: str | bytes,
    *,
    max_size: int = MAX_MESSAGE_SIZE,
    direction: str = "request",
) -> dict[str, Any]:
    """Parse and validate one message; raises only `InvalidRequest` or `LimitExceeded`.

    ``direction`` is ``"request"`` (what a server accepts) or ``"response"`` (what a client
    accepts: responses and pushes).
    """
    try:
        return _decode(text, max_size, direction)
    except CommyError:
        raise
    except Exception as exc:  # e.g. RecursionError from the json fallback: never leak it
        raise InvalidRequest(f"malformed message: {type(exc).__name__}") from None


def _decode(text: str | bytes, max_size: int, direction: str) -> dict[str, Any]:
    if not isinstance(text, str | bytes | bytearray):
        raise InvalidRequest("a message must be text")
    if len(text) > max_size:
        raise LimitExceeded(f"message of {len(text)} bytes exceeds the limit of {max_size}")
    try:
        msg = _loads(text)
    except (ValueError, TypeError):
        raise InvalidRequest("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise InvalidRequest("a message must be a JSON object")
    v = msg.pop("v", None)
    if not _is_int(v):
        raise InvalidRequest("missing or bad protocol version 'v'")
    if v != PROTOCOL_VERSION:
        raise InvalidRequest(f"unsupported protocol version {v} (this peer speaks {PROTOCOL_VERSION})")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest("missing or bad message 'type'")
    table = REQUESTS if direction == "request" else RESPONSES
    fields = table.get(kind)
    if fields is None:
        raise InvalidRequest(f"unknown message type {kind[:64]!r}")
    mid = msg.get("id")
    if mid is not None and not (_is_int(mid) and 0 <= mid <= MAX_ID):
        raise InvalidRequest("bad message 'id'")
    if direction == "request" and mid is None:
        raise InvalidRequest(f"{kind} needs an 'id'")
    problem = _fields_ok(msg, fields, _ENVELOPE)
    if problem is not None:
        raise InvalidRequest(f"{kind}: {problem}")
    return msg


def peek_id(text: str | bytes) -> int | None:
    """The request id of a message that failed validation, if one can be found (never raises)."""
    try:
        if len(text) > MAX_MESSAGE_SIZE * 16:
            return None
        msg = _loads(text)
        mid = msg.get("id") if isinstance(msg, dict) else None
        return mid if _is_int(mid) and 0 <= mid <= MAX_ID else None
    except Exception:
        return None


def error_message(mid: int | None, exc: CommyError) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Error", "code": exc.code, "message": exc.message[:4096]}
    if mid is not None:
        out["id"] = mid
    if exc.details:
        try:
            _dumps(exc.details)
            out["details"] = exc.details
        except (TypeError, ValueError):
            pass
    return out


# ---------------------------------------------------------------- bytes and chunks


def b64encode(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("bad base64 data") from None


def chunks(data: bytes | memoryview, size: int = CHUNK_RAW) -> Iterator[tuple[int, int, bytes]]:
    """``(index, count, piece)`` for each piece; an empty payload is one empty chunk."""
    mv = memoryview(data)
    count = max(1, -(-len(mv) // size))
    for i in range(count):
        yield i, count, bytes(mv[i * size : (i + 1) * size])


# ---------------------------------------------------------------- variable values

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_out(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def _float_in(x: object, name: str) -> float:
    if isinstance(x, str):
        if x in _NONFINITE:
            return _NONFINITE[x]
        raise InvalidValue(f"{name}: {x!r} is not a number")
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise InvalidValue(f"{name}: needs a number, got {type(x).__name__}")
    return float(x)


def value_to_wire(vt: VarType, value: Any) -> Any:
    """A variable value as JSON: bytes → base64, non-finite floats → "NaN"/"Infinity"."""
    kind = vt.base.kind
    if kind == "bytes":
        return b64encode(value)
    if kind == "float":
        if vt.count:
            return [_float_out(x) for x in value]
        return _float_out(value)
    return value


def value_from_wire(vt: VarType, name: str, wire: Any) -> Any:
    """The inverse of `value_to_wire`; `InvalidValue` if it cannot be this type."""
    kind = vt.base.kind
    if kind == "bytes":
        if not isinstance(wire, str):
            raise InvalidValue(f"{name}: {vt.spec} travels as a base64 string")
        try:
            return base64.b64decode(wire, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue(f"{name}: bad base64 data") from None
    if kind == "float":
        if vt.count:
            if not isinstance(wire, list):
                raise InvalidValue(f"{name}: {vt.spec} needs a list of numbers")
            return [_float_in(x, name) for x in wire]
        return _float_in(wire, name)
    return wire
