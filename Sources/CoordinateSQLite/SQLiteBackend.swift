import CoordinateEngine
import Foundation
import GRDB
import GRDBSQLite
import Locking
import Logging
import Synchronization

/// The `sqlite` backend (storage.md §3): one SQLite file in WAL mode with `synchronous=FULL`, written by one
/// connection on one queue, with group commit.
///
/// Operations queue up in arrival order. The writer takes the longest run of queued operations of the same
/// access mode as one group:
/// * a group of writes runs inside `BEGIN IMMEDIATE … COMMIT`, each operation inside its own savepoint, so a
///   failing operation is rolled back alone; every completion waits for the commit, and a failed commit fails
///   every operation of the group and restores the in-memory cache to the last committed state
///   (storage.md §1.2.3);
/// * a group of reads runs in a transaction that is rolled back: reads change nothing durable (expiry they
///   materialize is derived from the clock and happens again later), so they keep working while the disk is
///   full. Because groups run in arrival order, a read always sees every write queued before it, committed.
public final class SQLiteBackend: StorageBackend {
    public let name = "sqlite"
    public let path: String
    private let groupCommit: Bool
    private let logger: Logger
    private let maxPageCount: Int?
    /// Receives commit timings (`op="commit"`); set once at start-up, before any operation.
    public let observer: (any StorageObserver)?

    private struct Operation {
        let mode: AccessMode
        let body: @Sendable (any StorageSession) throws -> Void
        let completion: @Sendable ((any Error)?) -> Void
    }

    private enum Phase {
        case initialising
        case ready
        case unavailable(String)
        case closed
    }

    private struct State {
        var phase: Phase = .initialising
        var queue: [Operation] = []
        var writerRunning = false
    }

    private let state = Locked(State())
    let walTrigger = WALCheckpointTrigger()
    /// The background checkpoints' own connection, opened on first use. The mutex also keeps the periodic and
    /// the WAL-triggered checkpoints from running at once.
    private let checkpointConnection = Locked<OpaquePointer?>(nil)
    /// The database connection and its store; set once initialisation succeeds.
    private let connection = Locked<(queue: DatabaseQueue, store: SQLiteStore, identity: FileIdentity?)?>(nil)

    /// - Parameters:
    ///   - path: The database file.
    ///   - groupCommit: `coordinate.server.sqlite_group_commit`.
    ///   - maxPageCount: Test-only cap on the database size (`PRAGMA max_page_count`), to provoke `SQLITE_FULL`
    ///     where mounting a small filesystem is not permitted.
    ///   - checkpointInterval: Seconds between the periodic passive checkpoints of ``maintain(second:)``.
    public init(
        path: String, groupCommit: Bool = true, logger: Logger, maxPageCount: Int? = nil,
        checkpointInterval: Int = 10, observer: (any StorageObserver)? = nil
    ) {
        self.observer = observer
        self.path = path
        self.groupCommit = groupCommit
        self.logger = logger
        self.maxPageCount = maxPageCount
        self.checkpointInterval = max(1, checkpointInterval)
        walTrigger.checkpoint = { [weak self] in self?.checkpoint() }
    }

    private let checkpointInterval: Int

    /// The database, its lock file and its WAL stay open: the budget of ``StorageBackend/descriptorDemand``.
    public var descriptorDemand: Int { 16 }

    /// Opens and migrates the database (``initialize(now:)``) on a thread of its own: opening, recovering a WAL
    /// and migrating block, and must not hold a thread of the cooperative pool.
    public func start(clock: any EngineClock) async throws(StorageStartError) {
        let now = clock.now()
        let failure = await Self.offCallerThread { () -> SQLiteStartError? in
            do throws(SQLiteStartError) {
                try self.initialize(now: now)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw StorageStartError(failure.description) }
    }

    /// Notices a removed, replaced or unwritable database file within a second (storage.md §6.5) — three
    /// `open()` calls, and the sooner SQLite stops, the less likely a SIGBUS from an immutable `-shm` file — and
    /// runs the periodic checkpoint.
    public func maintain(second: Int) async -> Bool {
        checkFiles()
        if second % checkpointInterval == 0 { await checkpointInBackground() }
        return health().isAvailable
    }

    // MARK: - Lock file

    /// Takes the exclusive advisory lock on `<path>.lock` that makes one daemon own one file (storage.md §3.2).
    /// Returns the descriptor to keep open for the process lifetime, or throws with the spec's message.
    public static func acquireLockFile(for path: String) throws(SQLiteStartError) -> Int32 {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            try? FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let descriptor = open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            // An unwritable directory: the daemon still starts (storage stays unavailable); nothing to lock.
            return -1
        }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            Foundation.close(descriptor)
            throw .inUse(path)
        }
        return descriptor
    }

    // MARK: - Initialisation

    /// Opens the database and applies missing migrations (storage.md §5). Until this finishes, every operation
    /// fails with `storage unavailable: initialising`. A schema newer than supported throws
    /// ``SQLiteStartError/schemaTooNew(_:)`` and leaves the file untouched; any other problem leaves the backend
    /// unavailable with a clear detail and is only logged.
    public func initialize(now: Int64) throws(SQLiteStartError) {
        do {
            let existed = FileManager.default.fileExists(atPath: path)
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            if existed {
                // An existing file must be a database: SQLite would take an empty (truncated) file for a new
                // database and serve an empty queue in place of the lost one. New databases are created under
                // another name and renamed into place once migrated (below), so an empty file at `path` is never
                // one of ours mid-creation.
                try Self.checkHeader(path)
                if let problem = Self.unwritableFile(path) { throw UnusableFile(description: problem) }
            } else {
                try createDatabase(now: now)
            }
            do {
                // Inspect the file read-only first: a corrupt file or a newer schema must be refused without a
                // single write (opening in WAL mode may write to the file).
                var inspection = Configuration()
                inspection.readonly = true
                let reader = try DatabaseQueue(path: path, configuration: inspection)
                let found = try reader.inDatabase { db -> Int in
                    _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master")
                    return try SQLiteSchema.version(of: db)
                }
                try reader.close()
                if found > SQLiteSchema.currentVersion {
                    throw SQLiteSchema.MigrationError.newerThanSupported(
                        found: found, supported: SQLiteSchema.currentVersion)
                }
            }
            var configuration = Configuration()
            configuration.journalMode = .wal
            configuration.busyMode = .timeout(5)
            configuration.foreignKeysEnabled = true
            configuration.label = "coordinate.sqlite"
            let pageLimit = maxPageCount
            let trigger = walTrigger
            configuration.prepareDatabase { db in
                // Checkpoints run on a separate connection in the background (``checkpoint()``), so commits
                // never pay for copying the WAL back into the database.
                try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
                trigger.install(on: db.sqliteConnection)
                if let pageLimit { try db.execute(sql: "PRAGMA max_page_count = \(pageLimit)") }
            }
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            let store = try queue.inDatabase { db -> SQLiteStore in
                // Set here, not in `prepareDatabase`: GRDB switches a WAL connection to `synchronous = NORMAL`
                // after that closure ran, and NORMAL does not sync the WAL at commit (a commit acknowledged
                // before an operating-system crash or power loss could be lost, storage.md §1.2.2).
                try db.execute(sql: "PRAGMA synchronous = FULL")
                // A corrupt file fails here, before anything is written to it.
                _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master")
                try SQLiteSchema.migrate(db, now: now)
                let store = SQLiteStore(database: db)
                try store.loadCache()
                return store
            }

            connection.withLock { $0 = (queue, store, FileIdentity(path: path)) }
            state.withLock { $0.phase = .ready }
            logger.info("storage ready: \(path)")
        } catch let error as SQLiteSchema.MigrationError {
            let detail = error.description
            logger.error("\(detail)")
            state.withLock { $0.phase = .unavailable(detail) }
            throw .schemaTooNew(detail)
        } catch {
            let detail = "cannot open database \(path): \(Self.describe(error))"
            logger.error("\(detail)")
            state.withLock { $0.phase = .unavailable(detail) }
        }
    }

    /// Why an existing database cannot be served: a file that is not a database (empty, shorter than a header,
    /// without SQLite's magic string), or one of its files that cannot be written.
    struct UnusableFile: Error, CustomStringConvertible {
        let description: String
    }

    /// Refuses a file at `path` that does not start with an SQLite header (it is damage, never a new database).
    static func checkHeader(_ path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }  // unreadable: SQLite will say why
        defer { try? handle.close() }
        let header = (try? handle.read(upToCount: 100)) ?? Data()
        if header.isEmpty {
            throw UnusableFile(
                description: "the file is empty (truncated?); refusing to start a new database in its place")
        }
        guard header.count == 100, header.prefix(16) == Data("SQLite format 3\u{0}".utf8) else {
            throw UnusableFile(
                description: "the file has no SQLite header; refusing to start a new database in its place")
        }
    }

    /// The first of the database's files (the database, its WAL, its shared-memory index) that exists and cannot
    /// be opened for writing, with the reason. SQLite would open such a database and fail every write with
    /// "attempt to write a readonly database"; and once the `-shm` file it has mapped becomes immutable, the
    /// kernel kills the process with SIGBUS at SQLite's next write to the mapping (docs/operations.md).
    static func unwritableFile(_ path: String) -> String? {
        for file in [path, path + "-wal", path + "-shm"] {
            let descriptor = open(file, O_RDWR | O_CLOEXEC)
            if descriptor >= 0 {
                Foundation.close(descriptor)
                continue
            }
            let code = errno
            if code == ENOENT { continue }
            let hint = code == EPERM ? " (immutable or append-only? see lsattr)" : ""
            return "cannot write \(file): \(String(cString: strerror(code)))\(hint)"
        }
        return nil
    }

    /// Creates the database: schema and migrations applied under `<path>.new`, then renamed to `path`, so that a
    /// crash during creation never leaves an empty or partial file where the database belongs.
    private func createDatabase(now: Int64) throws {
        let staging = path + ".new"
        for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: staging + suffix) }
        var configuration = Configuration()
        configuration.journalMode = .wal
        let queue = try DatabaseQueue(path: staging, configuration: configuration)
        _ = try queue.inDatabase { db in try SQLiteSchema.migrate(db, now: now) }
        // Closing the only connection checkpoints the WAL into the file and removes it.
        try queue.close()
        guard rename(staging, path) == 0 else {
            throw UnusableFile(
                description: "cannot move the new database into place: \(String(cString: strerror(errno)))")
        }
        // The new name must survive a power loss as the commits made under it do.
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            Foundation.close(directory)
        }
        logger.info("created new database \(path)")
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? UnusableFile { return error.description }
        if let error = error as? DatabaseError { return error.message ?? "\(error.resultCode)" }
        if let error = error as? SQLiteFailure { return error.message }
        if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return "\(error)"
    }

    // MARK: - Health

    public var counters: [StorageCounter] {
        [
            StorageCounter(
                name: "wal_checkpoints",
                help: "Background passes that copied the write-ahead log into the database file.",
                value: walTrigger.backgroundPasses.load(ordering: .relaxed))
        ]
    }

    public func health() -> StorageHealth {
        switch state.withLock({ $0.phase }) {
        case .ready: return .available
        case .initialising: return StorageHealth(isAvailable: false, detail: "initialising")
        case .unavailable(let detail): return StorageHealth(isAvailable: false, detail: detail)
        case .closed: return StorageHealth(isAvailable: false, detail: "closed")
        }
    }

    /// Compares the open file's identity with the path (storage.md §6.5), and checks that the database's files
    /// can still be written. A removed or replaced file makes the backend unavailable for good: recreating it
    /// would silently lose all state. So does an unwritable one (`chattr +i`): noticed here, SQLite stops being
    /// called before it writes to a mapping the kernel would answer with SIGBUS.
    public func checkFiles() {
        guard let expected = connection.withLock({ $0?.identity }) else { return }
        let detail: String
        if FileIdentity(path: path) != expected {
            detail = "database file removed or replaced"
        } else if let problem = Self.unwritableFile(path) {
            detail = problem
        } else {
            return
        }
        let changed = state.withLock { state -> Bool in
            if case .ready = state.phase {
                state.phase = .unavailable(detail)
                return true
            }
            return false
        }
        if changed { logger.error("storage unavailable: \(detail) (database \(path))") }
    }

    // MARK: - Execution

    public func execute(
        _ mode: AccessMode, _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let operation = Operation(mode: mode, body: body, completion: completion)
        let (accepted, startWriter, refusal) = state.withLock { state -> (Bool, Bool, StorageError?) in
            switch state.phase {
            case .ready:
                state.queue.append(operation)
                if state.writerRunning { return (true, false, nil) }
                state.writerRunning = true
                return (true, true, nil)
            case .initialising: return (false, false, .unavailable("initialising"))
            case .unavailable(let detail): return (false, false, .unavailable(detail))
            case .closed: return (false, false, .unavailable("closed"))
            }
        }
        guard accepted else {
            completion(refusal)
            return
        }
        if startWriter, let queue = connection.withLock({ $0?.queue }) {
            queue.asyncWriteWithoutTransaction { [self] db in drain(db) }
        }
    }

    /// Runs queued groups until the queue is empty. Runs on the database queue.
    private func drain(_ db: Database) {
        guard let store = connection.withLock({ $0?.store }) else { return }
        while true {
            let group = state.withLock { state -> [Operation] in
                guard let first = state.queue.first else {
                    state.writerRunning = false
                    return []
                }
                if case .ready = state.phase {
                } else {
                    // Storage went away: fail everything still queued.
                    let all = state.queue
                    state.queue.removeAll()
                    state.writerRunning = false
                    return all
                }
                var count = 1
                if groupCommit || first.mode == .read {
                    while count < state.queue.count, state.queue[count].mode == first.mode, count < 4096 { count += 1 }
                }
                let group = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                return group
            }
            guard !group.isEmpty else { return }
            if case .ready = state.withLock({ $0.phase }) {
                run(group, db: db, store: store)
            } else {
                let detail = health().detail ?? "unavailable"
                for operation in group { operation.completion(StorageError.unavailable(detail)) }
            }
        }
    }

    /// The writer connection's `PRAGMA synchronous` (2 is FULL: the WAL is synced at every commit).
    func synchronousLevel() throws -> Int? {
        guard let queue = connection.withLock({ $0?.queue }) else { return nil }
        return try queue.inDatabase { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
    }

    /// Runs one transaction-control statement from the statement cache (compiled once per connection).
    private func control(_ db: Database, _ sql: String) throws {
        try SQLStatement(db, sql).run()
    }

    private func run(_ group: [Operation], db: Database, store: SQLiteStore) {
        let committed = store.cache
        var outcomes: [(any Error)?] = []
        outcomes.reserveCapacity(group.count)
        let isWrite = group[0].mode == .write
        do {
            try control(db, isWrite ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED")
        } catch {
            fail(group, error, store: store, restoring: committed)
            return
        }
        for operation in group {
            let before = store.cache
            do {
                try control(db, "SAVEPOINT operation")
                do {
                    try operation.body(store)
                    try control(db, "RELEASE operation")
                    outcomes.append(nil)
                } catch {
                    try control(db, "ROLLBACK TO operation")
                    try control(db, "RELEASE operation")
                    store.cache = before
                    outcomes.append(Self.storageError(error))
                }
            } catch {
                // The savepoint machinery itself failed: the transaction cannot be trusted.
                try? control(db, "ROLLBACK")
                fail(group, error, store: store, restoring: committed)
                return
            }
        }
        if isWrite {
            do {
                let started = ContinuousClock.now
                try store.flushCounts()
                try control(db, "COMMIT")
                observer?.storageOperation("commit", seconds: Engine.seconds(since: started))
            } catch {
                try? control(db, "ROLLBACK")
                fail(group, error, store: store, restoring: committed)
                return
            }
        } else {
            // Reads change nothing durable; discard what they materialized.
            try? control(db, "ROLLBACK")
            store.cache = committed
        }
        for (operation, outcome) in zip(group, outcomes) { operation.completion(outcome) }
    }

    /// Every operation of a failed group is answered `storage unavailable`, and the cache returns to the last
    /// committed state.
    private func fail(_ group: [Operation], _ error: any Error, store: SQLiteStore, restoring committed: SQLiteCache) {
        store.cache = committed
        let detail = Self.describe(error)
        logger.warning("storage commit failed: \(detail)")
        checkFiles()
        for operation in group { operation.completion(StorageError.unavailable(detail)) }
    }

    /// Engine refusals pass through; SQLite failures become `storage unavailable`.
    static func storageError(_ error: any Error) -> any Error {
        switch error {
        case is EngineError, is StorageError: return error
        case let error as DatabaseError: return StorageError.unavailable(error.message ?? "\(error.resultCode)")
        case let error as SQLiteFailure: return StorageError.unavailable(error.message)
        default: return error
        }
    }

    // MARK: - Maintenance

    /// Copies the WAL back into the database so the WAL does not grow without bound (storage.md §3.2). Runs a
    /// PASSIVE checkpoint on a connection of its own: it never blocks the writer, and its fsync of the database
    /// file stays off the commit path.
    public func checkpoint() {
        guard case .ready = state.withLock({ $0.phase }) else { return }
        checkpointConnection.withLock { handle in
            if handle == nil {
                var opened: OpaquePointer?
                // A fresh connection does not know the file is in WAL mode until it has read it; without this
                // read the checkpoint silently does nothing.
                guard sqlite3_open_v2(path, &opened, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK,
                    sqlite3_exec(opened, "PRAGMA schema_version", nil, nil, nil) == SQLITE_OK
                else {
                    sqlite3_close(opened)
                    return
                }
                sqlite3_busy_timeout(opened, 1000)
                handle = opened
            }
            sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
        }
    }

    /// ``checkpoint()`` on a thread of its own, for callers on the cooperative pool: a pass copies pages and
    /// syncs the database file.
    public func checkpointInBackground() async {
        await Self.offCallerThread { self.checkpoint() }
    }

    /// Runs blocking file work (opening, copies, syncs) on a dispatch thread and suspends until it is done, so
    /// that it never holds one of the cooperative pool's few threads.
    private static func offCallerThread<Result: Sendable>(_ work: @escaping @Sendable () -> Result) async -> Result {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result, Never>) in
            DispatchQueue.global(qos: .utility).async { continuation.resume(returning: work()) }
        }
    }

    public func close() async {
        let queue = connection.withLock { $0?.queue }
        state.withLock { $0.phase = .closed }
        if queue != nil, let problem = Self.unwritableFile(path) {
            // Closing the last connection checkpoints through the shared-memory mapping, which SIGBUSes once the
            // file is immutable. The process is ending; every commit is already in the WAL.
            logger.warning("database left as it is, without a final checkpoint: \(problem)")
            return
        }
        checkpointConnection.withLock { handle in
            sqlite3_close(handle)
            handle = nil
        }
        guard let queue else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.asyncWriteWithoutTransaction { db in
                _ = try? db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
                continuation.resume()
            }
        }
        // Closing the last connection may checkpoint and sync files.
        await Self.offCallerThread { try? queue.close() }
    }
}

/// Startup failures of the SQLite backend that end the process with status 2 (storage.md §3.2, §5.4).
public enum SQLiteStartError: Error, CustomStringConvertible, Sendable {
    case inUse(String)
    case schemaTooNew(String)

    public var description: String {
        switch self {
        case .inUse(let path): return "database \(path) is in use by another coordinated"
        case .schemaTooNew(let detail): return detail
        }
    }
}

/// Keeps the WAL small: a background checkpoint once it passes ``backgroundFrames`` after a commit, and a
/// checkpoint on the writer itself once it passes ``writerFrames``.
///
/// A small WAL that SQLite keeps rewriting from the start stays in the page cache with its blocks allocated;
/// one that grows for the ten seconds between periodic checkpoints makes every commit extend the file, and the
/// filesystem zeroes each newly allocated block first. SQLite restarts the WAL from the beginning only when a
/// write starts after a checkpoint has copied every frame, which a background checkpoint never achieves while
/// writes keep arriving; so past ``writerFrames`` the writer, between two commits, copies the few frames the
/// background checkpoints have not (the same place SQLite's own auto-checkpoint runs).
final class WALCheckpointTrigger: Sendable {
    static let backgroundFrames: Int32 = 1000
    static let writerFrames: Int32 = 4000

    /// Set once, right after initialisation and before any connection exists.
    nonisolated(unsafe) var checkpoint: @Sendable () -> Void = {}
    private let running = Atomic<Bool>(false)
    private let requested = Atomic<Bool>(false)
    /// The WAL size (in frames) at which the next background pass starts. A passive pass cannot rewind a WAL that
    /// keeps being written, so the WAL stays past any fixed threshold until the writer's RESTART: starting a pass
    /// at every commit past it made one checkpoint (a copy and an fsync of the database file, and a thread
    /// woken) per commit. One pass per ``backgroundFrames`` written copies the same frames with a fraction of the
    /// passes. Read and written only by the hook, which runs on the writer connection (one thread at a time).
    private let nextBackgroundPass = Atomic<Int32>(backgroundFrames)
    /// Held by each background pass and by the writer's RESTART, so that they take turns.
    private let turn = Locked<Void>(())

    /// Background passes run so far (``SQLiteBackend/counters``).
    let backgroundPasses = Atomic<Int>(0)

    /// Snapshot readers open (``SQLiteSnapshot``).
    let openReaders = Atomic<Int>(0)

    func exclusively(_ body: () -> Void) { turn.withLock { _ in body() } }

    func readerOpened() { openReaders.add(1, ordering: .relaxed) }

    func readerClosed() {
        // The WAL may have grown past the writer's threshold meanwhile; the next commit rewinds it.
        openReaders.subtract(1, ordering: .relaxed)
    }

    func install(on handle: OpaquePointer?) {
        sqlite3_wal_hook(
            handle,
            { context, connection, _, frames in
                guard let context else { return SQLITE_OK }
                let trigger = Unmanaged<WALCheckpointTrigger>.fromOpaque(context).takeUnretainedValue()
                guard frames >= WALCheckpointTrigger.backgroundFrames else {
                    // A short WAL (it was rewound): the first pass is due at the threshold again.
                    trigger.nextBackgroundPass.store(WALCheckpointTrigger.backgroundFrames, ordering: .relaxed)
                    return SQLITE_OK
                }
                // A snapshot reader (an export) pins the WAL: RESTART would wait for it with the writer stopped.
                if frames >= WALCheckpointTrigger.writerFrames, trigger.openReaders.load(ordering: .relaxed) == 0 {
                    // SQLite does not wait for another connection's checkpoint to release the checkpointer lock (it
                    // answers SQLITE_BUSY at once), so on a loaded machine a writer racing the background passes
                    // could keep missing its turn while the WAL grows. Waiting for the background pass first
                    // makes the writer's RESTART happen: it copies every frame and waits out readers of the WAL,
                    // so the next write starts it from the beginning.
                    trigger.exclusively {
                        sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_RESTART, nil, nil)
                    }
                } else if frames >= trigger.nextBackgroundPass.load(ordering: .relaxed) {
                    trigger.nextBackgroundPass.store(frames + WALCheckpointTrigger.backgroundFrames, ordering: .relaxed)
                    trigger.start()
                }
                return SQLITE_OK
            },
            // Retained for good: GRDB may finish work on the connection after the backend is gone, and the hook
            // must never see a freed context. One small object per opened database.
            Unmanaged.passRetained(self).toOpaque())
    }

    /// Runs at most one background checkpoint at a time. Commits during a checkpoint leave a request behind,
    /// so the frames they added are copied by another pass as soon as this one ends.
    func start() {
        requested.store(true, ordering: .releasing)
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        DispatchQueue.global(qos: .utility).async {
            repeat {
                while self.requested.exchange(false, ordering: .acquiringAndReleasing) {
                    self.exclusively { self.checkpoint() }
                    self.backgroundPasses.add(1, ordering: .relaxed)
                }
                self.running.store(false, ordering: .releasing)
                // A request that arrived after the last pass but before `running` cleared would otherwise wait
                // for the next commit.
            } while self.requested.load(ordering: .acquiring)
                && self.running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing)
                    .exchanged
        }
    }
}
