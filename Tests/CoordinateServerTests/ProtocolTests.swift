import CBOR
import CoordinateRPC
import CoordinateServer
import Foundation
import Synchronization
import TestSupport
import Testing

/// The CBOR-RPC protocol over real loopback TCP (wire-protocol.md §§2–9), with methods defined by the tests.
@Suite("CBOR-RPC protocol over TCP")
struct ProtocolTests {
    @Test("enveloped and bare requests both get enveloped responses")
    func framingBothWays() async throws {
        try await withTestDaemon { daemon, port in
            let connection = try await RawConnection(port: port)
            try await connection.send(connection.request("echo", ["hi"], id: 1))
            let first = try #require(try await connection.receiveMessage())
            #expect(Array(first.prefix(2)) == [0xd8, 0x18])
            let bare = CBOREncoder.encode(.map(CBORMap([("id", 2), ("method", "echo"), ("params", [5])])))
            try await connection.send(bare)
            let second = try #require(try await connection.receiveMessage())
            #expect(Array(second.prefix(2)) == [0xd8, 0x18])
            let decoded = second.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 256) }
            #expect(decoded == .value(RPCDispatcher.successResponse(id: 2, result: 5), enveloped: true))
            // The response map's keys are byte strings in the order id, result.
            #expect(Hex.encode(second) == "d8184da24269640246726573756c7405")
        }
    }

    @Test("a request split across many writes, and many requests in one write")
    func splitAndMerged() async throws {
        try await withTestDaemon { daemon, port in
            let connection = try await RawConnection(port: port)
            let request = connection.request(
                "echo", [.map(CBORMap([("k", .bytes([UInt8](repeating: 7, count: 3000)))]))], id: 9)
            for byte in request {
                try await connection.send([byte])
            }
            let response = try #require(try await connection.receiveValue())
            #expect(response.mapValue?["id"] == 9)

            var merged: [UInt8] = []
            for index in 0..<500 { merged += connection.request("add", [.int(index), 1], id: UInt64(1000 + index)) }
            try await connection.send(merged)
            for index in 0..<500 {
                let reply = try #require(try await connection.receiveValue()?.mapValue)
                #expect(reply["id"] == .unsigned(UInt64(1000 + index)))
                #expect(reply["result"] == .int(index + 1))
            }
        }
    }

    @Test("10 000 pipelined requests on one connection are answered in order")
    func pipelining() async throws {
        try await withTestDaemon { daemon, port in
            let connection = try await RawConnection(port: port)
            let total = 10_000
            var requests: [[UInt8]] = []
            for index in 0..<total {
                // Every 100th request completes later than its successors would: order must still hold.
                let id = UInt64(index + 1)
                let value = CBORValue.int(index)
                if index % 100 == 0 {
                    requests.append(connection.request("later", .array([value, 5]), id: id))
                } else {
                    requests.append(connection.request("add", .array([value]), id: id))
                }
            }
            let allRequests = requests
            // Sending overlaps reading: the server must keep answering while more requests arrive.
            let sender = Task {
                for chunk in stride(from: 0, to: total, by: 250) {
                    try await connection.send(Array(allRequests[chunk..<min(chunk + 250, total)].joined()))
                }
            }
            defer { sender.cancel() }
            for index in 0..<total {
                let reply = try #require(try await connection.receiveValue()?.mapValue)
                #expect(reply["id"] == .unsigned(UInt64(index + 1)))
                #expect(reply["result"] == .int(index))
                if reply["id"] != .unsigned(UInt64(index + 1)) { break }
            }
        }
    }

    @Test("batches: in-order element responses, nesting, empty batch, non-map elements")
    func batches() async throws {
        try await withTestDaemon { daemon, port in
            let connection = try await RawConnection(port: port)
            func req(_ method: String, _ params: CBORValue, _ id: Int) -> CBORValue {
                .map(CBORMap([("id", .int(id)), ("method", .bytes(method)), ("params", params)]))
            }
            let batch: CBORValue = [
                req("later", [1, 20], 1), req("echo", ["x"], 2), req("bogus", [], 3), .null, 7,
                [req("add", [1, 2], 4), []], req("later_fail", [], 5),
            ]
            try await connection.send(CBOREncoder.encodeEnvelope(batch))
            let reply = try #require(try await connection.receiveValue())
            let items = try #require(reply.listElements)
            #expect(items.count == 7)
            #expect(items[0].mapValue?["result"] == 1)
            #expect(items[1].mapValue?["result"] == "x")
            #expect(items[2].mapValue?.errorMessage == "no such method bogus")
            #expect(items[3].mapValue?.errorMessage == "malformed request: not a request map")
            #expect(items[3].mapValue?["id"] == .null)
            #expect(items[4].mapValue?.errorMessage == "malformed request: not a request map")
            #expect(items[5] == [RPCDispatcher.successResponse(id: 4, result: 3), []])
            #expect(items[6].mapValue?.errorMessage == "deferred failure")
            try await connection.send(CBOREncoder.encodeEnvelope([]))
            #expect(try await connection.receiveMessage() == Hex.decode("d8184180"))
        }
    }

    @Test("keyword parameters bind by name; unknown before missing")
    func keywordParameters() async throws {
        try await withTestDaemon { daemon, port in
            let connection = try await RawConnection(port: port)
            #expect(try await connection.result("add", .map(CBORMap([("b", 5), (.text("a"), 2)]))) == 7)
            #expect(try await connection.result("add", .map(CBORMap([("a", 2)]))) == 2)
            #expect(
                try await connection.call("add", .map(CBORMap([("b", 5), ("zz", 1)]))).errorMessage
                    == "unexpected parameter zz for add")
            #expect(
                try await connection.call("add", .map(CBORMap([("b", 5)]))).errorMessage
                    == "missing parameter a for add")
            #expect(
                try await connection.call("add", .map(CBORMap([(1, 5)]))).errorMessage
                    == "unexpected parameter 1 for add")
        }
    }

    @Test("protocol-level errors carry the exact texts; the connection stays open")
    func protocolErrors() async throws {
        try await withTestDaemon { daemon, port in
            let connection = try await RawConnection(port: port)
            func send(_ value: CBORValue) async throws -> CBORMap {
                try await connection.send(CBOREncoder.encodeEnvelope(value))
                return try #require(try await connection.receiveValue()?.mapValue)
            }
            #expect(try await send(5).errorMessage == "malformed request: not a request map")
            #expect(
                try await send(.map(CBORMap([("method", "echo"), ("params", [1])]))).errorMessage
                    == "malformed request: missing id")
            let missingMethod = try await send(.map(CBORMap([("id", 7), ("params", [])])))
            #expect(missingMethod.errorMessage == "malformed request: missing method")
            #expect(missingMethod["id"] == 7)
            #expect(
                try await send(.map(CBORMap([("id", 7), ("method", 5)]))).errorMessage
                    == "malformed request: missing method")
            #expect(
                try await send(.map(CBORMap([("id", 7), ("method", .bytes([0x5f, 0xff]))]))).errorMessage?.hasPrefix(
                    "no such method _") == true)
            #expect(
                try await send(.map(CBORMap([("id", 7), ("method", "echo"), ("params", 5)]))).errorMessage
                    == "don't understand params: 5")
            #expect(
                try await send(.map(CBORMap([("id", 7), ("method", "echo"), ("params", "x")]))).errorMessage
                    == "don't understand params: 'x'")
            #expect(
                try await connection.call("echo", []).errorMessage
                    == "wrong number of parameters for echo: expected 1, got 0")
            #expect(
                try await connection.call("add", [1, 2, 3]).errorMessage
                    == "wrong number of parameters for add: expected 1 to 2, got 3")
            #expect(try await connection.call("add", ["x"]).errorMessage == "bad parameter a for add: expected integer")
            #expect(try await connection.call("fail", []).errorMessage == "it failed")
            // A tuple is accepted as positional params; absent params mean none.
            #expect(
                try await send(.map(CBORMap([("id", 8), ("method", "echo"), ("params", .tuple([3]))])))["result"] == 3)
            #expect(try await send(.map(CBORMap([("id", 9), ("method", "fail")]))).errorMessage == "it failed")
            // Ids of any kind are echoed exactly; text keys and a text method work too.
            let textKeys = try await send(
                .map(
                    CBORMap([(.text("id"), [1, .text("x")]), (.text("method"), .text("echo")), (.text("params"), [1])]))
            )
            #expect(textKeys["id"] == [1, .text("x")])
            #expect(textKeys["result"] == 1)
            // Invalid envelope content, and an outer tag 24 around something that is not a byte string.
            try await connection.send(Hex.decode("d81841ff"))
            #expect(try await connection.receiveValue()?.mapValue?.errorMessage == "malformed request: invalid CBOR")
            try await connection.send(Hex.decode("d81801"))
            #expect(try await connection.receiveValue()?.mapValue?.errorMessage == "malformed request: invalid CBOR")
            // An inner tag 24 whose content is not one item.
            try await connection.send(
                CBOREncoder.encodeEnvelope(
                    .map(CBORMap([("id", 1), ("method", "echo"), ("params", [.tagged(24, .bytes([0x01, 0x02]))])]))))
            #expect(try await connection.receiveValue()?.mapValue?.errorMessage == "malformed request: invalid CBOR")
            // Still usable afterwards.
            #expect(try await connection.result("echo", ["ok"]) == "ok")
        }
    }

    @Test("nesting limit: the limit itself is accepted; deeper is refused (enveloped stays open, bare closes)")
    func nesting() async throws {
        try await withTestDaemon(configure: { $0.server.maxNestingDepth = 20 }) { daemon, port in
            let connection = try await RawConnection(port: port)
            // Request map (1) + params array (2) + 18 nested arrays = depth 20.
            #expect(try await connection.result("echo", [RandomCBOR.nested(depth: 18)]) == RandomCBOR.nested(depth: 18))
            let tooDeep = try await connection.call("echo", [RandomCBOR.nested(depth: 19)])
            #expect(tooDeep.errorMessage == "malformed request: nesting too deep")
            #expect(tooDeep["id"] == .null)
            #expect(try await connection.result("echo", [1]) == 1)
            let bare = CBOREncoder.encode(
                .map(CBORMap([("id", 1), ("method", "echo"), ("params", [RandomCBOR.nested(depth: 19)])])))
            try await connection.send(bare)
            #expect(
                try await connection.receiveValue()?.mapValue?.errorMessage == "malformed request: nesting too deep")
            #expect(await connection.closedByPeer())
        }
    }

    @Test("null and undefined messages close without a reply, after earlier responses")
    func nullCloses() async throws {
        try await withTestDaemon { daemon, port in
            for closing in ["d81841f6", "d81841f7", "f6"] {
                let connection = try await RawConnection(port: port)
                try await connection.send(connection.request("later", ["first", 30], id: 1) + Hex.decode(closing))
                #expect(try await connection.receiveValue()?.mapValue?["result"] == "first")
                #expect(await connection.closedByPeer())
            }
        }
    }

    @Test("a stream that is not well-formed CBOR is closed")
    func malformedStreamCloses() async throws {
        try await withTestDaemon { daemon, port in
            for garbage in ["ff", "1c", "5f01", "3f"] {
                let connection = try await RawConnection(port: port)
                try await connection.send(Hex.decode(garbage))
                #expect(await connection.closedByPeer(), "\(garbage)")
            }
            // A truncated item followed by end of stream: the server closes quietly.
            let connection = try await RawConnection(port: port)
            try await connection.send(Array(connection.request("echo", [1]).prefix(10)))
            await connection.shutdownWrite()
            #expect(await connection.closedByPeer())
        }
    }

    @Test("oversized messages are refused from the envelope head and the connection closes")
    func oversized() async throws {
        try await withTestDaemon(configure: { $0.server.maxMessageBytes = 4096 }) { daemon, port in
            let connection = try await RawConnection(port: port)
            #expect(
                try await connection.result("echo", [.bytes([UInt8](repeating: 1, count: 3000))]).stringOctets?.count
                    == 3000)
            // Only the head of a 1 GiB envelope: the server answers without waiting for the body.
            try await connection.send(Hex.decode("d8185a40000000"))
            let reply = try #require(try await connection.receiveValue()?.mapValue)
            #expect(reply.errorMessage == "malformed request: message too large")
            #expect(reply["id"] == .null)
            #expect(await connection.closedByPeer())
            // A bare message found to be too large while reading.
            let bare = try await RawConnection(port: port)
            try await bare.send([0x9f] + [UInt8](repeating: 0x01, count: 5000))
            #expect(try await bare.receiveValue()?.mapValue?.errorMessage == "malformed request: message too large")
            #expect(await bare.closedByPeer())
        }
    }

    @Test("200 concurrent connections keep working while one connection misbehaves")
    func concurrentConnectionsWithMisbehaver() async throws {
        try await withTestDaemon { daemon, port in
            let misbehaver = try await RawConnection(port: port)
            // Starts a message it never finishes, then floods garbage on another connection.
            try await misbehaver.send(Hex.decode("d8185a00100000") + [UInt8](repeating: 0, count: 1000))
            let garbage = try await RawConnection(port: port)
            try await garbage.send([UInt8](repeating: 0xff, count: 100))
            var connections: [RawConnection] = []
            for _ in 0..<200 { connections.append(try await RawConnection(port: port)) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, connection) in connections.enumerated() {
                    group.addTask {
                        for round in 0..<20 {
                            let value = CBORValue.int(index * 100 + round)
                            let result = try await connection.result("echo", [value])
                            #expect(result == value)
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(await garbage.closedByPeer())
            #expect(daemon.statistics.openConnections.value >= 200)
        }
    }

    @Test("the connection limit closes excess connections at once")
    func connectionLimit() async throws {
        try await withTestDaemon(configure: { $0.server.maxConnections = 3 }) { daemon, port in
            var open: [RawConnection] = []
            for _ in 0..<3 { open.append(try await RawConnection(port: port)) }
            for connection in open { #expect(try await connection.result("echo", [1]) == 1) }
            let excess = try await RawConnection(port: port)
            #expect(await excess.closedByPeer())
            #expect(daemon.statistics.rejectedForLimit.value == 1)
        }
    }

    @Test("an idle timeout closes a connection that trickles bytes; none by default")
    func idleTimeout() async throws {
        try await withTestDaemon(configure: { $0.server.idleTimeout = .double(0.5) }) { daemon, port in
            let trickler = try await RawConnection(port: port, receiveTimeout: 5)
            let request = trickler.request("echo", [1])
            let start = ContinuousClock.now
            var closed = false
            for byte in request.prefix(request.count - 1) {
                if (try? await trickler.send([byte])) == nil { closed = true; break }
                try await Task.sleep(for: .milliseconds(200))
                if ContinuousClock.now - start > .seconds(3) { break }
            }
            let peerClosed = closed ? true : await trickler.closedByPeer()
            #expect(peerClosed)

            try await withTestDaemon { quietDaemon, quietPort in
                let quiet = try await RawConnection(port: quietPort)
                try await Task.sleep(for: .seconds(1))
                #expect(try await quiet.result("echo", [2]) == 2)
            }
        }
    }

    @Test("a client that never reads its responses is throttled instead of buffered without bound")
    func backPressure() async throws {
        try await withTestDaemon(configure: { $0.server.maxPendingResponseBytes = 1 << 20 }) { daemon, port in
            let connection = try await RawConnection(port: port)
            // Each request carries and echoes 64 KiB; the client sends twice as many as the kernel's socket
            // buffers of both directions and the 1 MiB of pending responses can hold, and reads nothing. Once those
            // are full the server stops reading, so sending stalls before half of them went out. (Receive buffers
            // grow up to `tcp_rmem`'s maximum, 32 MiB on these machines: a fixed 1000 requests could all fit.)
            let buffered = 2 * (Self.socketBufferMaximum("tcp_rmem") + Self.socketBufferMaximum("tcp_wmem")) + (1 << 20)
            let count = max(1000, 2 * buffered / 65536 + 64)
            let payload = CBORValue.bytes([UInt8](repeating: 0x61, count: 65536))
            let request = connection.request("echo", [payload])
            let sent = Atomic<Int>(0)
            let sender = Task {
                for _ in 0..<count {
                    if (try? await connection.send(request)) == nil { return }
                    sent.add(1, ordering: .relaxed)
                }
            }
            defer { sender.cancel() }
            // Sending stalls far short of the end: wait until the count stops growing (or everything went out,
            // which is the failure), however fast or loaded the machine is.
            var previous = -1
            var current = sent.load(ordering: .relaxed)
            while current != count && current != previous {
                previous = current
                try await Task.sleep(for: .seconds(1))
                current = sent.load(ordering: .relaxed)
            }
            #expect(current < count / 2, "\(current) of \(count) requests sent while no response was read")
            // Draining the responses lets everything through.
            for _ in 0..<count {
                let response = try #require(try await connection.receiveValue()?.mapValue)
                #expect(response["result"] == payload)
            }
        }
    }

    /// The largest size a TCP socket buffer grows to by itself (the last of the three numbers in
    /// `/proc/sys/net/ipv4/<name>`), or 8 MiB where that cannot be read.
    private static func socketBufferMaximum(_ name: String) -> Int {
        let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/\(name)", encoding: .utf8)
        return text?.split(whereSeparator: \.isWhitespace).last.flatMap { Int($0) } ?? 8 << 20
    }

    @Test("two modules defining one method name refuse to start")
    func duplicateMethods() async throws {
        #expect(throws: DaemonStartError.self) {
            _ = try Daemon(
                configuration: .init(), modules: [TestModule(), ClashingModule()], logger: .init(label: "t"))
        }
    }

    @Test("a port that is in use is reported with the spec's line")
    func portInUse() async throws {
        try await withTestDaemon { daemon, port in
            do {
                try await withTestDaemon(configure: { $0.server.port = port }) { _, _ -> Void in
                    Issue.record("second daemon bound the same port")
                }
            } catch let error as DaemonStartError {
                #expect(error.description == "cannot listen on 127.0.0.1:\(port) (CBOR-RPC): Address already in use")
            }
        }
    }
}
