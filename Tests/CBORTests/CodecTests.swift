import CBOR
import TestSupport
import Testing

@Suite("CBOR codec")
struct CodecTests {
    @Test("integers use the shortest head and the full 65-bit range")
    func integers() throws {
        let cases: [(CBORValue, String)] = [
            (.unsigned(0), "00"), (.unsigned(23), "17"), (.unsigned(24), "1818"), (.unsigned(255), "18ff"),
            (.unsigned(256), "190100"), (.unsigned(65536), "1a00010000"),
            (.unsigned(UInt64.max), "1bffffffffffffffff"), (.negative(0), "20"), (.int(-3), "22"),
            (.int(-25), "3818"), (.negative(UInt64.max), "3bffffffffffffffff"),
        ]
        for (value, hex) in cases {
            #expect(Hex.encode(CBOREncoder.encode(value)) == hex)
            #expect(try CBORDecoder.decode(Hex.decode(hex)) == value)
        }
        #expect(CBORValue.int(Int64.min).int64Value == Int64.min)
        #expect(CBORValue.negative(UInt64.max).int64Value == nil)
    }

    @Test("non-shortest heads and indefinite lengths decode; re-encoding is canonical")
    func nonCanonicalInput() throws {
        // 0x1800 is 0 in a one-byte head; 5f 41 61 41 62 ff is an indefinite byte string "ab".
        #expect(try CBORDecoder.decode(Hex.decode("1800")) == .unsigned(0))
        #expect(try CBORDecoder.decode(Hex.decode("5f41614162ff")) == .bytes(Array("ab".utf8)))
        #expect(try CBORDecoder.decode(Hex.decode("7f61616162ff")) == .text(Array("ab".utf8)))
        let indefinite = try CBORDecoder.decode(Hex.decode("9f0102bf4161f6ffff"))
        #expect(indefinite == .array([1, 2, .map(CBORMap([(.bytes("a"), .null)]))]))
        #expect(Hex.encode(CBOREncoder.encode(indefinite)) == "830102a14161f6")
    }

    @Test("floats of every width decode to float64 and always encode as float64")
    func floats() throws {
        #expect(try CBORDecoder.decode(Hex.decode("f94100")) == .float(2.5))
        #expect(try CBORDecoder.decode(Hex.decode("f90001")) == .float(5.960464477539063e-08))
        #expect(try CBORDecoder.decode(Hex.decode("f97c00")) == .float(.infinity))
        #expect(try CBORDecoder.decode(Hex.decode("f9fc00")) == .float(-.infinity))
        guard case .float(let nan) = try CBORDecoder.decode(Hex.decode("f97e00")) else {
            Issue.record("expected float")
            return
        }
        #expect(nan.isNaN)
        #expect(try CBORDecoder.decode(Hex.decode("fa3fc00000")) == .float(1.5))
        #expect(Hex.encode(CBOREncoder.encode(.float(2.5))) == "fb4004000000000000")
    }

    @Test("tags: 128 is a tuple, 37 a UUID, others opaque; tag 24 is unwrapped")
    func tags() throws {
        #expect(try CBORDecoder.decode(Hex.decode("d8808101")) == .tuple([1]))
        #expect(try CBORDecoder.decode(Hex.decode("d88001")) == .tagged(128, 1))
        let uuidHex = "d825500123456789abcdef0123456789abcdef"
        let uuid = try CBORDecoder.decode(Hex.decode(uuidHex))
        #expect(uuid == .uuid(CBORUUID(high: 0x0123_4567_89ab_cdef, low: 0x0123_4567_89ab_cdef)))
        #expect(Hex.encode(CBOREncoder.encode(uuid)) == uuidHex)
        #expect(try CBORDecoder.decode(Hex.decode("d8254101")) == .tagged(37, .bytes([1])))
        #expect(try CBORDecoder.decode(Hex.decode("d903e882016178")) == .tagged(1000, [1, .text("x")]))
        // Bignums are preserved opaquely.
        #expect(
            try CBORDecoder.decode(Hex.decode("c249010000000000000000"))
                == .tagged(2, .bytes([1, 0, 0, 0, 0, 0, 0, 0, 0])))
        // Embedded item: d8 18 42 18 2a = tag 24 of bytes(18 2a) = 42.
        #expect(try CBORDecoder.decode(Hex.decode("d81842182a")) == .unsigned(42))
        #expect(throws: CBORDecodingError.invalidEmbeddedItem) { try CBORDecoder.decode(Hex.decode("d81801")) }
        #expect(throws: CBORDecodingError.invalidEmbeddedItem) { try CBORDecoder.decode(Hex.decode("d818420101")) }
    }

    @Test("simple values and undefined")
    func simpleValues() throws {
        #expect(try CBORDecoder.decode(Hex.decode("f7")) == .null)
        #expect(try CBORDecoder.decode(Hex.decode("f0")) == .simple(16))
        #expect(try CBORDecoder.decode(Hex.decode("f8ff")) == .simple(255))
        #expect(Hex.encode(CBOREncoder.encode(.simple(255))) == "f8ff")
        #expect(Hex.encode(CBOREncoder.encode(.simple(16))) == "f0")
        #expect(throws: CBORDecodingError.self) { try CBORDecoder.decode(Hex.decode("f810")) }
    }

    @Test("invalid UTF-8 text is kept byte for byte; map order and duplicates survive")
    func textAndMaps() throws {
        let bytes = Hex.decode("a3626b31016366ff0002626b3103")
        guard case .map(let map) = try CBORDecoder.decode(bytes) else {
            Issue.record("expected a map")
            return
        }
        #expect(map.pairs.count == 3)
        #expect(map.pairs[1].key == .text([0x66, 0xff, 0x00]))
        #expect(CBOREncoder.encode(.map(map)) == bytes)
        // The last of several identifier-equal keys wins on lookup.
        #expect(map[identifier: Array("k1".utf8)] == .unsigned(3))
    }

    @Test("malformed inputs are rejected, never trapped on")
    func malformed() {
        let cases = [
            "", "1c", "5c", "ff", "18", "5a00000010", "9f01", "a101", "bf01ff", "5f01ff", "5f5f4100ffff",
            "1f", "3f", "df00", "fc", "fd", "fe", "9b7fffffffffffffff", "bb7fffffffffffffff", "0101",
        ]
        for hex in cases {
            #expect(throws: CBORDecodingError.self, "\(hex)") { try CBORDecoder.decode(Hex.decode(hex)) }
        }
    }

    @Test("nesting depth counts arrays, maps and tags; the limit itself is accepted")
    func depth() throws {
        let atLimit = CBOREncoder.encode(RandomCBOR.nested(depth: 256))
        #expect(throws: Never.self) { try CBORDecoder.decode(atLimit, maxDepth: 256) }
        let beyond = CBOREncoder.encode(RandomCBOR.nested(depth: 257))
        #expect(throws: CBORDecodingError.nestingTooDeep) { try CBORDecoder.decode(beyond, maxDepth: 256) }
        // A tuple is two levels (tag + array).
        let tuple = CBOREncoder.encode(.tuple([.tuple([])]))
        #expect(throws: Never.self) { try CBORDecoder.decode(tuple, maxDepth: 4) }
        #expect(throws: CBORDecodingError.nestingTooDeep) { try CBORDecoder.decode(tuple, maxDepth: 3) }
        // The item embedded by an inner tag 24 continues the count below the tag.
        let embedded = CBOREncoder.encode(.array([.tagged(24, .bytes(CBOREncoder.encode([[1]])))]))
        #expect(throws: Never.self) { try CBORDecoder.decode(embedded, maxDepth: 4) }
        #expect(throws: CBORDecodingError.nestingTooDeep) { try CBORDecoder.decode(embedded, maxDepth: 3) }
    }

    @Test("a decoded-memory budget: values are charged as they are built, embedded items included")
    func decodedBudget() throws {
        // 1 000 eight-byte strings: ~9 KB of CBOR, ~100 KB of values (a slot and a heap block each).
        var encoder = CBOREncoder()
        encoder.writeHead(major: 4, argument: 1000)
        for _ in 0..<1000 {
            encoder.writeHead(major: 2, argument: 8)
            encoder.bytes += [UInt8](repeating: 0x61, count: 8)
        }
        let strings = encoder.bytes
        #expect(try CBORDecoder.decode(strings, maxDecodedBytes: 1 << 20).listElements?.count == 1000)
        #expect(throws: CBORDecodingError.decodedTooLarge) { try CBORDecoder.decode(strings, maxDecodedBytes: 50_000) }
        // Inside an embedded item (tag 24) the same budget applies.
        var embedded = CBOREncoder()
        embedded.writeHead(major: 6, argument: 24)
        embedded.writeHead(major: 2, argument: UInt64(strings.count))
        embedded.bytes += strings
        #expect(throws: CBORDecodingError.decodedTooLarge) {
            try CBORDecoder.decode(embedded.bytes, maxDecodedBytes: 50_000)
        }
        // A huge declared count is refused before anything is reserved.
        #expect(throws: CBORDecodingError.self) { try CBORDecoder.decode(Hex.decode("9b00ffffffffffffff00")) }
        // Messages: the envelope reports it as its own outcome.
        let message = CBOREncoder.encodeEnvelope(.array(Array(repeating: .bytes([1, 2, 3]), count: 1000)))
        let decoded = message.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 16, maxDecodedBytes: 10_000) }
        #expect(decoded == .decodedTooLarge(enveloped: true))
    }

    @Test("random value trees round-trip exactly", arguments: 0..<8)
    func roundTrip(seed: UInt64) throws {
        var generator = RandomCBOR(seed: 0xC0FFEE + seed)
        for _ in 0..<500 {
            let value = generator.value(depth: 6)
            let encoded = CBOREncoder.encode(value)
            let decoded = try CBORDecoder.decode(encoded)
            #expect(decoded == value)
            #expect(CBOREncoder.encode(decoded) == encoded)
            // The envelope round-trips through the message decoder.
            let envelope = CBOREncoder.encodeEnvelope(value)
            let message = envelope.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 256) }
            #expect(message == .value(value, enveloped: true))
        }
    }

    @Test("deep random trees round-trip")
    func deepRoundTrip() throws {
        var generator = RandomCBOR(seed: 77)
        for _ in 0..<20 {
            var value = generator.value(depth: 3)
            for level in 0..<200 {
                value = Bool.random(using: &generator.rng) ? .array([value]) : .map(CBORMap([(.int(level), value)]))
            }
            let encoded = CBOREncoder.encode(value)
            #expect(try CBORDecoder.decode(encoded, maxDepth: 300) == value)
        }
    }
}
