import CBOR
import CoordinateConfig
import Foundation
import TestSupport
import Testing

/// Every golden vector replayed against a running daemon over TCP (wire-protocol.md §13).
@Suite("Golden vectors against the daemon")
struct GoldenVectorReplayTests {
    @Test(
        "each sequence replays byte for byte on one connection",
        arguments: TestDaemon.backends, ["py", "val", "lock", "proto"])
    func replay(storage: StorageKind, sequence: String) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let connection = try await daemon.connect()
            // When the daemon handled py14 (the grant whose lease py17 reports): after it was sent, before its
            // answer arrived.
            var step14Sent: Double?
            var step14Answered: Double?
            for vector in GoldenVectors.sequence(sequence) {
                let sentAt = Date().timeIntervalSince1970
                try await connection.send(vector.request)
                if vector.response.isEmpty {
                    #expect(await connection.closedByPeer(), "\(vector.name): expected the connection to close")
                    continue
                }
                let reply = try #require(try await connection.receiveMessage(), "\(vector.name): connection closed")
                if vector.name.hasPrefix("py14") {
                    step14Sent = sentAt
                    step14Answered = Date().timeIntervalSince1970
                }
                if vector.name.hasPrefix("py17") {
                    let granted = try #require(step14Sent)...(try #require(step14Answered))
                    try checkTimeDependent(reply, expected: vector.response, grantedWithin: granted)
                } else {
                    #expect(Hex.encode(reply) == Hex.encode(vector.response), "\(vector.name)")
                }
            }
        }
    }

    /// py17: the expiration float is 300 s after the moment py14 was granted (between its request and its
    /// answer); everything else byte-exact.
    func checkTimeDependent(_ reply: [UInt8], expected: [UInt8], grantedWithin granted: ClosedRange<Double>) throws {
        let marker: [UInt8] = [0xfb]
        let expectedHex = Hex.encode(expected)
        let floatHex = "fb41dac2ee72513251"
        let range = try #require(expectedHex.range(of: floatHex))
        let offset = expectedHex.distance(from: expectedHex.startIndex, to: range.lowerBound) / 2
        #expect(reply.count == expected.count)
        #expect(Array(reply[..<offset]) == Array(expected[..<offset]))
        #expect(Array(reply[(offset + 9)...]) == Array(expected[(offset + 9)...]))
        #expect(Array(reply[offset..<(offset + 1)]) == marker)
        let bits = reply[(offset + 1)..<(offset + 9)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let expiration = Double(bitPattern: bits)
        // 1 ms either side: the daemon's clock and this one are the same, read at microsecond precision.
        let window = (granted.lowerBound + 300 - 0.001)...(granted.upperBound + 300 + 0.001)
        #expect(window.contains(expiration), "expiration \(expiration) outside \(window)")
    }
}
