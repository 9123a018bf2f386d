import CBOR
import Foundation
import TestSupport
import Testing

/// What one CBOR-RPC connection can make the daemon hold (wire-protocol.md §3.3; docs/security.md): bounded by
/// `max_pending_response_bytes` and its second bound, whatever the size of the responses.
@Suite("Connection memory bounds")
struct ConnectionMemoryTests {
    /// The daemon's resident memory, in bytes.
    static func residentBytes(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// The highest resident memory seen over `duration`, sampled every 50 ms.
    static func peakResidentBytes(_ pid: Int32, over duration: Duration) async -> Int {
        var peak = residentBytes(pid)
        let end = ContinuousClock.now + duration
        while ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(50))
            peak = max(peak, residentBytes(pid))
        }
        return peak
    }

    /// A spec whose data holds 1 MiB, so each `get_work_spec` answer is 1 MiB.
    static let blob = CBORValue.bytes([UInt8](repeating: 0x42, count: 1 << 20))

    /// The backends to run on: durable ones answer asynchronously, which is where responses piled up.
    static let backends = ["memory", "sqlite", "postgres"].filter(TestBackends.enabled)

    @Test(
        "a client that pipelines 1 MiB answers and never reads them holds a few MiB, and can still read them all",
        arguments: backends)
    func slowReader(storage: String) async throws {
        try await withDaemon(storage: storage, arguments: ["-q"]) { daemon in
            let setup = try await daemon.connect()
            _ = try await setup.result("set_work_spec", [.map(CBORMap([("name", "big"), ("blob", Self.blob)]))])
            let before = Self.residentBytes(daemon.child.pid)
            let reader = try await daemon.connect(receiveTimeout: 60)
            let count = 500
            var requests: [UInt8] = []
            for _ in 0..<count { requests += reader.request("get_work_spec", ["big"]) }
            try await reader.send(requests)
            // 500 MiB of answers would be held without a bound; watch for a while with nothing read.
            let peak = await Self.peakResidentBytes(daemon.child.pid, over: .seconds(3))
            #expect(peak - before < 96 << 20, "the daemon grew by \(peak - before) bytes")
            // Back-pressure, not loss: every answer arrives once the client reads.
            for index in 0..<count {
                let response = try #require(try await reader.receiveValue()?.mapValue, "response \(index)")
                #expect(response["result"]?.mapValue?["blob"] == Self.blob)
            }
        }
    }

    @Test(
        "a batch of 1 000 requests with 1 MiB answers is refused at the second bound, not materialised",
        arguments: backends)
    func batchAmplification(storage: String) async throws {
        try await withDaemon(storage: storage, arguments: ["-q"]) { daemon in
            let setup = try await daemon.connect()
            _ = try await setup.result("set_work_spec", [.map(CBORMap([("name", "big"), ("blob", Self.blob)]))])
            let before = Self.residentBytes(daemon.child.pid)
            let batcher = try await daemon.connect(receiveTimeout: 60)
            let batch = CBORValue.array(
                (0..<1000).map { index in
                    .map(CBORMap([("id", .int(index)), ("method", .bytes("get_work_spec")), ("params", ["big"])]))
                })
            try await batcher.send(CBOREncoder.encodeEnvelope(batch))
            let closed = Task { await batcher.closedByPeer() }
            let peak = await Self.peakResidentBytes(daemon.child.pid, over: .seconds(3))
            #expect(await closed.value, "the connection stays open")
            #expect(peak - before < 96 << 20, "the daemon grew by \(peak - before) bytes")
            #expect(await daemon.child.waitForStderr(containing: "the responses to a batch of 1000 requests exceed"))
            // Other connections, and small batches, are served as before.
            let small = CBORValue.array(
                (0..<3).map { index in
                    .map(CBORMap([("id", .int(index)), ("method", .bytes("list_work_specs")), ("params", [[:]])]))
                })
            try await setup.send(CBOREncoder.encodeEnvelope(small))
            #expect(try await setup.receiveValue()?.listElements?.count == 3)
        }
    }
}
