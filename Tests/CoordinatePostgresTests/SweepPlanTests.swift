import CBOR
import CoordinateEngine
import Foundation
import NIOCore
import NIOPosix
import PostgresWire
import TestSupport
import Testing

@testable import CoordinatePostgres

/// The expiry sweep runs at the start of every transaction; what it costs when nothing has expired is what every
/// operation pays.
@Suite("PostgreSQL expiry sweep", .enabled(if: TestPostgres.available))
struct SweepPlanTests {
    @Test("with nothing expired the sweep reads no attempt, even under the hash join a plan cached early picks")
    func nothingExpiredReadsNoAttempt() async throws {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "sweep-test")
        let engine = Engine(backend: backend)
        let namespace = Identifier(text: "")
        let spec = Identifier(bytes: "sweep")
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([(.bytes("name"), .bytes(spec.octets))]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: spec,
                UnitItemBatch((0..<21).map { UnitItem(key: Identifier(bytes: "u\($0)"), data: .emptyMap) }))
        }
        // Twenty finished attempts, then an active one: the rows a hash join's first read of `attempt` passes.
        let request = WorkRequest(worker: Identifier(bytes: "w"), count: 1, lease: 600_000_000, filter: .init())
        for index in 0..<21 {
            let granted = try await engine.perform(.write) { tx in try tx.getWork(namespace: namespace, request) }
            let key = try #require(granted.first?.unit.key)
            guard index < 20 else { break }
            let outcome = try await engine.perform(.write) { tx in
                try tx.updateWorkUnit(namespace: namespace, spec: spec, key: key, UnitUpdate(status: 4))
            }
            #expect(outcome == .applied)
        }
        await backend.close()

        try await withSchemaConnection(schema) { connection in
            // The join shapes a connection may have cached from a plan made while `attempt` was nearly empty.
            _ = try await connection.query("SET enable_nestloop = off")
            _ = try await connection.query("SET enable_mergejoin = off")
            _ = try await connection.query("BEGIN")
            let sweep = PostgresSession.sweepWithClockSQL.replacingOccurrences(of: "$1", with: "ARRAY[]::int8[]")
            let rows = try await connection.query("EXPLAIN (ANALYZE, FORMAT JSON) " + sweep)
            _ = try await connection.query("ROLLBACK")
            let cell = try #require(rows.first?[0])
            let json = String(buffer: cell)
            let plans = try #require(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
            let root = try #require(plans.first?["Plan"] as? [String: Any])
            // The update node itself runs (and finds its input empty); no scan of the table under it may.
            let attemptReads = nodes(of: root).filter {
                $0["Relation Name"] as? String == "attempt" && $0["Node Type"] as? String != "ModifyTable"
            }
            #expect(!attemptReads.isEmpty, "the sweep's plan reads attempts to update them")
            for node in attemptReads {
                #expect(node["Actual Loops"] as? Int == 0, "\(node["Node Type"] ?? "?") on attempt ran: \(json)")
            }
        }
    }

    private func nodes(of plan: [String: Any]) -> [[String: Any]] {
        [plan] + ((plan["Plans"] as? [[String: Any]]) ?? []).flatMap { nodes(of: $0) }
    }
}

/// `work_unit_completed` covers only the completed buckets (schema version 4), so a statement reads through it
/// only if its plan — made once per connection, generic — can prove the bucket it asks for is covered.
@Suite("PostgreSQL unit index plans", .enabled(if: TestPostgres.available))
struct UnitIndexPlanTests {
    @Test("the ready read and the completed-unit reads walk their partial indexes under a generic plan")
    func readsWalkPartialIndexes() async throws {
        let schema = TestPostgres.freshSchema()
        let backend = try await makeTestBackend(schema: schema, label: "index-plan-test")
        await backend.close()
        try await withSchemaConnection(schema) { connection in
            _ = try await connection.query("SET plan_cache_mode = force_generic_plan")
            let statements = [
                ("work_unit_order", PostgresSession.readyUnitsSQL(limit: 8)),
                ("work_unit_completed", PostgresSession.completedUnitsSQL(.finished, newestFirst: false)),
                ("work_unit_completed", PostgresSession.completedUnitsSQL(.failed, newestFirst: true)),
            ]
            for (index, (expected, sql)) in statements.enumerated() {
                let parameters = sql.contains("$2") ? "(int8, int8)" : "(int8)"
                _ = try await connection.query("PREPARE read\(index) \(parameters) AS \(sql)")
                let arguments = sql.contains("$2") ? "(1, 8)" : "(1)"
                let rows = try await connection.query("EXPLAIN EXECUTE read\(index) \(arguments)")
                let plan = rows.compactMap { $0[0].map { String(buffer: $0) } }.joined(separator: "\n")
                #expect(
                    plan.contains("Index Scan") && plan.contains("using \(expected) on work_unit"), "\(sql)\n\(plan)")
                #expect(!plan.contains("Sort"), "\(sql)\n\(plan)")
            }
        }
    }
}
