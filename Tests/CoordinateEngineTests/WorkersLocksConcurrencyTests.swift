import CBOR
import CoordinateEngine
import Dispatch
import Locking
import Testing

/// Workers, locks and concurrency (E-WRK, E-LOCK, E-CONC).
@Suite("Workers, locks and concurrency")
struct WorkersLocksConcurrencyTests {
    func heartbeat(
        _ h: EngineHarness, _ id: String, parent: String? = nil, seconds: Double = 60, mode: CBORValue = "RUN"
    )
        async throws
    {
        let namespace = h.namespace
        try await h.run { tx in
            try tx.workerHeartbeat(
                namespace: namespace, worker: Identifier(bytes: id), mode: StoredValue(encoding: mode), data: .null,
                parent: parent.map { Identifier(bytes: $0) }, expiresIn: Time.duration(seconds: seconds))
        }
    }

    func live(_ h: EngineHarness) async throws -> [String] {
        let namespace = h.namespace
        return try await h.run { tx in try tx.liveWorkers(namespace: namespace).map(\.id.description) }
    }

    @Test("liveness is eager; unregister; retention purge; revival", arguments: BackendKind.allCases)
    func liveness(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend, configuration: EngineConfiguration(workerRetention: 100))
        try await heartbeat(h, "a", seconds: 10)
        try await heartbeat(h, "b", seconds: 100)
        #expect(try await live(h) == ["a", "b"])
        h.clock.advance(seconds: 10)
        #expect(try await live(h) == ["a", "b"])
        h.clock.advance(microseconds: 1)
        #expect(try await live(h) == ["b"])
        let namespace = h.namespace
        #expect(try await h.run { tx in try tx.workerUnregister(namespace: namespace, worker: Identifier(bytes: "b")) })
        #expect(
            try await h.run { tx in try tx.workerUnregister(namespace: namespace, worker: Identifier(bytes: "b")) }
                == false)
        #expect(try await live(h).isEmpty)
        // Inactive records are kept until the retention passes.
        #expect(try await h.run { tx in try tx.allWorkers(namespace: namespace).count } == 2)
        h.clock.advance(seconds: 101)
        #expect(try await h.run { tx in try tx.purgeInactiveWorkers() } == 2)
        #expect(try await h.run { tx in try tx.allWorkers(namespace: namespace).count } == 0)
        try await heartbeat(h, "a")
        #expect(try await live(h) == ["a"])
    }

    @Test(
        "parents and children; changing a parent; held units across expiry and re-grant",
        arguments: BackendKind.allCases)
    func children(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await heartbeat(h, "p")
        try await heartbeat(h, "c1", parent: "p")
        try await heartbeat(h, "c2", parent: "q")
        let namespace = h.namespace
        func held(_ parent: String) async throws -> [String: [HeldUnit]] {
            try await h.run { tx in
                var result: [String: [HeldUnit]] = [:]
                for (child, units) in try tx.childWorkUnits(namespace: namespace, parent: Identifier(bytes: parent)) {
                    result[child.id.description] = units
                }
                return result
            }
        }
        #expect(try await held("p").mapValues(\.count) == ["c1": 0])
        try await heartbeat(h, "c2", parent: "p")
        #expect(try await held("p").keys.sorted() == ["c1", "c2"])
        #expect(try await held("q").isEmpty)

        try await h.spec("s")
        try await h.add("s", ["u"])
        _ = try await h.getWork("c1", lease: 3)
        var entries = try await held("p")
        #expect(entries["c1"]?.first?.holder == Identifier(bytes: "c1"))
        // After expiry, the child is still named, with the past deadline.
        h.clock.advance(seconds: 3.1)
        entries = try await held("p")
        #expect(entries["c1"]?.first?.holder == Identifier(bytes: "c1"))
        #expect((entries["c1"]?.first?.expires ?? .max) < h.now)
        #expect(try await h.counts("s").ready == 1)
        // After a re-grant to another worker, the holder is that worker.
        _ = try await h.getWork("other", lease: 60)
        entries = try await h.run { tx in
            Dictionary(
                uniqueKeysWithValues: try tx.childWorkUnits(namespace: namespace, parent: Identifier(bytes: "p")).map {
                    ($0.0.id.description, $0.1)
                })
        }
        #expect(entries["c1"]?.first?.holder == Identifier(bytes: "other"))
        // Finished units are gone; released units have no holder.
        try await h.finish("s", "u")
        #expect(try await held("p")["c1"]?.isEmpty == true)
        try await h.add("s", ["v"])
        _ = try await h.getWork("c2")
        try await h.update("s", "v", status: 1)
        entries = try await held("p")
        #expect(entries["c2"]?.first?.holder == nil && entries["c2"]?.first?.expires == nil)
    }

    @Test(
        "locks: prefixes, descendants, all-or-nothing, renew, unlock, expiry, listing", arguments: BackendKind.allCases)
    func locks(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        let namespace = h.namespace
        let l1 = Identifier(bytes: "L1")
        let l2 = Identifier(bytes: "L2")
        #expect(
            try await h.run { tx in
                try tx.lock(
                    namespace: namespace, owner: l1, timeout: 0, paths: [.tuple(["foo"]), .tuple(["bar", "baz"])])
            } == .ok)
        #expect(
            try await h.run { tx in try tx.lock(namespace: namespace, owner: l2, timeout: 30, paths: [["foo", "x"]]) }
                == .notLockable(index: 0))
        #expect(
            try await h.run { tx in try tx.lock(namespace: namespace, owner: l2, timeout: 30, paths: [["bar"]]) }
                == .notLockable(index: 0))
        #expect(
            try await h.run { tx in try tx.lock(namespace: namespace, owner: l1, timeout: 30, paths: [["foo"]]) }
                == .notLockable(index: 0))
        #expect(
            try await h.run { tx in
                try tx.lockSome(namespace: namespace, owner: l2, timeout: 30, paths: [["foo"], ["qux"], ["qux", 1]])
            } == [false, true, false])
        #expect(
            try await h.run { tx in
                try tx.readLocks(namespace: namespace, paths: [["foo"], ["bar"], [.text("bar"), .text("baz")]])
            } == [l1, nil, l1])
        #expect(
            try await h.run { tx in try tx.unlock(namespace: namespace, owner: l2, paths: [["foo"]]) }
                == .heldBy(index: 0, owner: l1))
        #expect(
            try await h.run { tx in
                try tx.renewLocks(namespace: namespace, owner: l1, timeout: 120, paths: [["foo"], ["nothere"]])
            } == .notHeld(index: 1))
        // Value equality: an integral float label equals the integer.
        #expect(
            try await h.run { tx in try tx.readLocks(namespace: namespace, paths: [["qux"], [.float(1.0)]]) } == [
                l2, nil,
            ])
        let listed = try await h.run { tx in
            try tx.listLocks(namespace: namespace, prefix: nil).map { $0.path.decoded() }
        }
        #expect(listed.count == 3)
        #expect(try await h.run { tx in try tx.listLocks(namespace: namespace, prefix: "qux").count } == 1)
        #expect(try await h.run { tx in try tx.deleteLockNamespace(namespace: namespace, prefix: "qux") } == 1)
        // Default timeout 60 s; expiry is eager.
        h.clock.advance(seconds: 60)
        #expect(try await h.run { tx in try tx.listLocks(namespace: namespace, prefix: nil).count } == 2)
        h.clock.advance(microseconds: 1)
        #expect(try await h.run { tx in try tx.listLocks(namespace: namespace, prefix: nil).count } == 0)
        #expect(
            try await h.run { tx in try tx.lock(namespace: namespace, owner: l2, timeout: 5_000_000, paths: [["foo"]]) }
                == .ok)
        let deadline = try await h.run { tx in try tx.listLocks(namespace: namespace, prefix: nil).first?.deadline }
        #expect(deadline == h.now + 1_000_000 * 1_000_000)
    }

    /// Memory and SQLite serialize reads with writes, so only PostgreSQL can commit a write in the middle of a
    /// read; before reads ran at REPEATABLE READ, the Python fork worker's parent could see a child's unit
    /// half-finished (attempt finished, unit not) with no holder, and stop a child that had just taken new work.
    @Test(
        "a read sees one snapshot even when a write commits between its statements (a parent's view of its children)",
        arguments: BackendKind.allCases.filter { $0 == .postgres })
    func readSnapshot(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["u"])
        try await heartbeat(h, "p")
        try await heartbeat(h, "c", parent: "p")
        #expect(try await h.getWork("c").count == 1)
        let namespace = h.namespace
        let parent = Identifier(bytes: "p")
        let (before, during) = try await h.engine.perform(.read) { tx in
            let before = try tx.childWorkUnits(namespace: namespace, parent: parent).map(\.1)
            // The child finishes its unit through another connection; this read waits for the commit (on a
            // storage thread, not the cooperative pool).
            let committed = DispatchSemaphore(value: 0)
            let failure = Locked<String?>(nil)
            Task {
                do { try await h.finish("s", "u") } catch { failure.withLock { $0 = "\(error)" } }
                committed.signal()
            }
            committed.wait()
            if let failure = failure.withLock({ $0 }) { throw ConcurrentWriteFailed(description: failure) }
            return (before, try tx.childWorkUnits(namespace: namespace, parent: parent).map(\.1))
        }
        #expect(before.first?.first?.holder == Identifier(bytes: "c"))
        #expect(during == before, "one read, one state")
        // The next read sees the commit.
        let after = try await h.engine.perform(.read) { tx in
            try tx.childWorkUnits(namespace: namespace, parent: parent).map(\.1)
        }
        #expect(after == [[]])
    }

    @Test(
        "a live lock is never dropped: held through its deadline, renewals and re-locks outlive earlier deadlines",
        arguments: BackendKind.allCases)
    func liveLockKept(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        let namespace = h.namespace
        let me = Identifier(text: "me")
        let you = Identifier(text: "you")
        func owners() async throws -> [Identifier?] {
            try await h.run { tx in try tx.readLocks(namespace: namespace, paths: [["jobs", "a"], ["jobs", "b"]]) }
        }
        #expect(
            try await h.run { tx in try tx.lock(namespace: namespace, owner: me, timeout: 30, paths: [["jobs", "a"]]) }
                == .ok)
        // Busy around it: other owners' locks come and go, and their expiries pass.
        #expect(
            try await h.run { tx in
                try tx.lockSome(namespace: namespace, owner: you, timeout: 5, paths: [["jobs", "a"], ["jobs", "b"]])
            } == [false, true])
        h.clock.advance(seconds: 10)
        #expect(
            try await h.run { tx in
                try tx.renewLocks(namespace: namespace, owner: me, timeout: 120, paths: [["jobs", "a"]])
            } == .ok)
        // Past the first deadline (30 s) and the other lock's (5 s): only the renewed deadline counts.
        h.clock.advance(seconds: 25)
        #expect(try await owners() == [me, nil])
        // Released and taken again with a short timeout, then again with a long one: the short one's deadline
        // passing drops nothing.
        #expect(
            try await h.run { tx in try tx.unlock(namespace: namespace, owner: me, paths: [["jobs", "a"]]) } == .ok)
        #expect(
            try await h.run { tx in try tx.lock(namespace: namespace, owner: me, timeout: 2, paths: [["jobs", "a"]]) }
                == .ok)
        #expect(
            try await h.run { tx in
                try tx.renewLocks(namespace: namespace, owner: me, timeout: 60, paths: [["jobs", "a"]])
            } == .ok)
        h.clock.advance(seconds: 59)
        #expect(try await owners() == [me, nil])
        #expect(try await h.run { tx in try tx.listLocks(namespace: namespace, prefix: "jobs").map(\.owner) } == [me])
        h.clock.advance(seconds: 1)
        #expect(try await owners() == [me, nil], "held at its deadline")
        h.clock.advance(microseconds: 1)
        #expect(try await owners() == [nil, nil], "expired just after it")
    }

    @Test("E-CONC-1: concurrent workers never share a unit; every unit finishes once", arguments: BackendKind.allCases)
    func concurrentWorkers(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.addMany("s", count: 100)
        let finished = try await withThrowingTaskGroup(of: [String].self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    while let granted = try await h.getWork("w\(worker)").first {
                        mine.append(granted.unit.key.description)
                        try await h.finish("s", granted.unit.key.description)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(finished.count == 100)
        #expect(Set(finished).count == 100)
        #expect(try await h.counts("s").finished == 100)
    }

    @Test(
        "E-CONC-2 and E-CONC-3: concurrent adds of the same keys; max_running under concurrency",
        arguments: BackendKind.allCases)
    func concurrentAddsAndMaxRunning(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { try await h.add("s", (0..<1000).map { String(format: "unit%03d", $0) }) }
            }
            try await group.waitForAll()
        }
        #expect(try await h.counts("s").total == 1000)
        try await h.spec("m", [("max_running", 3)])
        try await h.addMany("m", count: 50)
        let grants = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<16 {
                group.addTask { try await h.getWork("w\(worker)", count: 2, names: ["m"]).count }
            }
            return try await group.reduce(0, +)
        }
        #expect(grants == 3)
        #expect(try await h.counts("m").pending == 3)
    }
}

struct ConcurrentWriteFailed: Error, CustomStringConvertible {
    let description: String
}
