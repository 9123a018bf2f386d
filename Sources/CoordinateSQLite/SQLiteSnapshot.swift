import CoordinateEngine
import Foundation
import GRDB

extension SQLiteBackend {
    /// A read transaction on a read-only connection of its own. In WAL mode it keeps seeing the database as of
    /// its first read while the writer commits beside it; the writer never waits for it (the WAL grows by what
    /// is written meanwhile, and is rewound after the snapshot closes).
    public func openSnapshot(completion: @escaping @Sendable (Result<any StorageSnapshot, any Error>) -> Void) {
        guard health().isAvailable else {
            completion(.failure(StorageError.unavailable(health().detail ?? "unavailable")))
            return
        }
        let path = self.path
        let trigger = walTrigger
        // Opening a connection reads the file: off the caller's (cooperative) thread.
        DispatchQueue.global().async {
            do {
                var configuration = Configuration()
                configuration.readonly = true
                configuration.busyMode = .timeout(5)
                configuration.label = "coordinate.sqlite.snapshot"
                // The read transaction stays open from one read to the next, by design.
                configuration.allowsUnsafeTransactions = true
                let queue = try DatabaseQueue(path: path, configuration: configuration)
                let store = try queue.inDatabase { db -> SQLiteStore in
                    try db.execute(sql: "BEGIN DEFERRED")
                    // The first read fixes the snapshot; the cache is loaded from it.
                    let store = SQLiteStore(database: db)
                    try store.loadCache()
                    return store
                }
                completion(.success(SQLiteSnapshot(queue: queue, store: store, trigger: trigger)))
            } catch {
                completion(.failure(SQLiteBackend.storageError(error)))
            }
        }
    }
}

/// See ``SQLiteBackend/openSnapshot(completion:)``.
final class SQLiteSnapshot: StorageSnapshot, @unchecked Sendable {
    // @unchecked Sendable: `store` is only used inside the queue's serial accesses, like the writer's store.
    private let queue: DatabaseQueue
    private let store: SQLiteStore
    private let trigger: WALCheckpointTrigger
    let isIsolated = true
    let takenAt: Timestamp? = nil

    init(queue: DatabaseQueue, store: SQLiteStore, trigger: WALCheckpointTrigger) {
        self.queue = queue
        self.store = store
        self.trigger = trigger
        trigger.readerOpened()
    }

    func read(
        _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        queue.asyncWriteWithoutTransaction { [store] _ in
            store.beginSnapshotRead()
            do {
                try body(store)
                completion(nil)
            } catch {
                completion(SQLiteBackend.storageError(error))
            }
        }
    }

    func close() {
        queue.asyncWriteWithoutTransaction { [trigger] db in
            _ = try? db.execute(sql: "ROLLBACK")
            trigger.readerClosed()
        }
    }
}
