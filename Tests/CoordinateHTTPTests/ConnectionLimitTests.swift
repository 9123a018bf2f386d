import CBOR
import Foundation
import TestSupport
import Testing

/// The HTTP listener's limits (docs/security.md): connection count, header and idle timeouts, and `/healthz`
/// staying answerable under a slowloris attack.
@Suite("HTTP connection limits")
struct HTTPConnectionLimitTests {
    /// A configuration with small HTTP limits, for `withRESTHarness(extra:)`.
    static func tightLimits() throws -> String {
        try TestBuild.temporaryFile(
            """
            coordinate:
              server:
                http_max_connections: 8
                http_header_timeout: 3
                http_idle_timeout: 3

            """, prefix: "coordinate-http-limits")
    }

    @Test("slowloris: 20 connections trickling request heads neither fill the listener nor outlive the header timeout")
    func slowloris() async throws {
        let config = try Self.tightLimits()
        defer { try? FileManager.default.removeItem(atPath: config) }
        try await withRESTHarness(extra: ["--config", config]) { harness in
            let port = harness.http.port
            var slow: [RawConnection] = []
            for _ in 0..<20 {
                let connection = try await RawConnection(port: port, receiveTimeout: 30)
                // On a loaded machine the test may get to write after the server already closed the connection
                // (its header timeout ran out while the connect completed): that is the behaviour under test.
                try? await connection.send(Array("GET /namespace HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8))
                slow.append(connection)
            }
            // /healthz is answered: a new connection takes the place of the oldest one still waiting for its head.
            #expect(try await harness.http.request("GET", "/healthz").status == 200)
            // The trickling clients are closed — evicted or timed out — although they keep sending.
            let trickling = slow
            let trickle = Task {
                while !Task.isCancelled {
                    for connection in trickling { try? await connection.send(Array("x".utf8)) }
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            defer { trickle.cancel() }
            for connection in slow { #expect(await connection.closedByPeer()) }
            // A client that sends its head in time is served. (A connect that took longer than the header timeout
            // on a loaded machine does not count: try again.)
            var reply = ""
            var prompt: RawConnection?
            for _ in 0..<3 where !reply.hasPrefix("HTTP/1.1 200") {
                let started = ContinuousClock.now
                let attempt = try await RawConnection(port: port)
                do {
                    try await attempt.send(Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
                    reply = try await attempt.receiveRaw()
                } catch  where ContinuousClock.now - started >= .seconds(3) {
                    continue
                }
                prompt = attempt
            }
            #expect(reply.hasPrefix("HTTP/1.1 200"))
            guard let prompt else { return }
            // Then it idles: closed after the idle timeout.
            #expect(await prompt.closedByPeer())
        }
    }
}

/// What one REST request can make the daemon hold (docs/security.md).
@Suite("REST body memory bounds")
struct RESTBodyMemoryTests {
    @Test("a 57 MiB body is refused at http_max_body_bytes; one within it that parses into too much is refused too")
    func bodyAmplification() async throws {
        let config = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    http_max_body_bytes: 33554432\n", prefix: "coordinate-body")
        defer { try? FileManager.default.removeItem(atPath: config) }
        try await withRESTHarness(extra: ["--config", config]) { harness in
            let pid = harness.daemon.child.pid
            // Over the limit: refused from the length, without being parsed.
            let huge = [UInt8](repeating: 0x20, count: 57 << 20)
            let refused = try await harness.http.request(
                "POST", "/namespace", headers: [("Content-Type", "application/json")], body: huge)
            #expect(refused.status == 413)
            // Within it, but 15 million small numbers: ~360 MB of values once parsed.
            var numbers = [UInt8]("[".utf8)
            numbers.reserveCapacity(31 << 20)
            for _ in 0..<(15 << 20) { numbers += [0x31, 0x2c] }
            numbers[numbers.count - 1] = 0x5d
            let before = ResidentMemory.bytes(of: pid)
            let peak = Task { await ResidentMemory.peak(of: pid, over: .seconds(4)) }
            let parsed = try await harness.http.request(
                "POST", "/namespace/-/work_spec/none/add_work_units", headers: [("Content-Type", "application/json")],
                body: numbers)
            #expect(parsed.status == 413)
            #expect(parsed.text.contains("too large once parsed"))
            let growth = await peak.value - before
            #expect(growth < 4 * numbers.count, "the daemon grew by \(growth) bytes")
            #expect(try await harness.http.request("GET", "/healthz").status == 200)
        }
    }
}
