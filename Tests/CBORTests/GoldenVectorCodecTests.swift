import CBOR
import TestSupport
import Testing

@Suite("Golden vectors through the codec")
struct GoldenVectorCodecTests {
    /// Requests that are deliberately not in canonical form (wire-protocol.md §13).
    static let nonCanonicalRequests: Set<String> = [
        "py42-get_work_spec", "val02-add_work_units", "proto01-invalid-cbor",
    ]

    @Test("every vector is present", arguments: ["py", "val", "lock", "proto"])
    func sequencesPresent(prefix: String) {
        let expected = ["py": 49, "val": 7, "lock": 10, "proto": 11]
        #expect(GoldenVectors.sequence(prefix).count == expected[prefix])
    }

    @Test("requests frame and decode; canonical ones re-encode byte for byte", arguments: GoldenVectors.all)
    func requests(vector: GoldenVector) throws {
        var framer = CBORStreamFramer(maxMessageBytes: 64 << 20, maxDepth: 256)
        let event = vector.request.withUnsafeBytes { framer.next(in: $0) }
        #expect(event == .message(length: vector.request.count))
        let decoded = vector.request.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 256) }
        if vector.name == "proto01-invalid-cbor" {
            #expect(decoded == .invalidCBOR)
            return
        }
        guard case .value(let value, let enveloped) = decoded else {
            Issue.record("\(vector.name) did not decode: \(decoded)")
            return
        }
        #expect(enveloped == (vector.name != "py42-get_work_spec"))
        if !Self.nonCanonicalRequests.contains(vector.name) {
            #expect(CBOREncoder.encodeEnvelope(value) == vector.request)
        }
        if vector.name == "val02-add_work_units" {
            // The float16 widens to float64: the only difference after re-encoding.
            let reencoded = Hex.encode(CBOREncoder.encodeEnvelope(value))
            #expect(reencoded.contains("fb4004000000000000"))
            #expect(!reencoded.contains("f94100"))
        }
    }

    @Test("responses decode and re-encode byte for byte", arguments: GoldenVectors.all.filter { !$0.response.isEmpty })
    func responses(vector: GoldenVector) throws {
        let decoded = vector.response.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 256) }
        guard case .value(let value, enveloped: true) = decoded else {
            Issue.record("\(vector.name) response did not decode: \(decoded)")
            return
        }
        #expect(CBOREncoder.encodeEnvelope(value) == vector.response)
    }
}
