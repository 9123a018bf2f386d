import CBOR
import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// `GET /namespace/{ns}/export` (docs/operations.md "Export and import"): streamed from one storage snapshot.
@Suite("Export streaming")
struct ExportStreamTests {
    static let backends = ["memory", "sqlite", "postgres"].filter(TestBackends.enabled)

    /// 512 units of 128 KiB: 64 MiB of unit data.
    static let unitCount = 512
    static let blob = CBORValue.bytes([UInt8](repeating: 0x5a, count: 128 << 10))

    @Test(
        "an export is one snapshot, streamed in bounded memory; writers carry on; a reader that stalls is cut off",
        arguments: backends)
    func streamedExport(storage: String) async throws {
        let config = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    http_idle_timeout: 8\n", prefix: "coordinate-export")
        defer { try? FileManager.default.removeItem(atPath: config) }
        try await withRESTHarness(storage: storage, extra: ["--config", config]) { harness in
            let rpc = try await harness.daemon.connect(receiveTimeout: 120)
            _ = try await rpc.result("set_work_spec", [.map(CBORMap([("name", "big")]))])
            for batch in 0..<(Self.unitCount / 32) {
                let units = (0..<32).map { index -> CBORValue in
                    [
                        .bytes(Array(String(format: "u%04d", batch * 32 + index).utf8)),
                        .map(CBORMap([("blob", Self.blob)])),
                    ]
                }
                _ = try await rpc.result("add_work_units", ["big", .array(units)])
            }
            let pid = harness.daemon.child.pid
            let before = ResidentMemory.bytes(of: pid)
            let request = Array("GET /namespace/-/export HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
            let reader = try await RawConnection(port: harness.http.port, receiveTimeout: 60)
            let staller = try await RawConnection(port: harness.http.port, receiveTimeout: 60)
            try await reader.send(request)
            try await staller.send(request)
            let stalledSince = ContinuousClock.now

            // Neither client reads yet. The daemon holds a page and what the sockets buffer, not the export.
            let peak = await ResidentMemory.peak(of: pid, over: .seconds(2))
            let data = Self.unitCount * (128 << 10)
            // The memory backend's snapshot is one read: its records are copied out once (docs/operations.md).
            // Durable backends: what two exports in progress hold, whatever the size of the namespace (measured
            // 27–37 MiB with 32 and with 64 MiB of data: pages, serialised lines, malloc arenas), below the size of
            // the export itself. Materialising the export grew the daemon by several times the data.
            let bound = storage == "memory" ? data + data / 2 + (48 << 20) : 48 << 20
            #expect(peak - before < bound, "the daemon grew by \(peak - before) bytes on \(storage)")

            // Writers are not held up by the open exports.
            _ = try await rpc.result("add_work_units", ["big", [["late", .map(CBORMap())]]])
            #expect(
                try await rpc.result("update_work_unit", ["big", "u0000", .map(CBORMap([("status", 4)]))])
                    == .tuple([true, .null]))

            // The reader gets the state of the moment its export began: without the late unit, u0000 available.
            let (bytes, _) = await reader.receiveAll(timeout: .seconds(20), until: Array("\r\n0\r\n\r\n".utf8))
            let lines = try Self.exportLines(bytes)
            let units = lines.filter { $0["type"] == "work_unit" }
            #expect(lines.first?["type"] == "coordinate-export")
            #expect(units.count == Self.unitCount)
            #expect(
                units.map { $0["name"]?.stringValue ?? "" } == (0..<Self.unitCount).map { String(format: "u%04d", $0) })
            #expect(units.first?["state"] == "available")

            // The staller, which never read, is closed once its connection stayed unwritable for the idle timeout,
            // its export cut short (no final chunk), and the snapshot it held is released.
            try await Task.sleep(until: stalledSince + .seconds(11))
            let (partial, closed) = await staller.receiveAll(timeout: .seconds(20))
            #expect(closed)
            #expect(partial.count < bytes.count)
            #expect(!partial.suffix(5).elementsEqual(Array("0\r\n\r\n".utf8)))

            // An export begun now sees the writes.
            let after = try await harness.http.request("GET", "/namespace/-/export")
            #expect(after.status == 200)
            let fresh = try Self.lines(after.body).filter { $0["type"] == "work_unit" }
            #expect(fresh.count == Self.unitCount + 1)
            #expect(fresh.first { $0["name"] == "u0000" }?["state"] == "finished")
        }
    }

    /// The JSON lines of a raw HTTP/1.1 response with a chunked body.
    static func exportLines(_ response: [UInt8]) throws -> [JSONValue] {
        let separator = Array("\r\n\r\n".utf8)
        guard
            let headEnd = (0..<(response.count - 3)).first(where: { response[$0..<($0 + 4)].elementsEqual(separator) })
        else { throw DaemonFailure(description: "no response head") }
        let head = String(decoding: response[..<headEnd], as: UTF8.self).lowercased()
        guard head.hasPrefix("http/1.1 200"), head.contains("transfer-encoding: chunked") else {
            throw DaemonFailure(description: "unexpected head: \(head)")
        }
        var body: [UInt8] = []
        var index = headEnd + 4
        while true {
            guard
                let lineEnd = (index..<(response.count - 1)).first(where: {
                    response[$0] == 13 && response[$0 + 1] == 10
                }),
                let size = Int(String(decoding: response[index..<lineEnd], as: UTF8.self), radix: 16)
            else { throw DaemonFailure(description: "bad chunk at \(index)") }
            if size == 0 { break }
            body += response[(lineEnd + 2)..<(lineEnd + 2 + size)]
            index = lineEnd + 2 + size + 2
        }
        return try lines(body)
    }

    static func lines(_ body: [UInt8]) throws -> [JSONValue] {
        try body.split(separator: 10).map { try JSONValue.parse(Array($0)) }
    }
}
