"""The wire code alone: strings, tuples and tags, framing of partial input, malformed answers."""

from __future__ import annotations

from uuid import UUID

import cbor2
import pytest

from coordinate import _wire
from coordinate.exceptions import ProtocolError, RpcError

DEFAULT = _wire.WireOptions()
RAW = _wire.WireOptions(send_str_as_bytes=False, decode_utf8_bytes=False)


def round_trip(value: object, options: _wire.WireOptions = DEFAULT) -> object:
    encoded = cbor2.dumps(_wire._outgoing(value, options))
    assert _wire.item_length(encoded) == len(encoded)
    return _wire._Decoder(encoded, options).whole()


@pytest.mark.parametrize(
    "value", [0, -1, 2**63, -(2**40), 1.5, True, False, None, "text", b"\xff\x00", [1, [2, 3]], {"a": [1]}, (1, "x")])
def test_round_trips(value: object) -> None:
    assert round_trip(value) == value


def test_str_goes_as_a_byte_string_and_comes_back_as_str() -> None:
    assert cbor2.dumps(_wire._outgoing("k", DEFAULT)) == b"\x41k"
    assert cbor2.dumps(_wire._outgoing("k", RAW)) == b"\x61k"
    assert round_trip({"k": "v"}, RAW) == {"k": "v"}
    assert _wire._Decoder(b"\x41k", RAW).whole() == b"k"
    uuid = UUID("12345678-1234-5678-1234-567812345678")
    assert round_trip(uuid) == uuid


def test_request_and_response_envelopes() -> None:
    request = _wire.encode_request(7, "get_work", ["w", {}], DEFAULT)
    assert request[:2] == b"\xd8\x18"
    inner = cbor2.loads(cbor2.loads(request).value)
    assert inner == {b"id": 7, b"method": b"get_work", b"params": [b"w", {}]}
    answer = cbor2.dumps(cbor2.CBORTag(24, cbor2.dumps({b"id": 7, b"result": cbor2.CBORTag(128, [True, None])})))
    assert _wire.decode_response(answer, 7, DEFAULT) == (True, None)
    error = cbor2.dumps({"id": 8, "error": {"message": "no such method"}})
    with pytest.raises(RpcError, match="no such method"):
        _wire.decode_response(error, 8, DEFAULT)
    with pytest.raises(ProtocolError):
        _wire.decode_response(cbor2.dumps({"id": 9, "result": 1}), 8, DEFAULT)
    with pytest.raises(ProtocolError):
        _wire.decode_response(cbor2.dumps([1]), 8, DEFAULT)


def test_framing_waits_for_a_whole_item() -> None:
    message = cbor2.dumps(cbor2.CBORTag(24, cbor2.dumps({"id": 1, "result": [1, 2, {"k": "v" * 300}]})))
    frames = _wire.FrameBuffer()
    for index in range(len(message) - 1):
        frames.feed(message[index : index + 1])
        assert frames.take() is None
    frames.feed(message[-1:] + message[:3])
    assert frames.take() == message
    assert frames.take() is None
    assert _wire.item_length(b"\x9f\x01") is None and _wire.item_length(b"\x9f\x01\xff") == 3


@pytest.mark.parametrize("malformed", [b"\xff", b"\x9f\x01", b"\x1c", b"\x01\x02", b"\xd8\x18\x01"])
def test_malformed_answers_are_protocol_errors(malformed: bytes) -> None:
    with pytest.raises(ProtocolError):
        _wire._Decoder(malformed, DEFAULT).whole()
