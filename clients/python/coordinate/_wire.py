"""The CBOR-RPC wire format, shared by the blocking and the asyncio clients.

A request is the CBOR map ``{"id": n, "method": name, "params": [...]}`` wrapped in tag 24 (encoded CBOR), as
coordinate 0.1.5 sends it; a response is one CBOR item, normally also wrapped in tag 24. Tuples travel as tag
128, UUIDs as tag 37.

Strings: the Python 2 client sent ``str`` as CBOR byte strings, so the daemon holds the names, keys and data those
clients wrote as byte strings. By default this client does the same with Python 3 ``str`` (UTF-8 encoded), so
the units old and new clients create are the same units; and it returns every byte string that is valid UTF-8 as
``str``. Both can be turned off (``send_str_as_bytes``, ``decode_utf8_bytes``).
"""

from __future__ import annotations

import struct
from typing import Any, Mapping, Optional
from uuid import UUID

import cbor2

from .exceptions import ProtocolError, RpcError

#: Encoded CBOR (RFC 8949 §3.4.5.1).
TAG_ENCODED_CBOR = 24
#: A UUID.
TAG_UUID = 37
#: A Python tuple (Diffeo's private tag).
TAG_TUPLE = 128


class WireOptions:
    """How Python strings map to CBOR strings."""

    __slots__ = ("send_str_as_bytes", "decode_utf8_bytes")

    def __init__(self, send_str_as_bytes: bool = True, decode_utf8_bytes: bool = True) -> None:
        self.send_str_as_bytes = send_str_as_bytes
        self.decode_utf8_bytes = decode_utf8_bytes

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "WireOptions":
        return cls(
            send_str_as_bytes=bool(config.get("send_str_as_bytes", True)),
            decode_utf8_bytes=bool(config.get("decode_utf8_bytes", True)),
        )


def _outgoing(value: Any, options: WireOptions) -> Any:
    """`value` as cbor2 should encode it."""
    if isinstance(value, str):
        return value.encode("utf-8") if options.send_str_as_bytes else value
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, bytes, UUID)):
        return value
    if isinstance(value, tuple):
        return cbor2.CBORTag(TAG_TUPLE, [_outgoing(item, options) for item in value])
    if isinstance(value, Mapping):
        return {_outgoing(key, options): _outgoing(item, options) for key, item in value.items()}
    if isinstance(value, (list, set, frozenset)):
        return [_outgoing(item, options) for item in value]
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _text_or_bytes(value: bytes, options: WireOptions) -> Any:
    if options.decode_utf8_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


class _Decoder:
    """A CBOR decoder for responses: arrays become lists, tag 128 tuples, tag 24 the item it encodes, tag 37 a
    UUID, byte strings ``str`` when they are UTF-8 (unless turned off). Written here rather than taken from
    cbor2, whose decoders turn the content of tags into tuples and frozen mappings in some releases and not in
    others."""

    def __init__(self, data: bytes, options: WireOptions) -> None:
        self.data = data
        self.position = 0
        self.options = options

    def _head(self) -> tuple[int, int, Optional[int]]:
        head = read_head(self.data, self.position)
        if head is None:
            raise ProtocolError("truncated CBOR")
        major, info, argument, self.position = head
        return major, info, argument

    def _chunks(self, major: int, length: Optional[int]) -> bytes:
        if length is not None:
            if self.position + length > len(self.data):
                raise ProtocolError("truncated CBOR")
            chunk = self.data[self.position : self.position + length]
            self.position += length
            return chunk
        parts = []
        while self._peek_break() is False:
            part_major, _, part_length = self._head()
            if part_major != major or part_length is None:
                raise ProtocolError("malformed indefinite-length string")
            parts.append(self._chunks(major, part_length))
        return b"".join(parts)

    def _peek_break(self) -> bool:
        if self.position >= len(self.data):
            raise ProtocolError("truncated CBOR")
        if self.data[self.position] == 0xFF:
            self.position += 1
            return True
        return False

    def item(self, depth: int = 0) -> Any:
        if depth > 1000:
            raise ProtocolError("CBOR nested too deeply")
        major, info, argument = self._head()
        if major == 0:
            return argument
        if major == 1:
            assert argument is not None
            return -1 - argument
        if major == 2:
            return _text_or_bytes(self._chunks(2, argument), self.options)
        if major == 3:
            return self._chunks(3, argument).decode("utf-8", errors="surrogateescape")
        if major == 4:
            items: list[Any] = []
            while (len(items) < argument) if argument is not None else not self._peek_break():
                items.append(self.item(depth + 1))
            return items
        if major == 5:
            mapping: dict[Any, Any] = {}
            count = 0
            while (count < argument) if argument is not None else not self._peek_break():
                key = self.item(depth + 1)
                if isinstance(key, list):
                    key = tuple(key)
                mapping[key] = self.item(depth + 1)
                count += 1
            return mapping
        if major == 6:
            if argument == TAG_ENCODED_CBOR:
                major_inner, _, length = self._head()
                if major_inner != 2:
                    raise ProtocolError("tag 24 must enclose a byte string")
                return _Decoder(self._chunks(2, length), self.options).whole(depth + 1)
            content = self.item(depth + 1)
            if argument == TAG_TUPLE and isinstance(content, list):
                return tuple(content)
            if argument == TAG_UUID and isinstance(content, (bytes, str)):
                raw = content if isinstance(content, bytes) else content.encode("utf-8", errors="surrogateescape")
                return UUID(bytes=raw)
            return cbor2.CBORTag(argument or 0, content)
        # Major type 7.
        if argument is None:
            raise ProtocolError("unexpected CBOR break")
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            assert argument is not None
            return struct.unpack(">e", argument.to_bytes(2, "big"))[0]
        if info == 26:
            assert argument is not None
            return struct.unpack(">f", argument.to_bytes(4, "big"))[0]
        if info == 27:
            assert argument is not None
            return struct.unpack(">d", argument.to_bytes(8, "big"))[0]
        return cbor2.CBORSimpleValue(argument)

    def whole(self, depth: int = 0) -> Any:
        value = self.item(depth)
        if self.position != len(self.data):
            raise ProtocolError("trailing bytes after a CBOR item")
        return value


def encode_request(request_id: int, method: str, params: list[Any], options: WireOptions) -> bytes:
    """One request, enveloped in tag 24 as coordinate 0.1.5 sends it."""
    message = {"id": request_id, "method": method, "params": params}
    inner = cbor2.dumps(_outgoing(message, options))
    return cbor2.dumps(cbor2.CBORTag(TAG_ENCODED_CBOR, inner))


def decode_response(item: bytes, request_id: int, options: WireOptions) -> Any:
    """The result of the response `item` to request `request_id`; raises :class:`RpcError` for an error."""
    response = _Decoder(item, options).whole()
    if not isinstance(response, dict):
        raise ProtocolError("response is not a map: %r" % (response,))

    def field(mapping: dict[Any, Any], name: str) -> Any:
        # The envelope's keys come as the request sent them (byte strings by default), whatever the options.
        return mapping[name] if name in mapping else mapping.get(name.encode("ascii"))

    if field(response, "id") != request_id:
        raise ProtocolError("response id %r does not answer request %d" % (field(response, "id"), request_id))
    error = field(response, "error")
    if error is None and ("result" in response or b"result" in response):
        return field(response, "result")
    message = field(error, "message") if isinstance(error, dict) else None
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    raise RpcError(message or repr(response))


def read_head(buffer: bytes | bytearray | memoryview, at: int) -> Optional[tuple[int, int, Optional[int], int]]:
    """The head of the CBOR item at `at`: (major type, additional info, argument — None for an indefinite length
    or a break —, offset past the head), or None when `buffer` ends inside it. Raises on a malformed head."""
    if at >= len(buffer):
        return None
    initial = buffer[at]
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        return major, info, info, at + 1
    if info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        if at + 1 + size > len(buffer):
            return None
        return major, info, int.from_bytes(bytes(buffer[at + 1 : at + 1 + size]), "big"), at + 1 + size
    if info == 31 and major in (2, 3, 4, 5, 7):
        return major, info, None, at + 1
    raise ProtocolError("malformed CBOR head 0x%02x" % initial)


def item_length(buffer: bytes | bytearray | memoryview, offset: int = 0) -> Optional[int]:
    """The offset just past the CBOR item that starts at `offset`, or None while `buffer` holds only part of it.

    Framing only: the item is decoded (and checked) by :class:`_Decoder` once it is whole.
    """
    end = len(buffer)

    def skip(at: int) -> Optional[int]:
        parsed = read_head(buffer, at)
        if parsed is None:
            return None
        major, _, argument, at = parsed
        if major in (2, 3) and argument is not None:
            return at + argument if at + argument <= end else None
        if major in (2, 3, 4, 5):
            # Indefinite strings are chunks up to a break, like indefinite arrays and maps.
            count = None if argument is None else argument * (2 if major == 5 else 1)
            index = 0
            while count is None or index < count:
                if count is None:
                    if at >= end:
                        return None
                    if buffer[at] == 0xFF:
                        return at + 1
                next_at = skip(at)
                if next_at is None:
                    return None
                at = next_at
                index += 1
            return at
        if major == 6:
            return skip(at)
        if major == 7 and argument is None:
            raise ProtocolError("unexpected CBOR break")
        # Integers, simple values and floats: the head is the whole item.
        return at

    return skip(offset)


class FrameBuffer:
    """Bytes received and not yet taken: hands out one whole CBOR item at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk

    def take(self) -> Optional[bytes]:
        """The next whole item, or None until more bytes arrive."""
        end = item_length(self._buffer)
        if end is None:
            return None
        item = bytes(self._buffer[:end])
        del self._buffer[:end]
        return item

    def clear(self) -> None:
        self._buffer.clear()
