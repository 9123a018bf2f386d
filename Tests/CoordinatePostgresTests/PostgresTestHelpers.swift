import CoordinateEngine
import Logging
import NIOPosix
import PostgresWire
import Synchronization
import TestSupport
import Testing

@testable import CoordinatePostgres

/// A backend over `schema` of the test server, with a pool of two connections (so one runs writes and writes
/// submitted together queue up behind it), initialised, logging only what is critical.
func makeTestBackend(schema: String = TestPostgres.freshSchema(), label: String) async throws -> PostgresBackend {
    var logger = Logger(label: label)
    logger.logLevel = .critical
    let backend = PostgresBackend(
        url: try PostgresURL(try TestPostgres.url()), schema: schema, poolSize: 2, logger: logger)
    try await backend.initialize(now: { 0 })
    return backend
}

/// A write operation for ``submitTogether(_:_:)``: what it reads first, and its body.
typealias TestWrite = (StorageReadHint?, @Sendable (inout EngineTransaction) throws -> Void)

/// Submits every write at once (no awaiting between them), each with what it reads first, and returns each
/// one's result in order.
func submitTogether(
    _ engine: Engine, _ operations: [TestWrite]
) async -> [Result<Void, any Error>] {
    await withCheckedContinuation { continuation in
        let results = Mutex<[Int: Result<Void, any Error>]>([:])
        for (index, (hint, body)) in operations.enumerated() {
            engine.perform(.write, readingFirst: hint, body) { result in
                let done = results.withLock { collected -> [Result<Void, any Error>]? in
                    collected[index] = result
                    guard collected.count == operations.count else { return nil }
                    return (0..<operations.count).map { collected[$0]! }
                }
                if let done { continuation.resume(returning: done) }
            }
        }
    }
}

/// Runs `body` with a connection of its own to `schema` of the test server — a transaction beside the
/// backend's — and closes it afterwards, whatever `body` did.
func withSchemaConnection<R>(_ schema: String, _ body: (WireConnection) async throws -> R) async throws -> R {
    let connection = try await WireConnection.connect(
        to: try PostgresURL(try TestPostgres.url()).configuration(), on: MultiThreadedEventLoopGroup.singleton.next()
    ).get()
    return try await withCleanup {
        _ = try await connection.query("SET search_path TO \"\(schema)\"")
        return try await body(connection)
    } cleanup: {
        try? await connection.close().get()
    }
}

/// Whether, within the usual deadline, some other backend comes to wait for a lock `connection`'s transaction
/// holds.
func eventuallyBlocksAnother(_ connection: WireConnection) async throws -> Bool {
    try await eventually {
        let rows = try await connection.query(
            "SELECT count(*)::int8 FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
        return rows.first?[0]?.getInteger(at: 0, as: Int64.self) == 1
    }
}

/// Submits `operations` together while another transaction holds the row of spec `heldSpec` exclusively (every
/// spec row when nil), so that the first of them to lock it waits and the rest queue up behind it; once one waits,
/// the row is released. The waiting operation and those behind it then run as one batch (or all run as one).
/// Fails with the first operation's error, if any.
func submitBehindHeldSpecRow(
    _ engine: Engine, schema: String, heldSpec: String?, _ operations: [TestWrite]
) async throws {
    try await withSchemaConnection(schema) { other in
        _ = try await other.query("BEGIN")
        if let heldSpec {
            let hex = heldSpec.utf8.map { String($0, radix: 16) }.map { $0.count == 1 ? "0" + $0 : $0 }.joined()
            _ = try await other.query("SELECT 1 FROM work_spec WHERE name = '\\x\(hex)'::bytea FOR UPDATE")
        } else {
            _ = try await other.query("SELECT 1 FROM work_spec FOR UPDATE")
        }
        let running = Task { await submitTogether(engine, operations) }
        #expect(try await eventuallyBlocksAnother(other), "the first operation waits for the spec row")
        _ = try await other.query("COMMIT")
        for result in await running.value { try result.get() }
    }
}

/// An operation that adds one unit to `spec`: one to put first in ``submitBehindHeldSpecRow(_:schema:heldSpec:_:)``.
func addingOneUnit(namespace: Identifier, spec: String) -> TestWrite {
    (
        nil,
        { tx in
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: spec),
                UnitItemBatch([UnitItem(key: Identifier(bytes: "x"), data: .emptyMap)]))
        }
    )
}
