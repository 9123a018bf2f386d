import ArgumentParser
import CBOR
import CoordinateEngine
import Foundation

/// The reference cycle driven straight against the engine API on one task: what the engine costs without the
/// network, for profiling.
struct EngineBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine", abstract: "get+finish cycles against the in-process engine (memory backend), no network."
    )

    @Option(help: "Queued units.")
    var units: Int = 100_000

    @Option(help: "Cycles to run.")
    var cycles: Int = 200_000

    func run() async throws {
        let engine = Engine(backend: MemoryBackend())
        let namespace = Identifier(text: "")
        let spec = Identifier(bytes: "bench")
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([("name", "bench")]))
        }
        var next = 0
        func refill(_ count: Int) async throws {
            let items = (next..<next + count).map {
                UnitItem(
                    key: Identifier(octets: ReferenceKeys.key($0), isText: false),
                    data: StoredValue(encoding: .map(CBORMap([("x", 1)]))))
            }
            next += count
            let loaded = items
            _ = try await engine.perform(.write) { tx in
                try tx.addWorkUnits(namespace: namespace, spec: spec, UnitItemBatch(loaded))
            }
        }
        let loadStart = ContinuousClock.now
        var loaded = 0
        while loaded < units {
            try await refill(min(10_000, units - loaded))
            loaded = next
        }
        let loadTime = seconds(ContinuousClock.now - loadStart)
        print(String(format: "engine bulk add: %.0f units/s", Double(units) / loadTime))
        let request = WorkRequest(
            worker: Identifier(bytes: "w"), count: 1, lease: 900_000_000, filter: Scheduler.Filter(runtimes: [[]]))
        // The completion-based API, as the RPC modules use it: with the memory backend the completion runs
        // before perform returns, so this loop measures the engine without any task switches.
        let slot = SyncSlot()
        let start = ContinuousClock.now
        for index in 0..<cycles {
            engine.perform(.write, { tx in try tx.getWork(namespace: namespace, request) }) { result in
                slot.key = (try? result.get())?.first?.unit.key
            }
            guard let key = slot.key else { break }
            engine.perform(
                .write,
                { tx in
                    try tx.updateWorkUnit(namespace: namespace, spec: spec, key: key, UnitUpdate(status: 4))
                }
            ) { _ in }
            if index % 10_000 == 9_999 { try await refill(10_000) }
        }
        let elapsed = seconds(ContinuousClock.now - start)
        print(
            String(
                format: "engine cycles: %.0f cycles/s (%.2f µs per cycle)", Double(cycles) / elapsed,
                elapsed / Double(cycles) * 1e6))
    }
}

/// Hands a synchronously completed result back to the benchmark loop.
final class SyncSlot: @unchecked Sendable {
    // @unchecked Sendable: written by a completion that runs synchronously on the loop's own thread.
    var key: Identifier?
}
