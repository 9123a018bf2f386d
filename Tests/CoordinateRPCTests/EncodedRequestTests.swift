import CBOR
import CoordinateRPC
import NIOEmbedded
import Testing

/// `respond(toEncoded:)` answers the usual requests without decoding the request map. It must answer exactly as
/// decoding and `respond(to:)` would, and decline (nil) whatever it does not read the same way.
@Suite("RPC dispatcher: requests read straight from their encoding")
struct EncodedRequestTests {
    let dispatcher = RPCDispatcher(table: try! RPCMethodTable(modules: [SampleModule()]))
    let loop = EmbeddedEventLoop()

    enum Outcome: Equatable {
        /// The connection would answer this response.
        case response(CBORValue)
        /// Not a single request map: a batch, an error response of the connection or a close.
        case notARequest
    }

    /// What the connection answers after decoding the whole message.
    func decoded(_ bytes: [UInt8], maxDepth: Int, budget: Int) -> Outcome {
        let decoded = bytes.withUnsafeBytes { CBORMessage.decode($0, maxDepth: maxDepth, maxDecodedBytes: budget) }
        guard case .value(let message, _) = decoded, case .map = message else { return .notARequest }
        return .response(dispatcher.respond(to: message, on: loop).value)
    }

    /// What the direct path answers, or nil when it declines.
    func direct(_ bytes: [UInt8], maxDepth: Int, budget: Int) -> CBORValue? {
        bytes.withUnsafeBytes {
            dispatcher.respond(toEncoded: $0, maxDepth: maxDepth, maxDecodedBytes: budget, on: loop)?.value
        }
    }

    /// Checks that the direct path, where it answers, answers what decoding gives; returns whether it answered.
    @discardableResult
    func check(
        _ bytes: [UInt8], maxDepth: Int = 8, budget: Int = 1 << 20, sourceLocation: SourceLocation = #_sourceLocation
    ) -> Bool {
        guard let answer = direct(bytes, maxDepth: maxDepth, budget: budget) else { return false }
        #expect(
            decoded(bytes, maxDepth: maxDepth, budget: budget) == .response(answer), "\(bytes)",
            sourceLocation: sourceLocation)
        return true
    }

    static let requests: [CBORValue] = [
        ["id": 1, "method": "pair", "params": [1, 2]],
        ["method": "pair", "params": [1, ["x": 2]], "id": 7],
        [.text("id"): "abc", .text("method"): .text("none"), .text("params"): []],
        ["id": 2, "method": "none"],
        ["id": 3, "method": "pair", "params": .tuple([1, 2, 3])],
        ["id": 4, "method": "pair", "params": ["second": 2, "first": 1]],
        ["id": 5, "method": "pair", "params": [1]],
        ["id": 6, "method": "pair", "params": 5],
        ["id": .tagged(1000, 1), "method": "none", "params": .null],
    ]

    @Test("the usual requests are answered directly, as decoding answers them, bare or enveloped")
    func usualRequests() {
        for request in Self.requests {
            #expect(check(CBOREncoder.encode(request)), "\(request)")
            #expect(check(CBOREncoder.encodeEnvelope(request)), "\(request)")
        }
    }

    @Test("unusual requests are declined and left to decoding")
    func unusualRequests() {
        let declined: [CBORValue] = [
            // The last of duplicate keys wins when decoded.
            .map(CBORMap([("id", 1), ("method", "nope"), ("method", "none")])),
            .map(CBORMap([("id", 1), ("id", 2), ("method", "none")])),
            // Unknown method, missing id or method, method not a string, keys that are not strings, extra keys.
            ["id": 1, "method": "nope", "params": []],
            ["method": "none", "params": []],
            ["id": 1, "params": []],
            ["id": 1, "method": 5],
            .map(CBORMap([(1, 1), ("id", 1), ("method", "none")])),
            ["id": 1, "method": "none", "extra": true],
            // Batches and other items.
            [["id": 1, "method": "none"]],
            .null,
            "id",
        ]
        for message in declined {
            #expect(!check(CBOREncoder.encode(message)), "\(message)")
        }
        // Indefinite lengths: a map, a key, a method name.
        let indefiniteMap: [UInt8] =
            [0xbf, 0x42, 0x69, 0x64, 0x01, 0x46] + Array("method".utf8) + [0x44]
            + Array(
                "none".utf8) + [0xff]
        #expect(!check(indefiniteMap))
        let indefiniteName: [UInt8] =
            [0xa2, 0x42, 0x69, 0x64, 0x01, 0x46] + Array("method".utf8) + [
                0x5f, 0x42, 0x6e, 0x6f, 0x42, 0x6e, 0x65, 0xff,
            ]
        #expect(!check(indefiniteName))
        #expect(decoded(indefiniteName, maxDepth: 8, budget: 1 << 20) != .notARequest)
        // Trailing bytes after the map inside an envelope.
        var trailing = CBOREncoder.encode(["id": 1, "method": "none"])
        trailing.append(0x00)
        var envelope = CBOREncoder()
        envelope.writeEnvelopeHead(contentLength: trailing.count)
        #expect(!check(envelope.bytes + trailing))
    }

    @Test("limits: a request too deep or too large once decoded is declined")
    func limits() {
        let deep: CBORValue = ["id": 1, "method": "pair", "params": [[[[1]]], 2]]
        let bytes = CBOREncoder.encode(deep)
        #expect(check(bytes, maxDepth: 5))
        #expect(!check(bytes, maxDepth: 4))
        #expect(decoded(bytes, maxDepth: 4, budget: 1 << 20) == .notARequest)
        let large: CBORValue = ["id": 1, "method": "pair", "params": [.bytes(Array(repeating: 7, count: 1000)), 2]]
        let largeBytes = CBOREncoder.encode(large)
        var budget = 0
        while direct(largeBytes, maxDepth: 8, budget: budget) == nil { budget += 16 }
        // The smallest budget the direct path accepts is the smallest decoding accepts.
        #expect(decoded(largeBytes, maxDepth: 8, budget: budget) != .notARequest)
        #expect(decoded(largeBytes, maxDepth: 8, budget: budget - 16) == .notARequest)
    }

    @Test("every truncation and every one-byte change of a request is answered as decoding answers it")
    func mutations() {
        var answered = 0
        var declined = 0
        for request in Self.requests {
            for original in [CBOREncoder.encode(request), CBOREncoder.encodeEnvelope(request)] {
                for length in 0..<original.count {
                    check(Array(original[..<length])) ? (answered += 1) : (declined += 1)
                }
                for position in original.indices {
                    for replacement: UInt8 in [
                        0x00, 0x01, 0x17, 0x18, 0x1f, 0x40, 0x5f, 0x60, 0x80, 0xa0, 0xbf, 0xd8, 0xf6, 0xff,
                    ]
                    where replacement != original[position] {
                        var mutated = original
                        mutated[position] = replacement
                        check(mutated, maxDepth: 4, budget: 4096) ? (answered += 1) : (declined += 1)
                    }
                }
            }
        }
        // Both sides of the comparison were exercised.
        #expect(answered > 100)
        #expect(declined > 100)
    }
}
