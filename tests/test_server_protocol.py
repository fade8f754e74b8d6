"""The wire protocol: strict decoding, chunking, value codec, and a fuzzing property."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commy import protocol
from commy.errors import CommyError, InvalidRequest, LimitExceeded
from commy.vartypes import parse_type


def test_roundtrip_request():
    text = protocol.encode({"type": "GetService", "id": 7, "service": "svc"})
    msg = protocol.decode(text)
    assert msg == {"type": "GetService", "id": 7, "service": "svc"}
    assert json.loads(text)["v"] == protocol.PROTOCOL_VERSION


@pytest.mark.parametrize(
    "doc, why",
    [
        ({"v": 1, "id": 1, "type": "Nope"}, "unknown message type"),
        ({"v": 2, "id": 1, "type": "Heartbeat"}, "unsupported protocol version"),
        ({"id": 1, "type": "Heartbeat"}, "protocol version"),
        ({"v": 1, "type": "Heartbeat"}, "needs an 'id'"),
        ({"v": 1, "id": -1, "type": "Heartbeat"}, "bad message 'id'"),
        ({"v": 1, "id": True, "type": "Heartbeat"}, "bad message 'id'"),
        ({"v": 1, "id": 1, "type": "GetService"}, "missing field 'service'"),
        ({"v": 1, "id": 1, "type": "GetService", "service": 3}, "bad value for field 'service'"),
        ({"v": 1, "id": 1, "type": "GetService", "service": "s", "x": 1}, "unknown field 'x'"),
        ({"v": 1, "id": 1, "type": "CreateService", "service": "s", "ephemeral": 1}, "ephemeral"),
        ({"v": 1, "id": 1, "type": "WriteVariable", "service": "s", "name": "n", "value": {"a": 1}}, "value"),
        ({"v": 1, "id": 1, "type": "WriteVariable", "service": "s", "name": "n", "value": [[1]]}, "value"),
        ({"v": 1, "id": 1, "type": "ReportVariableChanges", "service": "s", "names": [1]}, "names"),
        ({"v": 1, "id": 1, "type": "Authenticate", "tenant": "t", "credentials": {"a": [1]}}, "credentials"),
    ],
)
def test_decode_rejects(doc, why):
    with pytest.raises(InvalidRequest, match=why):
        protocol.decode(json.dumps(doc))


def test_decode_size_limit():
    text = protocol.encode({"type": "Heartbeat", "id": 1, "pad": "x" * 2000})
    with pytest.raises(LimitExceeded):
        protocol.decode(text, max_size=1000)


def test_response_direction_is_separate():
    text = protocol.encode({"type": "VariablesUpdated", "tenant": "t", "service": "s", "seq": 1,
                            "layout": 1, "variables": [{"name": "x", "version": 2, "value": 3}]})
    assert protocol.decode(text, direction="response")["seq"] == 1
    with pytest.raises(InvalidRequest):
        protocol.decode(text)  # a client cannot send a push


def test_chunks_stay_under_the_limit():
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    parts = list(protocol.chunks(data))
    assert len(parts) > 1
    assert b"".join(p for _i, _n, p in parts) == data
    for i, n, piece in parts:
        text = protocol.encode({"type": "ServiceSnapshot", "id": 2**53 - 1, "tenant": "t" * 64,
                                "service": "s" * 64, "chunk": i, "chunks": n, "size": len(data),
                                "data": protocol.b64encode(piece)})
        assert len(text) <= protocol.CHUNK_LIMIT
    assert list(protocol.chunks(b"")) == [(0, 1, b"")]


@pytest.mark.parametrize(
    "spec, value",
    [("f64", math.inf), ("f64", -math.inf), ("f32[3]", [1.0, math.inf, -2.5]), ("bytes[8]", b"\0\xff"),
     ("str[8]", "héllo"), ("i64", -5), ("bool", True), ("u64", 2**64 - 1)],
)
def test_value_codec_roundtrip(spec, value):
    vt = parse_type(spec)
    wire = protocol.value_to_wire(vt, value)
    back = protocol.value_from_wire(vt, "v", json.loads(json.dumps(wire)))
    assert back == value


def test_nan_travels():
    vt = parse_type("f64")
    assert math.isnan(protocol.value_from_wire(vt, "v", protocol.value_to_wire(vt, math.nan)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["v", "id", "type", "tenant", "service", "name", "value", "names", "api_key", "credentials",
     "ephemeral", "var_type", "initial", "persistent", "x"]
)
type_names = st.sampled_from(sorted(protocol.MESSAGE_TYPES) + ["", "Bogus"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_text_never_escapes(text):
    for direction in ("request", "response"):
        try:
            protocol.decode(text, direction=direction)
        except CommyError as exc:
            assert exc.code in ("INVALID_REQUEST", "LIMIT_EXCEEDED")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8), type_names, st.booleans())
def test_random_messages_never_escape(doc, kind, with_envelope):
    if with_envelope:
        doc = {**doc, "v": 1, "type": kind}
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    for direction in ("request", "response"):
        try:
            msg = protocol.decode(text, direction=direction)
        except CommyError as exc:
            assert exc.code in ("INVALID_REQUEST", "LIMIT_EXCEEDED")
        else:
            assert msg["type"] in protocol.MESSAGE_TYPES


def test_deep_nesting_is_rejected():
    text = '{"v":1,"id":1,"type":"WriteVariable","service":"s","name":"n","value":' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(InvalidRequest):
        protocol.decode(text)
    assert protocol.peek_id("[" * 100000) is None


def test_every_error_code_round_trips_to_its_class():
    from commy.errors import error_classes, error_for_code

    for code, cls in error_classes().items():
        text = protocol.encode(protocol.error_message(3, cls("boom")))
        msg = protocol.decode(text, direction="response")
        err = error_for_code(msg["code"], msg["message"])
        assert type(err) is cls and err.code == code and msg["id"] == 3
