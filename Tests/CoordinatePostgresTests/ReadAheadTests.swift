import CBOR
import CoordinateEngine
import Logging
import TestSupport
import Testing

@testable import CoordinatePostgres

/// What an operation reads first is sent with BEGIN and the sweep (``StorageReadHint``): one round trip less,
/// and never a different answer.
@Suite("PostgreSQL reads sent ahead", .enabled(if: TestPostgres.available))
struct ReadAheadTests {
    let namespace = Identifier(text: "")
    let specName = Identifier(bytes: "ahead")

    private func backend(schema: String) async throws -> PostgresBackend {
        var logger = Logger(label: "read-ahead-test")
        logger.logLevel = .critical
        let backend = PostgresBackend(
            url: try PostgresURL(try TestPostgres.url()), schema: schema, poolSize: 2, logger: logger)
        try await backend.initialize(now: { 0 })
        return backend
    }

    private func setSpec(_ engine: Engine, priority: Int = 0) async throws {
        let (namespace, name) = (self.namespace, self.specName)
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(
                namespace: namespace,
                data: CBORMap([(.bytes("name"), .bytes(name.octets)), (.bytes("priority"), .int(Int64(priority)))]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: name,
                items: .success(["a", "b", "c"].map { UnitItem(key: Identifier(bytes: $0), data: .emptyMap) }),
                itemCount: 3)
        }
    }

    private func getWork(_ engine: Engine) async throws -> [String] {
        let namespace = self.namespace
        let request = WorkRequest(
            worker: Identifier(bytes: "w"), count: 1, lease: 60_000_000, filter: Scheduler.Filter())
        return try await engine.perform(.write, readingFirst: .specs(namespace: namespace)) { tx in
            try tx.getWork(namespace: namespace, request).map { String(decoding: $0.unit.key.octets, as: UTF8.self) }
        }
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
        let backend = try await backend(schema: TestPostgres.freshSchema())
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
        #expect(try await getWork(engine).isEmpty)
        let statistics = backend.batchStatistics
        #expect(statistics.readsAhead >= 6, "every operation after the first had its names cached")
        #expect(statistics.readsAheadUsed == statistics.readsAhead)

        // A read sent for another unit than the operation reads is not used, and changes nothing.
        #expect(try await finish(engine, "a", hinting: "b") == .applied)
        #expect(backend.batchStatistics.readsAhead == statistics.readsAhead + 1)
        #expect(backend.batchStatistics.readsAheadUsed == statistics.readsAheadUsed)
        await backend.close()
    }

    @Test("a read sent for ids another daemon has since replaced is not used: the operation sees the new spec")
    func staleIdsAreNotUsed() async throws {
        let schema = TestPostgres.freshSchema()
        let first = try await backend(schema: schema)
        let second = try await backend(schema: schema)
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
}
