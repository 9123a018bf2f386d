import CBOR
import Foundation

/// The write-heavy workload of the kill -9 durability cases (storage.md §7.3 DUR-1) and its bookkeeping: each
/// client adds units three at a time and finishes the first of each call, recording what the daemon
/// acknowledged, until its connection breaks (the daemon was killed). ``problems(port:)`` then checks a
/// restarted daemon: every acknowledged change present, no call half-applied.
public struct DurabilityLedger: Sendable {
    public private(set) var acknowledgedAdds: Set<String> = []
    public private(set) var acknowledgedFinishes: Set<String> = []
    public private(set) var attemptedCalls: [String: [String]] = [:]
    public let spec: String

    public init(spec: String = "s") { self.spec = spec }

    /// Runs `clients` concurrent clients against the daemon on `port` until each one's connection fails.
    public mutating func run(round: Int, clients: Int, port: Int) async throws {
        let spec = self.spec
        let results = try await concurrently(clients) { client -> ([String], [String], [String: [String]]) in
            let connection = try await RawConnection(port: port, receiveTimeout: 5)
            var added: [String] = []
            var finished: [String] = []
            var calls: [String: [String]] = [:]
            for call in 0..<1_000_000 {
                let callName = "r\(round)-c\(client)-n\(call)"
                let keys = (0..<3).map { "\(callName)-\($0)" }
                calls[callName] = keys
                let items = CBORValue.array(
                    keys.map { .tuple([.bytes($0), .map(CBORMap([(.text("call"), .bytes(callName))]))]) })
                guard (try? await connection.result("add_work_units", [.text(spec), items])) == .tuple([true, .null])
                else {
                    break
                }
                added += keys
                let finish = try? await connection.result(
                    "update_work_unit", [.text(spec), .bytes(keys[0]), .map(CBORMap([(.text("status"), 4)]))])
                guard finish == .tuple([true, .null]) else { break }
                finished.append(keys[0])
            }
            return (added, finished, calls)
        }
        for (added, finished, calls) in results {
            acknowledgedAdds.formUnion(added)
            acknowledgedFinishes.formUnion(finished)
            attemptedCalls.merge(calls) { $1 }
        }
    }

    /// Kills `daemon` (SIGKILL) once the workload has stored `progress` more units than when this was called,
    /// `delay` after that — a kill point set by work done, not by how much work fits in a time on a loaded machine.
    /// After `patience` without that progress it kills anyway, and the caller's checks then say what is missing.
    public func kill(
        _ daemon: DaemonProcess, afterProgress progress: Int = 45, delay: Duration = .zero,
        patience: Duration = .seconds(60)
    ) async throws {
        let spec = self.spec
        let observer = try await RawConnection(port: daemon.port)
        func stored() async -> Int {
            let counts = try? await observer.result("count_work_units", [.text(spec)])
            return (counts?.listElements?.first?.mapValue?.pairs ?? []).reduce(0) { $0 + Int($1.value.int64Value ?? 0) }
        }
        let baseline = await stored()
        _ = await eventually(patience) { await stored() >= baseline + progress }
        try await Task.sleep(for: delay)
        await daemon.kill()
    }

    /// What is wrong with the daemon on `port` with respect to everything acknowledged so far.
    public func problems(port: Int) async throws -> [String] {
        let connection = try await RawConnection(port: port)
        var present: Set<String> = []
        var start: CBORValue = .null
        while true {
            let page = try await connection.result(
                "get_work_units", [.text(spec), .map(CBORMap([(.text("start"), start), (.text("limit"), 10000)]))])
            guard let list = page.listElements?.first?.listElements, !list.isEmpty else { break }
            for entry in list {
                guard let key = entry.listElements?.first?.stringOctets else { continue }
                present.insert(String(decoding: key, as: UTF8.self))
            }
            if list.count < 10000 { break }
            start = .bytes(list.last!.listElements![0].stringOctets! + [0])
        }
        var problems: [String] = []
        for key in acknowledgedAdds.sorted() where !present.contains(key) {
            problems.append("acknowledged add \(key) lost")
        }
        for (name, keys) in attemptedCalls.sorted(by: { $0.key < $1.key }) {
            let found = keys.filter { present.contains($0) }.count
            if found != 0 && found != keys.count {
                problems.append("call \(name) half-applied: \(found) of \(keys.count)")
            }
        }
        if !acknowledgedFinishes.isEmpty {
            let keys = acknowledgedFinishes.sorted()
            let status = try await connection.result(
                "get_work_unit_status", [.text(spec), .array(keys.map { .bytes($0) })])
            for (key, entry) in zip(keys, status.listElements?.first?.listElements ?? []) {
                if entry.mapValue?["status"] != 4 { problems.append("acknowledged finish of \(key) lost") }
            }
        }
        return problems
    }
}
