import CoordinateEngine
import NIOPosix

extension PostgresBackend {
    /// A `REPEATABLE READ, READ ONLY` transaction on a connection of its own: every read sees the database as
    /// of the transaction's first statement, and PostgreSQL's MVCC lets writers carry on beside it. Reads run
    /// on the backend's thread pool like operations, each holding a thread only while it runs.
    public func openSnapshot(completion: @escaping @Sendable (Result<any StorageSnapshot, any Error>) -> Void) {
        guard health().isAvailable else {
            completion(.failure(StorageError.unavailable(health().detail ?? "unavailable")))
            return
        }
        threads.submit { _ in
            let channel: SQLChannel
            do {
                channel = try self.checkout()
            } catch {
                let detail = "cannot connect to \(self.where_): \(describe(error))"
                self.lost(detail)
                completion(.failure(StorageError.unavailable(detail)))
                return
            }
            do {
                try channel.simple("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                let rows = try channel.query("SELECT \(PostgresSession.transactionTimeSQL)")
                let time = try rows.first?.int64(0)
                let session = PostgresSession(
                    channel: channel, transactionTime: self.useDatabaseClock ? time : nil)
                completion(.success(PostgresSnapshot(backend: self, channel: channel, session: session)))
            } catch {
                completion(.failure(self.release(channel, after: error)))
            }
        }
    }
}

/// See ``PostgresBackend/openSnapshot(completion:)``.
final class PostgresSnapshot: StorageSnapshot, @unchecked Sendable {
    // @unchecked Sendable: the channel and session are used by one read at a time (the owner reads
    // sequentially, as the protocol requires) and by `close` after the last read.
    private let backend: PostgresBackend
    private let channel: SQLChannel
    private let session: PostgresSession
    /// Set when a read failed and gave the connection back.
    private var released = false
    let isIsolated = true
    let takenAt: Timestamp?

    init(backend: PostgresBackend, channel: SQLChannel, session: PostgresSession) {
        self.backend = backend
        self.channel = channel
        self.session = session
        takenAt = session.databaseTime
    }

    func read(
        _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        backend.threads.submit { [self] _ in
            guard !released else { return completion(StorageError.unavailable("snapshot closed after a failure")) }
            session.beginSnapshotRead()
            do {
                try body(session)
                try channel.finishDeferred()
                completion(nil)
            } catch {
                released = true
                completion(backend.release(channel, after: error))
            }
        }
    }

    func close() {
        backend.threads.submit { [self] _ in
            guard !released else { return }
            released = true
            backend.rollBackAndReturn(channel)
        }
    }
}
