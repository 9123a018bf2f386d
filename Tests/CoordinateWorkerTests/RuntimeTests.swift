import CBOR
import CoordinateClient
import CoordinateWorker
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

struct TaskFailure: Error, CustomStringConvertible {
    let description: String
}

/// Counts how often each key ran.
final class Executions: Sendable {
    private let counts = Mutex<[CBORValue: Int]>([:])
    func record(_ key: CBORValue) { counts.withLock { $0[key, default: 0] += 1 } }
    var snapshot: [CBORValue: Int] { counts.withLock { $0 } }
}

func quietLogger() -> Logger {
    var logger = Logger(label: "test-worker")
    logger.logLevel = .critical
    return logger
}

/// The worker runtime in process against a real daemon (README "Worker runtime and CLI behaviour").
@Suite("Worker runtime")
struct RuntimeTests {
    @Test("10 000 units with 16 concurrent tasks: throwing tasks fail, long tasks keep their lease by renewal")
    func tenThousandUnits() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            try await client.setWorkSpec(["name": "bulk"])
            let total = 10_000
            var units = (0..<total).map { WorkUnitSubmission(key: .text("u\($0)"), data: ["i": .int($0)]) }
            // Eight tasks run until the daemon shows their lease renewed (half a 10 s lease): only renewal keeps
            // them from being handed out again, and they end on that event, not after a guessed time.
            units += (0..<8).map { WorkUnitSubmission(key: .text("slow\($0)"), data: ["slow": true], priority: 100) }
            try await client.addWorkUnits("bulk", units)

            let executions = Executions()
            var registry = TaskRegistry()
            registry.register(spec: "bulk") { context in
                executions.record(context.key)
                if context.data.mapValue?["slow"] != nil {
                    func expiration() async throws -> Double? {
                        try await client.workUnitStatus("bulk", keys: [context.key]).first??.expiration
                    }
                    let granted = try await expiration()
                    while try await expiration() == granted { try await Task.sleep(for: .milliseconds(200)) }
                    return nil
                }
                let index = context.data.mapValue?["i"]?.int64Value ?? 0
                if index % 500 == 7 { throw TaskFailure(description: "unit \(index) is cursed") }
                return ["i": .int(index), "done": true]
            }
            let runtime = WorkerRuntime(
                client: client, registry: registry,
                options: WorkerOptions(workerID: "bulk-worker", concurrency: 16, pollInterval: 0.05, leaseSeconds: 10),
                logger: quietLogger())
            let running = Task { try await runtime.run() }
            let finishedAll = try await eventually(240) {
                let counts = try await client.countWorkUnits("bulk")
                return (counts[.finished] ?? 0) + (counts[.failed] ?? 0) == total + 8
            }
            #expect(finishedAll)
            runtime.stop()
            try await running.value

            let failures = total / 500
            #expect(try await client.countWorkUnits("bulk") == [.finished: total + 8 - failures, .failed: failures])
            // Every unit ran exactly once: no lease ran out under a running task.
            let counts = executions.snapshot
            #expect(counts.count == total + 8)
            #expect(counts.values.allSatisfy { $0 == 1 })
            let cursed = try #require(try await client.workUnitStatus("bulk", keys: ["u7"]).first ?? nil)
            #expect(cursed.status == .failed)
            let traceback = try #require(cursed.traceback?.stringValue)
            #expect(
                traceback.hasPrefix("TaskFailure: unit 7 is cursed\n  while running work unit 'u7' of work spec bulk"))
            // Finished units carry the data the task returned.
            #expect(try await client.workUnits("bulk", keys: ["u8"]).first?.data == ["i": 8, "done": true])
            // The workers unregistered on the way out.
            #expect(try await client.workerModes().isEmpty)
        }
    }

    @Test("a task past max_task_seconds is cancelled and its unit failed")
    func maxTaskSeconds() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            try await client.setWorkSpec(["name": "slow", "task": "sleepy"])
            try await client.addWorkUnits("slow", [WorkUnitSubmission(key: "u")])
            let cancelled = Mutex(false)
            var registry = TaskRegistry()
            // Matched through the spec's `task` key.
            registry.register(task: "sleepy") { _ in
                do {
                    try await Task.sleep(for: .seconds(60))
                } catch {
                    cancelled.withLock { $0 = true }
                    throw error
                }
                return nil
            }
            let runtime = WorkerRuntime(
                client: client, registry: registry,
                options: WorkerOptions(concurrency: 1, pollInterval: 0.05, maxTaskSeconds: 0.5), logger: quietLogger())
            let running = Task { try await runtime.run() }
            #expect(try await eventually { try await client.countWorkUnits("slow") == [.failed: 1] })
            runtime.stop()
            try await running.value
            #expect(cancelled.withLock { $0 })
            let status = try await client.workUnitStatus("slow", keys: ["u"]).first ?? nil
            #expect(status?.traceback == .text("task exceeded 0.5 s"))
        }
    }

    @Test("a lost lease cancels the task and reports nothing; children show the units they hold")
    func lostLease() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u", data: ["v": 1])])
            let started = Mutex(false)
            let cancelled = Mutex(false)
            var registry = TaskRegistry()
            registry.register(spec: "s") { _ in
                started.withLock { $0 = true }
                do {
                    try await Task.sleep(for: .seconds(60))
                } catch {
                    cancelled.withLock { $0 = true }
                    throw error
                }
                return nil
            }
            let runtime = WorkerRuntime(
                client: client, registry: registry,
                // Long enough that a loaded machine renews in time; short enough that the lost lease is noticed soon
                // (at the first renewal, after half of it).
                options: WorkerOptions(workerID: "w", concurrency: 2, pollInterval: 0.05, leaseSeconds: 8),
                logger: quietLogger())
            let running = Task { try await runtime.run() }
            #expect(await eventually { started.withLock { $0 } })
            let children = try await client.childWorkUnits(parent: "w")
            #expect(children.map(\.workerID) == [.text("w.0"), .text("w.1")])
            #expect(children.flatMap(\.units).map(\.key) == ["u"])
            // Someone else resets the unit and pauses the spec: the next renewal finds it no longer pending.
            try await client.pauseWorkSpec("s")
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u", data: ["v": 2])])
            #expect(await eventually { cancelled.withLock { $0 } })
            runtime.stop()
            try await running.value
            #expect(try await client.countWorkUnits("s") == [.available: 1])
            #expect(try await client.workUnits("s").first?.data == ["v": 2])
        }
    }

    @Test("stop: no new work, running tasks finish, a task outliving the drain is released")
    func drain() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            try await client.setWorkSpec(["name": "quick"])
            try await client.setWorkSpec(["name": "stuck"])
            try await client.addWorkUnits("quick", (0..<20).map { WorkUnitSubmission(key: .text("q\($0)")) })
            try await client.addWorkUnits("stuck", [WorkUnitSubmission(key: "forever", priority: 10)])
            try await client.controlWorkSpec("stuck", ["priority": 10])
            let running = Mutex(0)
            // Quick tasks wait for the test to open the gate, so which of them finish does not depend on timing.
            let gate = Mutex(false)
            var registry = TaskRegistry()
            registry.register(spec: "quick") { _ in
                running.withLock { $0 += 1 }
                while !gate.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                return nil
            }
            registry.register(spec: "stuck") { _ in
                running.withLock { $0 += 1 }
                try await Task.sleep(for: .seconds(60))
                return nil
            }
            let runtime = WorkerRuntime(
                client: client, registry: registry,
                options: WorkerOptions(workerID: "d", concurrency: 3, pollInterval: 0.05, drainSeconds: 1),
                logger: quietLogger())
            let task = Task { try await runtime.run() }
            #expect(await eventually { running.withLock { $0 } >= 3 })
            runtime.stop()
            gate.withLock { $0 = true }
            try await task.value
            let quick = try await client.countWorkUnits("quick")
            // The two quick tasks that were running finished; nothing new was taken.
            #expect(quick == [.finished: 2, .available: 18])
            // The stuck task outlived the 1 s drain: released, not failed.
            #expect(try await client.countWorkUnits("stuck") == [.available: 1])
            #expect(try await client.workerModes().isEmpty)
        }
    }
}
