import CBOR
import CoordinateEngine
import Synchronization
import TestSupport
import Testing

@testable import CoordinatePostgres

/// What an operation reads first is sent with BEGIN and the sweep (``StorageReadHint``): one round trip less,
/// and never a different answer.
@Suite("PostgreSQL reads sent ahead", .enabled(if: TestPostgres.available))
struct ReadAheadTests {
    let namespace = Identifier(text: "")
    let specName = Identifier(bytes: "ahead")

    private func setSpec(_ engine: Engine, priority: Int = 0) async throws {
        let (namespace, name) = (self.namespace, self.specName)
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(
                namespace: namespace,
                data: CBORMap([(.bytes("name"), .bytes(name.octets)), (.bytes("priority"), .int(Int64(priority)))]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: name,
                UnitItemBatch(["a", "b", "c"].map { UnitItem(key: Identifier(bytes: $0), data: .emptyMap) }))
        }
    }

    /// An empty spec "blocker", whose row a test holds locked so that the writes submitted behind it queue up and
    /// run as one batch (``submitBehindHeldSpecRow(_:schema:heldSpec:_:)``).
    private func setBlockerSpec(_ engine: Engine) async throws {
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes("blocker"))]))
        }
    }

    private func getWork(_ engine: Engine) async throws -> [String] {
        let namespace = self.namespace
        let request = WorkRequest(
            worker: Identifier(bytes: "w"), count: 1, lease: 60_000_000, filter: Scheduler.Filter())
        return try await engine.perform(.write, readingFirst: .grant(namespace: namespace, count: 1)) { tx in
            try tx.getWork(namespace: namespace, request).map { String(decoding: $0.unit.key.octets, as: UTF8.self) }
        }
    }

    /// A `get_work` for one unit in a batch (``submitTogether(_:_:)``), which hands the keys it granted to `record`.
    private func grantRecordingKeys(_ record: @escaping @Sendable ([String]) -> Void) -> TestWrite {
        let namespace = self.namespace
        let request = WorkRequest(worker: Identifier(bytes: "w"), count: 1, lease: 60_000_000, filter: .init())
        return (
            .grant(namespace: namespace, count: 1),
            { tx in
                let keys = try tx.getWork(namespace: namespace, request).map {
                    String(decoding: $0.unit.key.octets, as: UTF8.self)
                }
                record(keys)
            }
        )
    }

    private func finish(
        _ engine: Engine, _ key: String, hinting hinted: String? = nil
    ) async throws
        -> UnitUpdateOutcome
    {
        let (namespace, spec) = (self.namespace, self.specName)
        let hint = StorageReadHint.unit(namespace: namespace, spec: spec, key: Identifier(bytes: hinted ?? key))
        return try await engine.perform(.write, readingFirst: hint) { tx in
            try tx.updateWorkUnit(namespace: namespace, spec: spec, key: Identifier(bytes: key), UnitUpdate(status: 4))
        }
    }

    @Test("once the names are known, the first read travels with BEGIN and answers as a read of its own would")
    func firstReadIsUsed() async throws {
        let backend = try await makeTestBackend(label: "read-ahead-test")
        let engine = Engine(backend: backend)
        try await setSpec(engine)
        var granted: [String] = []
        for _ in 0..<3 {
            let keys = try await getWork(engine)
            #expect(keys.count == 1)
            granted += keys
            #expect(try await finish(engine, keys[0]) == .applied)
        }
        #expect(granted == ["a", "b", "c"], "units in order, each once")
        let afterCycles = backend.batchStatistics
        #expect(afterCycles.readsAhead >= 7, "every operation after the first had its names cached")
        #expect(afterCycles.readsAheadUsed == afterCycles.readsAhead)
        #expect(afterCycles.grantsFromReserve == 2, "the second and third grant's lock and unit came with BEGIN")

        // With nothing left, the spec list read ahead is used; the grant sent for the spec of the last one finds
        // nothing to take and goes unused.
        #expect(try await getWork(engine).isEmpty)
        let statistics = backend.batchStatistics
        #expect(statistics.readsAhead == afterCycles.readsAhead + 2)
        #expect(statistics.readsAheadUsed == afterCycles.readsAheadUsed + 1)

        // A read sent for another unit than the operation reads is not used, and changes nothing.
        #expect(try await finish(engine, "a", hinting: "b") == .applied)
        #expect(backend.batchStatistics.readsAhead == statistics.readsAhead + 1)
        #expect(backend.batchStatistics.readsAheadUsed == statistics.readsAheadUsed)
        #expect(backend.batchStatistics.grantsFromReserve == 2)
        await backend.close()
    }

    @Test("once the names are known, get_work and finish keep no pool thread waiting; a read operation does")
    func cycleKeepsNoThreadWaiting() async throws {
        let backend = try await makeTestBackend(label: "thread-waits-test")
        let engine = Engine(backend: backend)
        try await setSpec(engine)
        let warmUp = try await getWork(engine)
        #expect(try await finish(engine, warmUp[0]) == .applied)
        let before = backend.batchStatistics.threadWaits
        for _ in 0..<2 {
            let keys = try await getWork(engine)
            #expect(keys.count == 1)
            #expect(try await finish(engine, keys[0]) == .applied)
        }
        #expect(backend.batchStatistics.threadWaits == before, "BEGIN, reads sent ahead and COMMIT: no thread waits")
        let (namespace, spec) = (self.namespace, self.specName)
        let counts = try await engine.perform(.read) { tx in try tx.countWorkUnits(namespace: namespace, spec: spec) }
        #expect(counts?.counts[.finished] == 3)
        #expect(backend.batchStatistics.threadWaits > before, "a read operation still waits on its thread")
        await backend.close()
    }

    @Test("a grant after other operations of its batch uses the spec list sent with BEGIN")
    func specListAheadForLaterGrant() async throws {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "later-grant-test")
        let engine = Engine(backend: backend)
        try await setSpec(engine)
        let (namespace, spec) = (self.namespace, self.specName)
        try await setBlockerSpec(engine)
        let first = try await getWork(engine)
        #expect(first == ["a"])
        let before = backend.batchStatistics
        let granted = Mutex<[String]>([])
        let operations: [TestWrite] = [
            addingOneUnit(namespace: namespace, spec: "blocker"),
            (
                .unit(namespace: namespace, spec: spec, key: Identifier(bytes: "a")),
                { tx in
                    _ = try tx.updateWorkUnit(
                        namespace: namespace, spec: spec, key: Identifier(bytes: "a"), UnitUpdate(status: 4))
                }
            ),
            grantRecordingKeys { keys in granted.withLock { $0 = keys } },
        ]
        // The add to "blocker" waits for its row; the operations behind it queue up and run as one batch.
        try await submitBehindHeldSpecRow(engine, schema: schema, heldSpec: "blocker", operations)
        #expect(granted.withLock { $0 } == ["b"])
        let after = backend.batchStatistics
        // The finish's unit, the grant's spec list, and its lock and units: each sent with BEGIN, each used.
        #expect(after.readsAhead - before.readsAhead == 3)
        #expect(after.readsAheadUsed - before.readsAheadUsed == 3)
        await backend.close()
    }

    private static func items(_ keys: [String], priority: Double) -> [UnitItem] {
        keys.map { UnitItem(key: Identifier(bytes: $0), data: .emptyMap, priority: priority) }
    }

    @Test(
        "a later grant's spec list sent with BEGIN gives way to what earlier operations of its batch did",
        arguments: ["a unit added ahead", "a spec created"])
    func specListAheadGivesWay(change: String) async throws {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "later-grant-stale-test")
        let engine = Engine(backend: backend)
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            for (name, keys, priority) in [("high", ["h1", "h2"], 1.0), ("low", ["l1"], 0.0), ("blocker", [], 0.0)] {
                _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes(name))]))
                _ = try tx.addWorkUnits(
                    namespace: namespace, spec: Identifier(bytes: name),
                    UnitItemBatch(Self.items(keys, priority: priority)))
            }
        }
        let warmUp = try await getWork(engine)
        #expect(warmUp == ["h1"], "the best unit's spec (its names now cached, its spec the last granted from)")
        let granted = Mutex<[String]>([])
        // Either adds a unit of priority 5, above every other, to an existing spec or to a spec it creates.
        let target = change == "a spec created" ? "new" : "low"
        let earlier: @Sendable (inout EngineTransaction) throws -> Void = { tx in
            if target == "new" {
                _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes("new"))]))
            }
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: target),
                UnitItemBatch(Self.items(["n1"], priority: 5)))
        }
        let operations: [TestWrite] = [
            addingOneUnit(namespace: namespace, spec: "blocker"),
            (nil, earlier),
            grantRecordingKeys { keys in granted.withLock { $0 = keys } },
        ]
        // The add to "blocker" waits for its row; the operations behind it queue up and run as one batch.
        try await submitBehindHeldSpecRow(engine, schema: schema, heldSpec: "blocker", operations)
        #expect(granted.withLock { $0 } == ["n1"], "the unit of priority 5 the batch added before the grant")
        await backend.close()
    }

    @Test("a heartbeat reads its worker with BEGIN and waits for nothing; one an earlier operation wrote is read again")
    func heartbeatReadsAhead() async throws {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "heartbeat-test")
        let engine = Engine(backend: backend)
        let namespace = self.namespace
        try await setBlockerSpec(engine)
        @Sendable func heartbeat(_ tx: inout EngineTransaction, _ id: String) throws {
            try tx.workerHeartbeat(
                namespace: namespace, worker: Identifier(bytes: id), mode: .emptyMap, data: .emptyMap, parent: nil,
                expiresIn: 60_000_000)
        }
        let hint = { (id: String) in StorageReadHint.worker(namespace: namespace, id: Identifier(bytes: id)) }
        try await engine.perform(.write, readingFirst: hint("w1")) { tx in try heartbeat(&tx, "w1") }
        let before = backend.batchStatistics
        try await engine.perform(.write, readingFirst: hint("w1")) { tx in try heartbeat(&tx, "w1") }
        let lone = backend.batchStatistics
        #expect(lone.threadWaits == before.threadWaits, "the read came with BEGIN, the write went with COMMIT")
        #expect(lone.readsAheadUsed == before.readsAheadUsed + 1)

        // Two heartbeats of one worker in one batch: the second's read, sent before the first wrote, is not used.
        let operations: [TestWrite] = [
            addingOneUnit(namespace: namespace, spec: "blocker"),
            (hint("w2"), { tx in try heartbeat(&tx, "w2") }),
            (hint("w2"), { tx in try heartbeat(&tx, "w2") }),
        ]
        // The add to "blocker" waits for its row; the operations behind it queue up and run as one batch.
        try await submitBehindHeldSpecRow(engine, schema: schema, heldSpec: "blocker", operations)
        let after = backend.batchStatistics
        #expect(after.readsAhead - lone.readsAhead == 2)
        #expect(after.readsAheadUsed - lone.readsAheadUsed == 1, "the first heartbeat's read only")
        let workers = try await engine.perform(.read) { tx in try tx.liveWorkers(namespace: namespace) }
        #expect(workers.map { String(decoding: $0.id.octets, as: UTF8.self) } == ["w1", "w2"])
        await backend.close()
    }

    @Test("a read sent for ids another daemon has since replaced is not used: the operation sees the new spec")
    func staleIdsAreNotUsed() async throws {
        let schema = TestPostgres.freshSchema()
        let first = try await makeTestBackend(schema: schema, label: "read-ahead-test")
        let second = try await makeTestBackend(schema: schema, label: "read-ahead-test")
        let engine = Engine(backend: first)
        let other = Engine(backend: second)
        try await setSpec(engine)
        #expect(try await getWork(engine) == ["a"])
        #expect(try await finish(engine, "a") == .applied)

        // Through the other daemon: the spec is deleted and made again, with new units under a new id.
        let (namespace, name) = (self.namespace, self.specName)
        _ = try await other.perform(.write) { tx in try tx.deleteWorkSpec(namespace: namespace, named: name) }
        try await setSpec(other)

        // The first daemon still knows the old spec's id and reads unit a under it ahead; the operation, which
        // finds the new spec, reads the new unit a itself (available, so finishing it records a zero-length
        // attempt) and the next unit granted is b.
        let before = first.batchStatistics
        #expect(try await finish(engine, "a") == .applied)
        #expect(first.batchStatistics.readsAhead == before.readsAhead + 1)
        #expect(first.batchStatistics.readsAheadUsed == before.readsAheadUsed, "the read under the old id went unused")
        #expect(try await getWork(engine) == ["b"])
        await first.close()
        await second.close()
    }

    @Test("in a batch, each operation's unit is read ahead; one an earlier operation wrote is read again")
    func batchReadsAhead() async throws {
        let backend = try await makeTestBackend(label: "read-ahead-test")
        #expect(backend.writeRunners == 1, "writes submitted together queue behind the one runner")
        let engine = Engine(backend: backend)
        try await setSpec(engine)
        #expect(try await getWork(engine) == ["a"])
        let (namespace, spec) = (self.namespace, self.specName)
        func update(
            _ key: String, _ update: UnitUpdate
        ) -> (
            StorageReadHint?, @Sendable (inout EngineTransaction) throws -> Void
        ) {
            let unitKey = Identifier(bytes: key)
            return (
                .unit(namespace: namespace, spec: spec, key: unitKey),
                { tx in
                    let outcome = try tx.updateWorkUnit(namespace: namespace, spec: spec, key: unitKey, update)
                    guard outcome == .applied else { throw StorageError.corrupt("\(key): \(outcome)") }
                }
            )
        }
        let before = backend.batchStatistics
        // The first runs alone; the other three queue behind it and share one transaction. In that batch, a is
        // finished, then made pending for its worker: the second operation must see a finished and grant it anew (a
        // second attempt), not the pending a read ahead before the first wrote it (which it would merely renew).
        let results = await submitTogether(
            engine,
            [
                update("c", UnitUpdate(status: 4)), update("a", UnitUpdate(status: 4)),
                update("a", UnitUpdate(leaseSeconds: 100, status: 3, worker: Identifier(bytes: "w"))),
                update("b", UnitUpdate(status: 4)),
            ])
        for result in results { #expect(throws: Never.self) { try result.get() } }
        let after = backend.batchStatistics
        #expect(after.batches == before.batches + 1, "the last three shared a transaction")
        #expect(after.readsAhead == before.readsAhead + 4)
        #expect(after.readsAheadUsed == before.readsAheadUsed + 3, "a's second read was made again")
        let attempts = try await engine.perform(.read) { tx -> [String] in
            guard let unit = try tx.workUnit(namespace: namespace, spec: spec, key: Identifier(bytes: "a")) else {
                return []
            }
            return try tx.attempts(of: unit).map { String(decoding: $0.worker.octets, as: UTF8.self) }
        }
        #expect(attempts == ["w", "w"], "a was granted again, not renewed")
        await backend.close()
    }

    /// A spec "reserve" with units `keys`, all of priority 0.
    private func setReserveSpec(_ engine: Engine, keys: [String]) async throws {
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes("reserve"))]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: "reserve"),
                UnitItemBatch(keys.map { UnitItem(key: Identifier(bytes: $0), data: .emptyMap) }))
        }
    }

    /// The keys each operation of a test was granted, by its index.
    final class GrantLog: Sendable {
        let keys = Mutex<[Int: String]>([:])
    }

    /// A `get_work` of one unit that records the key it was granted at `index` of `granted`.
    private func grant(
        into granted: GrantLog, at index: Int
    ) -> TestWrite {
        let namespace = self.namespace
        let request = WorkRequest(worker: Identifier(bytes: "w"), count: 1, lease: 60_000_000, filter: .init())
        return (
            .grant(namespace: namespace, count: 1),
            { tx in
                let units = try tx.getWork(namespace: namespace, request)
                let keys = units.map { String(decoding: $0.unit.key.octets, as: UTF8.self) }
                granted.keys.withLock { $0[index] = keys.joined(separator: ",") }
            }
        )
    }

    /// An operation of a batch adding unit `key` to the spec "reserve".
    private func addReserveUnit(
        _ key: String
    ) -> TestWrite {
        let namespace = self.namespace
        return (
            nil,
            { tx in
                _ = try tx.addWorkUnits(
                    namespace: namespace, spec: Identifier(bytes: "reserve"),
                    UnitItemBatch([UnitItem(key: Identifier(bytes: key), data: .emptyMap)]))
            }
        )
    }

    @Test("the grants of one batch take their units from one read, in order; units left over are free after it")
    func batchGrantsShareOneRead() async throws {
        let backend = try await makeTestBackend(label: "grant-reserve-test")
        let engine = Engine(backend: backend)
        try await setReserveSpec(engine, keys: ["a", "b", "c", "d", "e", "f", "g", "h"])
        let granted = GrantLog()
        let before = backend.batchStatistics
        // The first runs alone; the other three share a transaction, which sends the lock and the units for all
        // three with BEGIN, for the spec the grant before them picked.
        let results = await submitTogether(engine, (0..<4).map { grant(into: granted, at: $0) })
        for result in results { #expect(throws: Never.self) { try result.get() } }
        #expect(granted.keys.withLock { $0 } == [0: "a", 1: "b", 2: "c", 3: "d"])
        let after = backend.batchStatistics
        #expect(after.batches == before.batches + 1)
        #expect(after.grantsFromReserve == before.grantsFromReserve + 3, "no grant of the batch read for itself")
        // The read locked one unit more than the batch took (sizes are powers of two); the commit released it.
        let next = await submitTogether(engine, [grant(into: granted, at: 4)])
        #expect(throws: Never.self) { try next[0].get() }
        #expect(granted.keys.withLock { $0[4] } == "e")
        await backend.close()
    }

    @Test("a unit a batch adds or makes ready ahead of the units its first grant read is granted first")
    func batchGrantsSeeTheirOwnWrites() async throws {
        let backend = try await makeTestBackend(label: "grant-reserve-test")
        let engine = Engine(backend: backend)
        try await setReserveSpec(engine, keys: ["b", "c", "d", "e", "f", "g", "h", "i"])
        let (namespace, spec) = (self.namespace, Identifier(bytes: "reserve"))
        let granted = GrantLog()
        let add = addReserveUnit("a")
        let retry: TestWrite = (
            .unit(namespace: namespace, spec: spec, key: Identifier(bytes: "b")),
            { tx in
                let outcome = try tx.updateWorkUnit(
                    namespace: namespace, spec: spec, key: Identifier(bytes: "b"), UnitUpdate(status: 1))
                guard outcome == .applied else { throw StorageError.corrupt("b: \(outcome)") }
            }
        )
        // The first runs alone (b); in the batch after it, the first grant reads c and d for both grants, then a
        // is added and b made available again: the second grant takes a, the third b, each before c.
        let results = await submitTogether(
            engine,
            [
                grant(into: granted, at: 0), grant(into: granted, at: 1), add, grant(into: granted, at: 3), retry,
                grant(into: granted, at: 5),
            ])
        for result in results { #expect(throws: Never.self) { try result.get() } }
        #expect(granted.keys.withLock { $0 } == [0: "b", 1: "c", 3: "a", 5: "b"])
        await backend.close()
    }

    @Test("the lock and units sent with BEGIN go unused when an operation before the grant adds a unit ahead of them")
    func speculativeGrantAfterAnAdd() async throws {
        let backend = try await makeTestBackend(label: "grant-reserve-test")
        let engine = Engine(backend: backend)
        try await setReserveSpec(engine, keys: ["b", "c", "d", "e"])
        let granted = GrantLog()
        let add = addReserveUnit("a")
        // The first runs alone (b); the batch after it reads c with BEGIN for its grant, then adds a.
        let results = await submitTogether(engine, [grant(into: granted, at: 0), add, grant(into: granted, at: 2)])
        for result in results { #expect(throws: Never.self) { try result.get() } }
        #expect(granted.keys.withLock { $0 } == [0: "b", 2: "a"])
        #expect(backend.batchStatistics.grantsFromReserve == 0)
        await backend.close()
    }

    @Test("grants later in a batch see what earlier operations did to the specs and priorities they read once")
    func laterGrantsSeeTheBatchesChanges() async throws {
        let backend = try await makeTestBackend(label: "grant-reserve-test")
        let engine = Engine(backend: backend)
        try await setReserveSpec(engine, keys: ["b", "c", "d", "e", "f", "g", "h", "i"])
        let (namespace, spec) = (self.namespace, Identifier(bytes: "reserve"))
        let granted = GrantLog()
        func operation(
            _ body: @escaping @Sendable (inout EngineTransaction) throws -> Void
        ) -> TestWrite {
            (nil, body)
        }
        let prioritize = operation { tx in
            _ = try tx.prioritizeWorkUnits(
                namespace: namespace, spec: spec, keys: [Identifier(bytes: "i")], priority: 5, adjustment: nil)
        }
        let other = Identifier(bytes: "urgent")
        let addUrgentSpec = operation { tx in
            _ = try tx.setWorkSpec(
                namespace: namespace,
                data: CBORMap([(.bytes("name"), .bytes(other.octets)), (.bytes("priority"), .int(10))]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: other,
                UnitItemBatch([UnitItem(key: Identifier(bytes: "u"), data: .emptyMap)]))
        }
        let pause = {
            var control = SpecControl()
            control.paused = true
            return control
        }()
        let pauseOther = operation { tx in
            _ = try tx.controlWorkSpec(namespace: namespace, named: other, pause)
        }
        let pauseFirst = operation { tx in
            _ = try tx.controlWorkSpec(namespace: namespace, named: spec, pause)
        }
        // The first runs alone (b). In the batch: c; then i is raised above the rest and taken next; a spec of
        // higher priority appears and is taken from; once it is paused the first spec goes on (d); once that is
        // paused too, nothing is granted.
        let results = await submitTogether(
            engine,
            [
                grant(into: granted, at: 0), grant(into: granted, at: 1), prioritize, grant(into: granted, at: 3),
                addUrgentSpec, grant(into: granted, at: 5), pauseOther, grant(into: granted, at: 7), pauseFirst,
                grant(into: granted, at: 9),
            ])
        for result in results { #expect(throws: Never.self) { try result.get() } }
        #expect(granted.keys.withLock { $0 } == [0: "b", 1: "c", 3: "i", 5: "u", 7: "d", 9: ""])
        #expect(backend.batchStatistics.batches == 1)
        await backend.close()
    }

    @Test("the best ready priority of the spec a grant's read was sent for comes from that read, and decides")
    func speculatedSpecsPriorityDecides() async throws {
        let backend = try await makeTestBackend(label: "grant-reserve-test")
        let engine = Engine(backend: backend)
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            for (name, keys, priority) in [("a", ["a1", "a2"], 5.0), ("b", ["b1", "b2"], 10.0)] {
                _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes(name))]))
                _ = try tx.addWorkUnits(
                    namespace: namespace, spec: Identifier(bytes: name),
                    UnitItemBatch(
                        keys.map { UnitItem(key: Identifier(bytes: $0), data: .emptyMap, priority: priority) }))
            }
        }
        let granted = GrantLog()
        // b's units come first by priority. The second grant's spec list leaves b's best priority to the read sent
        // with its BEGIN for b (the spec of the first grant); read there as 10, b wins again over a's 5.
        for index in 0..<4 {
            let results = await submitTogether(engine, [grant(into: granted, at: index)])
            #expect(throws: Never.self) { try results[0].get() }
        }
        #expect(granted.keys.withLock { $0 } == [0: "b1", 1: "b2", 2: "a1", 3: "a2"])
        #expect(backend.batchStatistics.grantsFromReserve >= 1)
        await backend.close()
    }
}
