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
        let daemon = try await TestDaemon.start(storage: storage)
        defer { Task { await daemon.stop() } }
        let connection = try daemon.connect()
        var step14Time: Double?
        for vector in GoldenVectors.sequence(sequence) {
            if vector.name.hasPrefix("py14") { step14Time = Date().timeIntervalSince1970 }
            try connection.send(vector.request)
            if vector.response.isEmpty {
                #expect(connection.closedByPeer(), "\(vector.name): expected the connection to close")
                continue
            }
            let reply = try #require(try connection.receiveMessage(), "\(vector.name): connection closed")
            if vector.name.hasPrefix("py17") {
                try checkTimeDependent(reply, expected: vector.response, around: try #require(step14Time) + 300)
            } else {
                #expect(Hex.encode(reply) == Hex.encode(vector.response), "\(vector.name)")
            }
        }
    }

    /// py17: the expiration float is within 2 s of step-14 time + 300 s; everything else byte-exact.
    func checkTimeDependent(_ reply: [UInt8], expected: [UInt8], around deadline: Double) throws {
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
        #expect(abs(expiration - deadline) < 2, "expiration \(expiration) vs \(deadline)")
    }
}
