import CBOR
import CoordinateEngine
import Logging
import NIOPosix
import PostgresWire
import Synchronization
import TestSupport
import Testing

@testable import CoordinatePostgres

/// A flag one task sets and another polls.
private final class Flag: Sendable {
    private let value = Atomic(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// Writes that arrive together share one transaction (``PostgresBackend`` batches), and each still gets the
/// answer it would get alone.
@Suite("PostgreSQL write batches", .enabled(if: TestPostgres.available))
struct WriteBatchTests {
    struct Refused: Error, Equatable {
        let index: Int
    }

    let namespace = Identifier(text: "")
    let spec = Identifier(bytes: "batch")

    /// An engine over a fresh schema with a pool of two connections: one runs writes, so writes submitted
    /// together queue up behind it and form batches.
    private func makeEngine() async throws -> (Engine, PostgresBackend) {
        let backend = try await makeTestBackend(label: "write-batch-test")
        let engine = Engine(backend: backend)
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes("batch"))]))
        }
        #expect(backend.writeRunners == 1)
        return (engine, backend)
    }

    @Test("write transactions under way at once: postgres_write_transactions, at most half the pool")
    func writeRunnerCount() async throws {
        let url = try PostgresURL("postgres://nobody@127.0.0.1:1/none")
        var logger = Logger(label: "write-runners-test")
        logger.logLevel = .critical
        for (pool, configured, expected) in [(10, 2, 2), (10, 5, 5), (4, 5, 2), (2, 2, 1), (1, 3, 1)] {
            let backend = PostgresBackend(url: url, poolSize: pool, writeTransactions: configured, logger: logger)
            #expect(backend.writeRunners == expected, "pool \(pool), configured \(configured)")
            await backend.close()
        }
    }

    @Test("no thread waits for a write batch's BEGIN: with a pool of one, a read runs while a grant waits for a lock")
    func runnerWaitsWithoutAThread() async throws {
        var logger = Logger(label: "write-runner-test")
        logger.logLevel = .critical
        let schema = TestPostgres.freshSchema()
        let backend = PostgresBackend(
            url: try PostgresURL(try TestPostgres.url()), schema: schema, poolSize: 1, logger: logger)
        try await backend.initialize(now: { 0 })
        let engine = Engine(backend: backend)
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes("batch"))]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: "batch"),
                UnitItemBatch(["a", "b"].map { UnitItem(key: Identifier(bytes: $0), data: .emptyMap) }))
        }
        let request = WorkRequest(worker: Identifier(bytes: "w"), count: 1, lease: 60_000_000, filter: .init())
        func grant() async throws -> [String] {
            try await engine.perform(.write, readingFirst: .grant(namespace: namespace, count: 1)) { tx in
                try tx.getWork(namespace: namespace, request).map {
                    String(decoding: $0.unit.key.octets, as: UTF8.self)
                }
            }
        }
        #expect(try await grant() == ["a"])

        // Another transaction holds the spec's row exclusively: the next grant's lock, sent with its BEGIN for the
        // spec the first grant took from, waits for it.
        try await withSchemaConnection(schema) { other in
            _ = try await other.query("BEGIN")
            _ = try await other.query("SELECT 1 FROM work_spec FOR UPDATE")
            let waiting = Task { try await grant() }
            #expect(try await eventuallyBlocksAnother(other), "the grant waits for the row")
            // The pool's one thread is free meanwhile: a read runs (on a connection of its own) and answers. (Were
            // the thread waiting for the grant's BEGIN, the read would wait for the lock's release below.)
            let answered = Flag()
            let read = Task {
                let count = try await engine.perform(.read) { tx in
                    try tx.listWorkSpecs(namespace: namespace, start: nil, limit: nil).specs.count
                }
                answered.set()
                return count
            }
            let readAnswered = await eventually(.seconds(20)) { answered.isSet }
            #expect(readAnswered, "the read answered while the grant waited")
            _ = try await other.query("COMMIT")
            #expect(try await read.value == 1)
            #expect(try await waiting.value == ["b"])
        }
        await backend.close()
    }

    /// Submits every body at once (no awaiting between them) and returns each one's result in order.
    private func submitTogether(
        _ engine: Engine, _ bodies: [@Sendable (inout EngineTransaction) throws -> Void]
    ) async -> [Result<Void, any Error>] {
        await CoordinatePostgresTests.submitTogether(engine, bodies.map { (nil, $0) })
    }

    /// Expects the request at each index `refused` picks to have failed with its own ``Refused`` and every other
    /// one to have succeeded.
    private func expect(_ results: [Result<Void, any Error>], refusedAt refused: (Int) -> Bool) {
        for (index, result) in results.enumerated() {
            if refused(index) {
                #expect(throws: Refused(index: index)) { try result.get() }
            } else {
                #expect(throws: Never.self) { try result.get() }
            }
        }
    }

    /// A body adding one unit `key`.
    private func add(_ key: String) -> @Sendable (inout EngineTransaction) throws -> Void {
        let (namespace, spec) = (self.namespace, self.spec)
        return { tx in
            let outcome = try tx.addWorkUnits(
                namespace: namespace, spec: spec,
                UnitItemBatch([UnitItem(key: Identifier(bytes: key), data: .emptyMap)]))
            guard case .added = outcome else { throw Refused(index: -1) }
        }
    }

    private func keys(_ engine: Engine) async throws -> Set<String> {
        let (namespace, spec) = (self.namespace, self.spec)
        let units = try await engine.perform(.read) { tx in
            try tx.workUnits(namespace: namespace, spec: spec, buckets: nil, start: nil, limit: 10_000) ?? []
        }
        return Set(units.map { String(decoding: $0.key.octets, as: UTF8.self) })
    }

    @Test("writes submitted together commit in shared transactions; a refusal answers only its own request")
    func refusalsStayTheirOwn() async throws {
        let (engine, backend) = try await makeEngine()
        let bodies: [@Sendable (inout EngineTransaction) throws -> Void] = (0..<60).map { index in
            if index % 5 == 3 { return { _ in throw Refused(index: index) } }
            return add("u\(index)")
        }
        expect(await submitTogether(engine, bodies), refusedAt: { $0 % 5 == 3 })
        let stats = backend.batchStatistics
        #expect(stats.batches > 0)
        #expect(stats.batchedWrites > stats.batches)
        #expect(stats.isolatedBatches == 0)
        #expect(try await keys(engine) == Set((0..<60).filter { $0 % 5 != 3 }.map { "u\($0)" }))
        await backend.close()
    }

    @Test("a request that wrote and then failed undoes nothing of its neighbours and leaves nothing behind")
    func failureAfterWriteIsIsolated() async throws {
        let (engine, backend) = try await makeEngine()
        let bodies: [@Sendable (inout EngineTransaction) throws -> Void] = (0..<40).map { index in
            guard index % 8 == 5 else { return add("u\(index)") }
            let write = add("bad\(index)")
            return { tx in
                try write(&tx)
                throw Refused(index: index)
            }
        }
        expect(await submitTogether(engine, bodies), refusedAt: { $0 % 8 == 5 })
        #expect(backend.batchStatistics.isolatedBatches > 0)
        // The failed requests' units are gone with their transactions; everyone else's are there.
        #expect(try await keys(engine) == Set((0..<40).filter { $0 % 8 != 5 }.map { "u\($0)" }))
        await backend.close()
    }
}

/// Namespace and spec rows kept across transactions (``CatalogCache``) never let a daemon act on a row another
/// daemon has changed.
@Suite("PostgreSQL catalog cache", .enabled(if: TestPostgres.available))
struct CatalogCacheTests {
    let namespace = Identifier(text: "cache")
    let spec = Identifier(bytes: "s")

    private func backends() async throws -> (Engine, PostgresBackend, Engine) {
        let schema = TestPostgres.freshSchema()
        let first = try await makeTestBackend(schema: schema, label: "catalog-cache-test")
        let second = try await makeTestBackend(schema: schema, label: "catalog-cache-test")
        return (Engine(backend: first), first, Engine(backend: second))
    }

    private func specData(_ extra: Int64) -> CBORMap {
        CBORMap([(.bytes("name"), .bytes("s")), (.bytes("extra"), .unsigned(UInt64(extra)))])
    }

    @Test("a spec or namespace changed through another daemon is read afresh, not taken from the cache")
    func staleRowsAreNotUsed() async throws {
        let (cached, cachedBackend, other) = try await backends()
        let (namespace, spec) = (self.namespace, self.spec)
        let first = specData(1)
        try await other.perform(.write) { tx in _ = try tx.setWorkSpec(namespace: namespace, data: first) }
        // Twice: the first reads the rows and keeps them, the second finds them kept.
        for _ in 0..<2 {
            let data = try await cached.perform(.read) { tx in try tx.spec(namespace: namespace, named: spec)?.data }
            #expect(data?.decoded() == .map(first))
        }
        #expect(cachedBackend.catalog.namespace(named: namespace) != nil)
        let usesBefore = cachedBackend.catalog.uses
        #expect(usesBefore >= 1, "the second read used the kept rows")

        let second = specData(2)
        try await other.perform(.write) { tx in _ = try tx.setWorkSpec(namespace: namespace, data: second) }
        let seen = try await cached.perform(.read) { tx in try tx.spec(namespace: namespace, named: spec)?.data }
        #expect(seen?.decoded() == .map(second))

        // The namespace itself goes and comes back under a new id: units added through the cached daemon land
        // in the new one.
        _ = try await cached.perform(.read) { tx in try tx.spec(namespace: namespace, named: spec) }
        let third = specData(3)
        try await other.perform(.write) { tx in
            _ = try tx.deleteNamespace(namespace, keepRecord: false)
            _ = try tx.setWorkSpec(namespace: namespace, data: third)
        }
        let outcome = try await cached.perform(.write) { tx in
            try tx.addWorkUnits(
                namespace: namespace, spec: spec,
                UnitItemBatch([UnitItem(key: Identifier(bytes: "k"), data: .emptyMap)]))
        }
        #expect(outcome == .added(created: 1, reset: 0))
        let keys = try await other.perform(.read) { tx in
            try tx.workUnits(namespace: namespace, spec: spec, buckets: nil, start: nil, limit: 10)?.map(\.key)
        }
        #expect(keys == [Identifier(bytes: "k")])
        await cachedBackend.close()
        await other.backend.close()
    }
}

/// A transaction that meets a conflict with another one is retried after a pause, without a pool thread
/// sleeping through it.
@Suite("PostgreSQL conflict retries", .enabled(if: TestPostgres.available))
struct ConflictRetryTests {
    @Test("a spec another transaction created first is found on the retry and replaced, not reported as an error")
    func uniqueKeyRaceIsRetried() async throws {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "conflict-retry-test")
        let engine = Engine(backend: backend)
        let namespace = Identifier(text: "")
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes("first"))]))
        }

        // Another transaction creates the spec and stays open: the engine's insert of the same name waits for it,
        // then fails on the unique key when it commits, and the retry finds the spec and replaces its data.
        try await withSchemaConnection(schema) { other in
            _ = try await other.query("BEGIN")
            _ = try await other.query(
                """
                INSERT INTO work_spec (namespace_id, name, name_kind, data)
                SELECT id, '\\x72616365'::bytea, false, '\\xa0'::bytea FROM namespace
                """)
            let data = CBORMap([(.bytes("name"), .bytes("race")), (.bytes("x"), .unsigned(1))])
            let setting = Task {
                try await engine.perform(.write) { tx in try tx.setWorkSpec(namespace: namespace, data: data) }
            }
            #expect(try await eventuallyBlocksAnother(other), "the engine's insert waits for the open transaction")
            _ = try await other.query("COMMIT")
            #expect(try await setting.value == false, "the spec was there by then: replaced, not created")
            #expect(backend.batchStatistics.conflictRetries >= 1)
            let stored = try await engine.perform(.read) { tx in
                try tx.spec(namespace: namespace, named: Identifier(bytes: "race"))?.data.decoded()
            }
            #expect(stored == .map(data))
        }
        await backend.close()
    }
}
