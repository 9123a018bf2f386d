import CoordinateEngine
import Logging
import Synchronization
import TestSupport

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

/// Submits every write at once (no awaiting between them), each with what it reads first, and returns each
/// one's result in order.
func submitTogether(
    _ engine: Engine, _ operations: [(StorageReadHint?, @Sendable (inout EngineTransaction) throws -> Void)]
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
