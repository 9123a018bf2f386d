import CBOR
import CoordinateEngine
import PostgresWire
import Synchronization
import TestSupport
import Testing

@testable import CoordinatePostgres

/// How units go into the PostgreSQL store: many new ones by COPY, any others by statements that skip taken keys;
/// and, with no foreign key from units to specs, how a spec's deletion and inserts into it keep out of each
/// other's way (``PostgresSession/lockSpecForInserts(_:)``).
@Suite("PostgreSQL unit inserts", .enabled(if: TestPostgres.available))
struct UnitInsertTests {
    let namespace = Identifier(text: "")

    private func makeEngine(spec: String) async throws -> (Engine, PostgresBackend, String) {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "unit-insert-test")
        let engine = Engine(backend: backend)
        let namespace = self.namespace
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes(spec))]))
        }
        return (engine, backend, schema)
    }

    private func items(_ range: Range<Int>, tag: Int) -> [UnitItem] {
        range.map { index in
            UnitItem(
                key: index.isMultiple(of: 2) ? Identifier(text: "u\(index)") : Identifier(bytes: "u\(index)"),
                data: StoredValue(
                    encoding: .map(
                        CBORMap([(.text("n"), .unsigned(UInt64(index))), (.text("tag"), .unsigned(UInt64(tag)))]))),
                priority: Double(index) / 4, delay: index.isMultiple(of: 5) ? 3_600 : nil)
        }
    }

    private func add(_ engine: Engine, spec: String, _ items: [UnitItem]) async throws -> AddUnitsOutcome {
        let namespace = self.namespace
        return try await engine.perform(.write) { tx in
            try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: spec), UnitItemBatch(items))
        }
    }

    @Test("many new units go in by COPY with every value intact; a taken key among them sends all the statement way")
    func copyAndFallback() async throws {
        let (engine, backend, _) = try await makeEngine(spec: "bulk")
        let namespace = self.namespace
        let first = items(0..<300, tag: 1)
        #expect(try await add(engine, spec: "bulk", first) == .added(created: 300, reset: 0))
        #expect(backend.batchStatistics.unitsCopied == 300)
        let stored = try await engine.perform(.read) { tx in
            try tx.workUnits(namespace: namespace, spec: Identifier(bytes: "bulk"), keys: first.map(\.key))
        }
        for (item, unit) in zip(first, stored ?? []) {
            #expect(unit?.key == item.key && unit?.key.isText == item.key.isText)
            #expect(unit?.data == item.data)
            #expect(unit?.priority == item.priority)
            #expect((unit?.notBefore != nil) == (item.delay != nil))
        }
        // 150 of these keys are taken: COPY fails on the first, the savepoint undoes it, and the statements
        // insert the new ones and reset the taken ones, as for any add.
        let second = items(150..<450, tag: 2)
        #expect(try await add(engine, spec: "bulk", second) == .added(created: 150, reset: 150))
        #expect(backend.batchStatistics.unitsCopied == 300)
        let counts = try await engine.perform(.read) { tx in
            try tx.countWorkUnits(namespace: namespace, spec: Identifier(bytes: "bulk"))?.counts
        }
        let delayed = (0..<450).filter { $0.isMultiple(of: 5) }.count
        #expect(counts?[.ready] == 450 - delayed && counts?[.delayed] == delayed)
        let reset = try await engine.perform(.read) { tx in
            try tx.workUnit(namespace: namespace, spec: Identifier(bytes: "bulk"), key: Identifier(text: "u200"))
        }
        #expect(reset?.data == second[50].data)
        // Fewer units than the COPY threshold take the statement way from the start.
        #expect(try await add(engine, spec: "bulk", items(1_000..<1_010, tag: 3)) == .added(created: 10, reset: 0))
        #expect(backend.batchStatistics.unitsCopied == 300)
        await backend.close()
    }

    @Test("adds sharing a batch: a copy that meets keys an earlier add of the batch inserted falls back alone")
    func copiesInOneBatch() async throws {
        let (engine, backend, schema) = try await makeEngine(spec: "shared")
        let namespace = self.namespace
        let adds = [
            items(1_000..<1_001, tag: 0), items(0..<100, tag: 1), items(50..<150, tag: 2), items(200..<300, tag: 3),
        ]
        let outcomes = Mutex<[Int: AddUnitsOutcome]>([:])
        let operations: [TestWrite] =
            adds.enumerated().map { index, items in
                (
                    nil,
                    { tx in
                        let outcome = try tx.addWorkUnits(
                            namespace: namespace, spec: Identifier(bytes: "shared"), UnitItemBatch(items))
                        outcomes.withLock { $0[index] = outcome }
                    }
                )
            }
        // The first add waits for the spec row; the others queue up behind it and run as one batch.
        try await submitBehindHeldSpecRow(engine, schema: schema, heldSpec: nil, operations)
        #expect(backend.batchStatistics.batchedWrites >= 3)
        // Each gets the answer it would get alone.
        #expect(
            outcomes.withLock { $0 } == [
                0: .added(created: 1, reset: 0), 1: .added(created: 100, reset: 0), 2: .added(created: 50, reset: 50),
                3: .added(created: 100, reset: 0),
            ])
        #expect(backend.batchStatistics.unitsCopied == 200, "the second and fourth by COPY, the third by statements")
        let counts = try await engine.perform(.read) { tx in
            try tx.countWorkUnits(namespace: namespace, spec: Identifier(bytes: "shared"))?.counts
        }
        #expect(counts.map { $0[.ready] + $0[.delayed] } == 251)
        let reset = try await engine.perform(.read) { tx in
            try tx.workUnit(namespace: namespace, spec: Identifier(bytes: "shared"), key: Identifier(text: "u60"))
        }
        #expect(reset?.data == adds[2][10].data, "the third add reset the units the second had added")
        await backend.close()
    }

    @Test("units added while another transaction deletes their spec wait for it, then find the spec gone")
    func insertWaitsForDeletion() async throws {
        let (engine, backend, schema) = try await makeEngine(spec: "doomed")
        try await withSchemaConnection(schema) { other in
            // The deletion as PostgresSession.deleteSpec does it, held open: the spec row, then its units.
            _ = try await other.query("BEGIN")
            _ = try await other.query("DELETE FROM work_spec WHERE name = '\\x646f6f6d6564'::bytea")
            let adding = Task { try await add(engine, spec: "doomed", items(0..<100, tag: 1)) }
            #expect(try await eventuallyBlocksAnother(other), "the insert waits for the deletion")
            _ = try await other.query("DELETE FROM work_unit")
            _ = try await other.query("COMMIT")
            #expect(try await adding.value == .noSuchSpec, "tried again, and the spec is gone")
            #expect(backend.batchStatistics.conflictRetries >= 1)
            let orphans = try await other.query("SELECT count(*) FROM work_unit")
            #expect(orphans.first?[0]?.getInteger(at: 0, as: Int64.self) == 0)
        }
        await backend.close()
    }

    @Test("a spec's deletion waits for a transaction inserting units into it, then deletes those units too")
    func deletionWaitsForInsert() async throws {
        let (engine, backend, schema) = try await makeEngine(spec: "busy")
        let namespace = self.namespace
        try await withSchemaConnection(schema) { other in
            // An insert as PostgresSession.insertUnit does it, held open: the spec locked, then the unit.
            _ = try await other.query("BEGIN")
            _ = try await other.query("SELECT 1 FROM work_spec WHERE name = '\\x62757379'::bytea FOR KEY SHARE")
            _ = try await other.query(
                """
                INSERT INTO work_unit (spec_id, key, key_kind, data, priority, state, bucket, attempt_count,
                    retry_count_base)
                SELECT id, 'late'::bytea, false, '\\xa0'::bytea, 0, 1, 0, 0, 0 FROM work_spec
                """)
            let deleting = Task {
                try await engine.perform(.write) { tx in
                    try tx.deleteWorkSpec(namespace: namespace, named: Identifier(bytes: "busy"))
                }
            }
            #expect(try await eventuallyBlocksAnother(other), "the deletion waits for the insert")
            _ = try await other.query("COMMIT")
            #expect(try await deleting.value)
            let orphans = try await other.query("SELECT count(*) FROM work_unit")
            #expect(orphans.first?[0]?.getInteger(at: 0, as: Int64.self) == 0, "the late unit went with its spec")
        }
        await backend.close()
    }
}
