/// Canonical CBOR encoder (wire-protocol.md §5.2): shortest-form heads, definite lengths only, every float as
/// float64, tuples as tag 128, UUIDs as tag 37, maps in their stored pair order.
public struct CBOREncoder: Sendable {
    /// The bytes written so far.
    public var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Encodes one value canonically.
    public static func encode(_ value: CBORValue) -> [UInt8] {
        var encoder = CBOREncoder()
        encoder.encode(value)
        return encoder.bytes
    }

    /// Encodes one value wrapped in the tag-24 envelope of wire-protocol.md §2.2.
    public static func encodeEnvelope(_ value: CBORValue) -> [UInt8] {
        let inner = encode(value)
        var encoder = CBOREncoder(reservingCapacity: inner.count + 11)
        encoder.writeEnvelopeHead(contentLength: inner.count)
        encoder.bytes.append(contentsOf: inner)
        return encoder.bytes
    }

    /// Writes `d8 18` followed by the head of a byte string of `contentLength` bytes.
    @inlinable
    public mutating func writeEnvelopeHead(contentLength: Int) {
        bytes.append(0xd8)
        bytes.append(0x18)
        writeHead(major: 2, argument: UInt64(contentLength))
    }

    /// Writes a head in its shortest form.
    @inlinable
    public mutating func writeHead(major: UInt8, argument: UInt64) {
        let m = major << 5
        if argument < 24 {
            bytes.append(m | UInt8(argument))
        } else if argument <= 0xff {
            bytes.append(m | 24)
            bytes.append(UInt8(argument))
        } else if argument <= 0xffff {
            bytes.append(m | 25)
            bytes.append(UInt8(argument >> 8))
            bytes.append(UInt8(truncatingIfNeeded: argument))
        } else if argument <= 0xffff_ffff {
            bytes.append(m | 26)
            bytes.append(UInt8(truncatingIfNeeded: argument >> 24))
            bytes.append(UInt8(truncatingIfNeeded: argument >> 16))
            bytes.append(UInt8(truncatingIfNeeded: argument >> 8))
            bytes.append(UInt8(truncatingIfNeeded: argument))
        } else {
            bytes.append(m | 27)
            for shift in stride(from: 56, through: 0, by: -8) {
                bytes.append(UInt8(truncatingIfNeeded: argument >> UInt64(shift)))
            }
        }
    }

    /// Appends the encoding of `value`.
    public mutating func encode(_ value: CBORValue) {
        switch value {
        case .unsigned(let n):
            writeHead(major: 0, argument: n)
        case .negative(let n):
            writeHead(major: 1, argument: n)
        case .bytes(let octets):
            writeHead(major: 2, argument: UInt64(octets.count))
            bytes.append(contentsOf: octets)
        case .text(let octets):
            writeHead(major: 3, argument: UInt64(octets.count))
            bytes.append(contentsOf: octets)
        case .array(let items):
            writeHead(major: 4, argument: UInt64(items.count))
            for item in items { encode(item) }
        case .map(let map):
            writeHead(major: 5, argument: UInt64(map.pairs.count))
            for pair in map.pairs {
                encode(pair.key)
                encode(pair.value)
            }
        case .tuple(let items):
            bytes.append(0xd8)
            bytes.append(0x80)
            writeHead(major: 4, argument: UInt64(items.count))
            for item in items { encode(item) }
        case .uuid(let uuid):
            bytes.append(0xd8)
            bytes.append(0x25)
            bytes.append(0x50)
            appendBigEndian(uuid.high)
            appendBigEndian(uuid.low)
        case .tagged(let tag, let inner):
            writeHead(major: 6, argument: tag)
            encode(inner)
        case .bool(let flag):
            bytes.append(flag ? 0xf5 : 0xf4)
        case .null:
            bytes.append(0xf6)
        case .simple(let n):
            if n < 24 {
                bytes.append(0xe0 | n)
            } else {
                bytes.append(0xf8)
                bytes.append(n)
            }
        case .float(let value):
            bytes.append(0xfb)
            appendBigEndian(value.bitPattern)
        case .encoded(let item):
            bytes.append(contentsOf: item.bytes)
        }
    }

    /// Appends a byte string holding the octets of `text` (an ASCII literal: no copy of it is made first).
    @inlinable
    public mutating func writeByteString(_ text: StaticString) {
        let octets = UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
        writeHead(major: 2, argument: UInt64(octets.count))
        bytes.append(contentsOf: octets)
    }

    @inlinable
    mutating func appendBigEndian(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}

extension CBORValue {
    /// The canonical encoding of this value.
    public var encodedBytes: [UInt8] { CBOREncoder.encode(self) }
}
