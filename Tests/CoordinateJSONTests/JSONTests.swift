import CBOR
import CoordinateJSON
import Testing

@Suite("JSON values")
struct JSONValueTests {
    @Test("integers and floats stay apart in both directions (rest-api.md §1.2)")
    func numbers() throws {
        #expect(try JSONValue.parse("2") == .int(2))
        #expect(try JSONValue.parse("2.0") == .float(2))
        #expect(try JSONValue.parse("-0") == .int(0))
        #expect(try JSONValue.parse("1e3") == .float(1000))
        #expect(try JSONValue.parse("9223372036854775808") == .float(9223372036854775808))
        #expect(JSONValue.float(2).serialized() == "2.0")
        #expect(JSONValue.float(1e16).serialized() == "1e+16")
        #expect(JSONValue.int(-7).serialized() == "-7")
        #expect(JSONValue.float(.infinity).serialized() == "null")
    }

    @Test("strings: escapes, surrogate pairs, control characters, invalid input")
    func strings() throws {
        #expect(try JSONValue.parse(#""a\"b\\c\n\u00e9\ud83d\ude00""#) == .string("a\"b\\c\né😀"))
        #expect(JSONValue.string("a\"\u{1}\n").serialized() == #""a\"\u0001\n""#)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(#""\ud83d""#) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("\"a\u{1}\"") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("[1,]") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("{\"a\":1} x") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse(String(repeating: "[", count: 1000)) }
    }

    @Test("objects keep member order and duplicates; round trip")
    func objects() throws {
        let text = #"{"b":1,"a":[true,false,null],"b":{"x":"y"}}"#
        let value = try JSONValue.parse(text)
        #expect(value.members?.map(\.0) == ["b", "a", "b"])
        #expect(value["b"] == ["x": "y"])
        #expect(value.serialized() == text)
        #expect(try JSONValue.parse(value.prettyPrinted()) == value)
    }
}

@Suite("JSON mapping of data, names and times")
struct DataMappingTests {
    @Test("JSON-safe maps are objects; everything else is base64 of the CBOR encoding (rest-api.md §1.4)")
    func data() throws {
        let safe: CBORValue = .map(CBORMap([(.text("a"), .int(1)), (.text("b"), .array([.float(2.5), .null]))]))
        #expect(CoordinateJSON.data(safe) == ["a": 1, "b": [2.5, .null]])
        // The spec's own example: {"key": ()} → "oWNrZXnYgIA="
        let tuple: CBORValue = .map(CBORMap([(.text("key"), .tuple([]))]))
        #expect(CoordinateJSON.data(tuple) == .string("oWNrZXnYgIA="))
        // Byte-string keys (what Python clients send) are not JSON-safe.
        #expect(CoordinateJSON.data(["k": 1]) == .string(Base64.encode(CBOREncoder.encode(["k": 1]))))
        // A non-map top level is never an object.
        #expect(CoordinateJSON.data(.array([1])) == .string(Base64.encode(CBOREncoder.encode(.array([1])))))
        // Duplicate keys are not JSON-safe.
        let duplicate: CBORValue = .map(CBORMap([(.text("a"), 1), (.text("a"), 2)]))
        #expect(CoordinateJSON.data(duplicate).stringValue != nil)
        for value in [safe, tuple, duplicate, ["k": .uuid(CBORUUID(high: 1, low: 2))]] {
            #expect(try CoordinateJSON.data(from: CoordinateJSON.data(value)) == value)
        }
        #expect(throws: CoordinateJSON.MappingError.self) { try CoordinateJSON.data(from: .string("!!")) }
        #expect(throws: CoordinateJSON.MappingError.self) { try CoordinateJSON.data(from: .int(3)) }
    }

    @Test("names in URLs and in JSON (rest-api.md §1.3)")
    func names() throws {
        let cases: [([UInt8], String)] = [
            ([], "-"), (Array("-".utf8), "-LQ"), ([0], "-AA"), (Array("foo".utf8), "foo"), (Array("a b".utf8), "-YSBi"),
        ]
        for (octets, segment) in cases {
            #expect(CoordinateJSON.pathSegment(octets) == segment)
            #expect(CoordinateJSON.name(fromPathSegment: segment) == octets)
        }
        #expect(CoordinateJSON.name(fromPathSegment: "-!") == nil)
        let invalid: [UInt8] = [0x66, 0xff]
        let members = CoordinateJSON.nameMembers(invalid)
        #expect(members.map(\.0) == ["name", "name_base64"])
        #expect(try CoordinateJSON.name(in: .object(members)) == invalid)
        #expect(try CoordinateJSON.name(in: ["name": "plain"]) == Array("plain".utf8))
    }

    @Test("RFC 3339 times: trailing zeros removed, offsets accepted")
    func times() {
        #expect(RFC3339.format(microseconds: 1_714_564_800_000_000) == "2024-05-01T12:00:00Z")
        #expect(RFC3339.format(microseconds: 1_714_564_800_250_000) == "2024-05-01T12:00:00.25Z")
        #expect(RFC3339.parse("2024-05-01T12:00:00.25Z") == 1_714_564_800_250_000)
        #expect(RFC3339.parse("2024-05-01T14:00:00+02:00") == 1_714_564_800_000_000)
        #expect(RFC3339.parse("0001-01-01T00:00:00Z") == -62_135_596_800_000_000)
        #expect(RFC3339.parse("2024-13-01T00:00:00Z") == nil)
        #expect(RFC3339.format(microseconds: -1) == "1969-12-31T23:59:59.999999Z")
    }

    @Test("base64 round trips at every length, both alphabets")
    func base64() {
        for length in 0..<20 {
            let octets = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 37 + 250) }
            #expect(Base64.decode(Base64.encode(octets)) == octets)
            #expect(Base64.decode(Base64.encode(octets, urlSafe: true, padded: false), urlSafe: true) == octets)
        }
        #expect(Base64.encode(Array("any carnal pleas".utf8)) == "YW55IGNhcm5hbCBwbGVhcw==")
        #expect(Base64.decode("YW55=IGNh") == nil)
    }
}
