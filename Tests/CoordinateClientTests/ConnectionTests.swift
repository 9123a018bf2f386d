import CBOR
import CoordinateClient
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A deliberately misbehaving peer: accepts one connection at a time and answers each request with whatever
/// `respond` returns (nothing, to stay silent). The real daemon never breaks the protocol, so these client
/// paths need a server that does. It serves on threads of its own (blocking sockets, never on the cooperative
/// pool).
final class ScriptedServer: @unchecked Sendable {
    // @unchecked Sendable: `listener` is fixed at init; the accept thread owns every accepted descriptor.
    let port: Int
    private let listener: Int32

    init(closeAfterRequest: Bool = false, respond: @escaping @Sendable (_ request: CBORMap) -> [UInt8]?) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        listen(descriptor, 16)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = descriptor
        Thread.detachNewThread {
            while true {
                let client = accept(descriptor, nil, nil)
                if client < 0 { return }
                Thread.detachNewThread { Self.serve(client, closeAfterRequest: closeAfterRequest, respond: respond) }
            }
        }
    }

    private static func serve(_ descriptor: Int32, closeAfterRequest: Bool, respond: @Sendable (CBORMap) -> [UInt8]?) {
        defer { close(descriptor) }
        var buffer: [UInt8] = []
        var framer = CBORStreamFramer(maxMessageBytes: 1 << 24, maxDepth: 100)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return }
            buffer += chunk[..<count]
            while !buffer.isEmpty, case .message(let length) = buffer.withUnsafeBytes({ framer.next(in: $0) }) {
                let message = Array(buffer[..<length])
                buffer.removeFirst(length)
                framer.reset()
                guard case .value(let value, _) = message.withUnsafeBytes({ CBORMessage.decode($0, maxDepth: 100) }),
                    let request = value.mapValue
                else { continue }
                let reply = respond(request)
                if closeAfterRequest { return }
                guard let reply else { continue }
                _ = reply.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
        }
    }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    static func response(id: CBORValue, result: CBORValue) -> [UInt8] {
        CBOREncoder.encodeEnvelope(.map(CBORMap([(.bytes("id"), id), (.bytes("result"), result)])))
    }
}

/// Connection handling: pipelining with id matching, retries, timeouts and protocol errors
/// (wire-protocol.md §12).
@Suite("Swift client connection")
struct ConnectionTests {
    @Test("500 concurrent calls pipelined on one client each get their own answer")
    func pipelining() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            for index in 0..<20 { try await client.setWorkSpec(["name": .text("spec\(index)"), "n": .int(index)]) }
            let answers = try await withThrowingTaskGroup(of: (Int, Int64?).self) { group in
                for call in 0..<500 {
                    group.addTask {
                        let spec = try await client.workSpec("spec\(call % 20)")
                        return (call, spec?["n"]?.int64Value)
                    }
                }
                var collected: [(Int, Int64?)] = []
                for try await answer in group { collected.append(answer) }
                return collected
            }
            #expect(answers.count == 500)
            for (call, n) in answers { #expect(n == Int64(call % 20)) }
        }
    }

    @Test("a daemon restarted mid-run: calls made while it is down are resent and succeed")
    func restartMidRun() async throws {
        // The memory backend answers as soon as it listens (SQLite answers `storage unavailable: initialising`
        // for its first milliseconds, an error response that is deliberately not retried).
        try await withDaemons { group in
            let first = try await group.start(arguments: ["-q"])
            let port = first.port
            let client = makeClient(port: port, retries: 8, base: 0.05)
            try await client.setWorkSpec(["name": "before"])
            await first.stop()
            // Calls made while the daemon is down wait in the retry loop until it is back.
            async let created: Void = client.setWorkSpec(["name": "during"])
            async let counted = client.countWorkUnits("during")
            try await Task.sleep(for: .milliseconds(300))
            _ = try await group.start(arguments: ["-q"], port: port)
            try await created
            // Pipelined behind the spec's creation, in order, on the new connection.
            #expect(try await counted == [:])
            #expect(try await client.allWorkSpecs().map { $0["name"] } == [.bytes("during")])
        }
    }

    @Test("no daemon: the call fails with a connection error naming the address")
    func noDaemon() async throws {
        try await withUnusedPort { port in
            let client = makeClient(port: port, retries: 2, base: 0.01)
            await #expect(
                throws: CoordinateClientError.connection("cannot connect to 127.0.0.1:\(port): Connection refused")
            ) {
                _ = try await client.now()
            }
        }
    }

    @Test("a connection closed before the answer is retried exactly `retries` times, resending the same bytes")
    func retryBudget() async throws {
        let requests = Counter()
        let seen = Mutex<[[UInt8]]>([])
        let server = try ScriptedServer(closeAfterRequest: true) { request in
            requests.increment()
            seen.withLock { $0.append(CBOREncoder.encode(.map(request))) }
            return nil
        }
        let client = makeClient(port: server.port, retries: 2, base: 0.01)
        await #expect(throws: CoordinateClientError.connection("connection closed by the server")) {
            _ = try await client.now()
        }
        #expect(requests.value == 3)  // the first attempt and two retries
        let sent = seen.withLock { $0 }
        #expect(Set(sent).count == 1)  // identical requests, same id
    }

    @Test("a response with another request's id fails every outstanding call and is not retried")
    func idMismatch() async throws {
        let requests = Counter()
        let server = try ScriptedServer { request in
            requests.increment()
            return ScriptedServer.response(id: .unsigned(999), result: .null)
        }
        let client = makeClient(port: server.port)
        await #expect(throws: CoordinateClientError.protocolViolation("response id 999 does not match request id 1")) {
            _ = try await client.now()
        }
        #expect(requests.value == 1)
        // The next call reconnects (ids keep counting).
        await #expect(throws: CoordinateClientError.protocolViolation("response id 999 does not match request id 2")) {
            _ = try await client.now()
        }
    }

    @Test("silence past the response timeout is a transport failure, retried, then reported")
    func responseTimeout() async throws {
        let requests = Counter()
        let server = try ScriptedServer { _ in
            requests.increment()
            return nil
        }
        let client = makeClient(port: server.port, retries: 1, base: 0.01, timeout: 0.2)
        await #expect(throws: CoordinateClientError.connection("no response within 0.2 s")) {
            _ = try await client.now()
        }
        #expect(requests.value == 2)  // the identical request was resent once
    }

    @Test("a response larger than max_response_bytes is a protocol error")
    func oversizedResponse() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let writer = makeClient(port: daemon.port)
            try await writer.setWorkSpec(["name": "s"])
            try await writer.addWorkUnits(
                "s", [WorkUnitSubmission(key: "big", data: ["blob": .bytes(Array(repeating: 1, count: 5000))])])
            var settings = ClientSettings(address: "127.0.0.1:\(daemon.port)")
            settings.maxResponseBytes = 1000
            let reader = CoordinateClient(settings: settings)
            await #expect(throws: CoordinateClientError.protocolViolation("response larger than max_response_bytes")) {
                _ = try await reader.workUnits("s")
            }
            #expect(try await reader.countWorkUnits("s") == [.available: 1])
        }
    }

    @Test("an error response is returned as is and not retried")
    func errorResponse() async throws {
        let requests = Counter()
        let server = try ScriptedServer { request in
            requests.increment()
            return CBOREncoder.encodeEnvelope(
                .map(
                    CBORMap([
                        (.bytes("id"), request["id"] ?? .null),
                        (.bytes("error"), .map(CBORMap([(.bytes("message"), .bytes("internal error: disk"))]))),
                    ])))
        }
        let client = makeClient(port: server.port)
        await #expect(throws: CoordinateClientError.server(message: "internal error: disk")) {
            _ = try await client.now()
        }
        #expect(requests.value == 1)
    }
}

/// A thread-safe counter for the scripted server's callbacks.
final class Counter: @unchecked Sendable {
    // @unchecked Sendable: every access goes through `lock`.
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
