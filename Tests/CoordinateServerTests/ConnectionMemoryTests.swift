import CBOR
import Foundation
import TestSupport
import Testing

/// What one CBOR-RPC connection can make the daemon hold (wire-protocol.md §3.3; docs/security.md): bounded by
/// `max_pending_response_bytes` and its second bound, whatever the size of the responses.
@Suite("Connection memory bounds")
struct ConnectionMemoryTests {
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
            let before = ResidentMemory.bytes(of: daemon.child.pid)
            let reader = try await daemon.connect(receiveTimeout: 60)
            let count = 500
            var requests: [UInt8] = []
            for _ in 0..<count { requests += reader.request("get_work_spec", ["big"]) }
            try await reader.send(requests)
            // 500 MiB of answers would be held without a bound; watch for a while with nothing read.
            let peak = await ResidentMemory.peak(of: daemon.child.pid, over: .seconds(3))
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
            let before = ResidentMemory.bytes(of: daemon.child.pid)
            let batcher = try await daemon.connect(receiveTimeout: 60)
            let batch = CBORValue.array(
                (0..<1000).map { index in
                    .map(CBORMap([("id", .int(index)), ("method", .bytes("get_work_spec")), ("params", ["big"])]))
                })
            try await batcher.send(CBOREncoder.encodeEnvelope(batch))
            let closed = Task { await batcher.closedByPeer() }
            let peak = await ResidentMemory.peak(of: daemon.child.pid, over: .seconds(3))
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

@Suite("Decoding memory bounds")
struct DecodeMemoryTests {
    @Test("a 57 MiB message of small items is refused instead of decoded into gigabytes; the connection goes on")
    func decodeAmplification() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let connection = try await daemon.connect(receiveTimeout: 120)
            _ = try await connection.result("set_work_spec", [.map(CBORMap([("name", "s")]))])
            let before = ResidentMemory.bytes(of: daemon.child.pid)
            // 6.6 million 8-byte strings: 57 MiB of CBOR that would decode to ~500 MiB of values.
            let count = (57 << 20) / 9
            var encoder = CBOREncoder(reservingCapacity: 57 << 20)
            encoder.writeHead(major: 4, argument: UInt64(count))
            for index in 0..<count {
                encoder.writeHead(major: 2, argument: 8)
                encoder.bytes.append(contentsOf: String(format: "u%07d", index % 10_000_000).utf8)
            }
            let items = encoder.bytes
            let request = CBOREncoder.encodeEnvelope(
                .map(
                    CBORMap([
                        ("method", .bytes("add_work_units")),
                        ("params", [.bytes("s"), .encoded(CBOREncodedItem(uncheckedCanonicalBytes: items))]), ("id", 7),
                    ])))
            #expect(request.count > 56 << 20 && request.count < 64 << 20)
            try await connection.send(request)
            let peakTask = Task { await ResidentMemory.peak(of: daemon.child.pid, over: .seconds(5)) }
            let response = try #require(try await connection.receiveValue()?.mapValue)
            #expect(
                response.errorMessage == "malformed request: message too large once decoded; send fewer items per call")
            let peak = await peakTask.value
            #expect(peak - before < 4 * request.count, "the daemon grew by \(peak - before) bytes")
            // Nothing was added, and the connection still serves requests of ordinary size.
            #expect(try await connection.result("count_work_units", ["s"]) == .tuple([.map(CBORMap()), .null]))
            let units = (0..<100_000).map { CBORValue.array([.bytes(String(format: "u%07d", $0)), .map(CBORMap())]) }
            #expect(try await connection.result("add_work_units", ["s", .array(units)]) == .tuple([true, .null]))
        }
    }
}
