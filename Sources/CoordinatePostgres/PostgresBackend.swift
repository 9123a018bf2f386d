import CoordinateEngine
import Foundation
import Locking
import Logging
import NIOCore
import NIOPosix
import PostgresWire
import Synchronization

/// Start-up failures of the PostgreSQL backend that end the process with status 2 (storage.md §5.4).
public enum PostgresStartError: Error, CustomStringConvertible, Sendable {
    case schemaTooNew(String)
    case configuration(String)

    public var description: String {
        switch self {
        case .schemaTooNew(let detail), .configuration(let detail): return detail
        }
    }
}

/// The `postgres` backend (storage.md §4): several daemons may share one database.
///
/// Invariants:
/// * Writes run in `READ COMMITTED` transactions (their reads after a row lock see the latest commits), each
///   read in one `REPEATABLE READ` transaction (one snapshot for all its statements), on one pooled connection.
///   The operations themselves run on a thread of the backend's pool (the engine's storage API is synchronous),
///   which waits for any round trip they make; a write batch's BEGIN and COMMIT are waited for by nobody
///   (``runWrites(on:)``). The pool has as many threads as connections (`postgres_pool_size`).
/// * Writes that queue up while every write runner is busy (``writeRunners``) share a transaction, in arrival
///   order, each seeing the ones before it; each is answered after the commit, and one that fails makes the
///   whole batch run again one write per transaction (``runBatch(_:started:)``).
/// * The operation's `now` is the database's transaction timestamp at `BEGIN` (§4.4); the operations of a batch
///   share it.
/// * Serialization failures, deadlocks and unique-key races with another daemon are retried after a jittered
///   pause kept by a timer, at least 10 times, before the operation fails with `internal error: storage
///   contention` (MD10).
/// * A lost connection is dropped; while the database cannot be reached every operation fails at once with
///   `storage unavailable: DETAIL`, and a background loop reconnects with backoff from 0.5 s to 30 s (§6.4).
public final class PostgresBackend: StorageBackend {
    public let name = "postgres"
    /// Every daemon on the database shares its clock (storage.md §4.4): operations take their time from it.
    public let timeSource = TimeSource.storage
    public let url: PostgresURL
    public let schema: String
    public let poolSize: Int
    private let writeTransactions: Int
    private let logger: Logger
    private let observer: (any StorageObserver)?
    let threads: NIOThreadPool
    /// Whether operations take `now` from the database (production) or from the engine's clock (engine-level
    /// tests with a manual clock, storage.md §7).
    let useDatabaseClock: Bool
    private let state = Locked(State())

    private enum Phase: Equatable {
        case initialising
        case ready
        case unavailable(String)
        case closed
    }

    private struct State {
        var phase: Phase = .initialising
        var idle: [SQLChannel] = []
        var reconnecting = false
    }

    /// Retries of a conflicting transaction before it fails with `storage contention`.
    static let maxRetries = 12

    /// Conflicts with another transaction, which another try may not meet: serialization failure, deadlock, a
    /// unique key another daemon took first, a row lock not available.
    static let conflictStates: Set<String> = ["40001", "40P01", "23505", "55P03"]

    /// Whether `error` is a conflict with another transaction (``conflictStates``, ``PostgresConflict``), also when
    /// it is the cause of a statement skipped after it (``sqlState(_:)``).
    static func isConflict(_ error: any Error) -> Bool {
        error is PostgresConflict || (sqlState(error).map(conflictStates.contains) ?? false)
    }

    /// Namespace and spec rows kept across this daemon's transactions.
    let catalog = CatalogCache()

    /// - Parameter writeTransactions: write transactions under way at once, at most (``writeRunners``).
    public init(
        url: PostgresURL, schema: String = "public", poolSize: Int = 10, writeTransactions: Int = 2, logger: Logger,
        observer: (any StorageObserver)? = nil, useDatabaseClock: Bool = true
    ) {
        self.useDatabaseClock = useDatabaseClock
        self.url = url
        self.schema = schema
        self.poolSize = max(1, poolSize)
        self.writeTransactions = max(1, writeTransactions)
        self.logger = logger
        self.observer = observer
        threads = NIOThreadPool(numberOfThreads: max(1, poolSize))
        threads.start()
    }

    // MARK: - Connections

    private func connect() throws -> SQLChannel {
        var connectionLogger = logger
        connectionLogger.logLevel = max(logger.logLevel, .warning)
        let connection = try WireConnection.connect(
            to: try url.configuration(), on: MultiThreadedEventLoopGroup.singleton.next()
        ).wait()
        let channel = SQLChannel(connection: connection, logger: connectionLogger, threadWaits: threadWaits)
        do {
            try channel.simple("SET search_path TO \(PostgresSchema.quoted(schema))")
            // The statements are prepared once per connection (see SQLChannel.send) and each has one good plan
            // whatever its parameters: an index walk by spec, key, bucket or deadline. Custom plans would cost
            // planning on every execution and, worse, follow the table statistics, which lag behind a spec
            // created or filled minutes ago: they then picked a unique-key scan plus a sort of every unit of
            // the spec to find the next ready unit.
            try channel.simple("SET plan_cache_mode = force_generic_plan")
        } catch {
            channel.close()
            throw error
        }
        return channel
    }

    func checkout() throws -> SQLChannel {
        while let idle = state.withLock({ $0.idle.popLast() }) {
            // A connection the server closed while it sat idle (a restart) is dropped, not reused.
            if !idle.connection.isClosed { return idle }
            idle.close()
        }
        return try connect()
    }

    func checkin(_ channel: SQLChannel) {
        let closed = state.withLock { state -> Bool in
            guard state.phase != .closed else { return true }
            state.idle.append(channel)
            return false
        }
        if closed { channel.close() }
    }

    func discard(_ channel: SQLChannel) {
        channel.close()
    }

    var where_: String { "\(url.host):\(url.port)" }

    // MARK: - Initialisation and health

    /// Connects and migrates (storage.md §5.2–§5.3). Keeps retrying with backoff while the database cannot be
    /// reached; a schema newer than supported at the first successful connection throws
    /// ``PostgresStartError/schemaTooNew(_:)``.
    public func initialize(now: @escaping @Sendable () -> Int64) async throws(PostgresStartError) {
        var delay = 0.5
        while true {
            if state.withLock({ $0.phase == .closed }) { return }
            let outcome: Result<Void, any Error> = await withCheckedContinuation { continuation in
                threads.submit { _ in
                    do {
                        let channel = try self.connect()
                        defer { self.discard(channel) }
                        try PostgresSchema.migrate(channel, schema: self.schema, now: now())
                        continuation.resume(returning: .success(()))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                }
            }
            switch outcome {
            case .success:
                state.withLock { $0.phase = .ready }
                logger.info("storage ready: postgres \(where_) schema \(schema)")
                return
            case .failure(let error as PostgresSchema.MigrationError):
                state.withLock { $0.phase = .unavailable(error.description) }
                logger.error("\(error.description)")
                throw .schemaTooNew(error.description)
            case .failure(let error):
                let detail = "cannot initialise postgres at \(where_): \(describe(error))"
                state.withLock { $0.phase = .unavailable("initialising") }
                logger.warning("\(detail); retrying in \(delay) s")
            }
            try? await Task.sleep(for: .seconds(delay))
            delay = min(delay * 2, 30)
        }
    }

    public func health() -> StorageHealth {
        switch state.withLock({ $0.phase }) {
        case .ready: return .available
        case .initialising: return StorageHealth(isAvailable: false, detail: "initialising")
        case .unavailable(let detail): return StorageHealth(isAvailable: false, detail: detail)
        case .closed: return StorageHealth(isAvailable: false, detail: "closed")
        }
    }

    /// The database cannot be reached: fail fast until a background loop reconnects.
    func lost(_ detail: String) {
        let start = state.withLock { state -> Bool in
            guard state.phase == .ready || state.phase == .initialising else {
                if case .unavailable = state.phase, !state.reconnecting { state.reconnecting = true; return true }
                return false
            }
            state.phase = .unavailable(detail)
            guard !state.reconnecting else { return false }
            state.reconnecting = true
            return true
        }
        guard start else { return }
        logger.error("storage unavailable: \(detail)")
        Task.detached { await self.reconnectLoop() }
    }

    private func reconnectLoop() async {
        var delay = 0.5
        while true {
            try? await Task.sleep(for: .seconds(delay))
            if state.withLock({ $0.phase == .closed }) { return }
            let result: Result<Int, any Error> = await withCheckedContinuation { continuation in
                threads.submit { _ in
                    do {
                        let channel = try self.connect()
                        let version = try PostgresSchema.version(channel, schema: self.schema)
                        self.checkin(channel)
                        continuation.resume(returning: .success(version))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                }
            }
            switch result {
            case .success(let version) where version > PostgresSchema.currentVersion:
                let detail = PostgresSchema.MigrationError.newerThanSupported(
                    found: version, supported: PostgresSchema.currentVersion
                ).description
                state.withLock {
                    $0.phase = .unavailable(detail)
                    $0.reconnecting = false
                }
                logger.error("\(detail)")
                return
            case .success:
                state.withLock {
                    $0.phase = .ready
                    $0.reconnecting = false
                }
                logger.info("storage available again: postgres \(where_)")
                return
            case .failure(let error):
                logger.warning("cannot reconnect to \(where_): \(describe(error)); retrying in \(delay) s")
                delay = min(delay * 2, 30)
            }
        }
    }

    /// Re-reads the schema version (storage.md §5.6): another daemon may have migrated beyond what this one
    /// supports. Called by the daemon at least every 5 s.
    /// The pool's connections and the listener's.
    public var descriptorDemand: Int { poolSize + 4 }

    /// Connects and migrates (``initialize(now:)``).
    public func start(clock: any EngineClock) async throws(StorageStartError) {
        do throws(PostgresStartError) {
            try await initialize(now: { clock.now() })
        } catch {
            throw StorageStartError(error.description)
        }
    }

    /// Every five seconds, notices another daemon having migrated the schema beyond this one (storage.md §5.6).
    public func maintain(second: Int) async -> Bool {
        if second % 5 == 0 { await checkSchemaVersion() }
        return health().isAvailable
    }

    public func checkSchemaVersion() async {
        guard state.withLock({ $0.phase == .ready }) else { return }
        let version: Int? = await withCheckedContinuation { continuation in
            threads.submit { _ in
                guard let channel = try? self.checkout() else { return continuation.resume(returning: nil) }
                let version = try? PostgresSchema.version(channel, schema: self.schema)
                if version == nil { self.discard(channel) } else { self.checkin(channel) }
                continuation.resume(returning: version)
            }
        }
        if let version, version > PostgresSchema.currentVersion {
            let detail = PostgresSchema.MigrationError.newerThanSupported(
                found: version, supported: PostgresSchema.currentVersion
            ).description
            state.withLock { $0.phase = .unavailable(detail) }
            logger.error("\(detail)")
        }
    }

    // MARK: - Operations

    /// A write operation waiting for a transaction.
    private struct QueuedWrite {
        let hint: StorageReadHint?
        let body: @Sendable (any StorageSession) throws -> Void
        let completion: @Sendable ((any Error)?) -> Void
    }

    /// Write operations not yet taken by a runner, and how many runners are draining them.
    private struct WriteQueue {
        var waiting: [QueuedWrite] = []
        var runners = 0
    }

    private let writes = Locked(WriteQueue())

    /// How write batches and conflict retries have fared since start.
    public struct BatchStatistics: Sendable, Equatable {
        /// Transactions that ran more than one write.
        public var batches = 0
        /// Writes committed in those transactions.
        public var batchedWrites = 0
        /// Batches undone and run again one write per transaction (a refusal after a write, a failed statement).
        public var isolatedBatches = 0
        /// Transactions retried after a conflict with another transaction (a unique key, a deadlock).
        public var conflictRetries = 0
        /// Reads sent with BEGIN for what an operation said it reads first (``StorageReadHint``), and how many of
        /// them the operation used.
        public var readsAhead = 0
        public var readsAheadUsed = 0
        /// Grants that took their spec lock and units from what an earlier grant of the same transaction read.
        public var grantsFromReserve = 0
        /// Units inserted by COPY (adds of many units whose keys were all new).
        public var unitsCopied = 0
        /// Times a pool thread waited for an answer of the database: a read operation's round trips, an operation's
        /// round trip in the middle of its body (a read not sent ahead), the writes of a failed batch run again
        /// one by one. A write batch's BEGIN, COMMIT and reads sent ahead keep no thread waiting.
        public var threadWaits = 0
    }

    private let batchCounts = Locked(BatchStatistics())
    private let threadWaits = ThreadWaits()

    /// How write batches have fared since start.
    public var batchStatistics: BatchStatistics {
        var statistics = batchCounts.withLock { $0 }
        statistics.threadWaits = threadWaits.total
        return statistics
    }

    public var counters: [StorageCounter] {
        let statistics = batchStatistics
        return [
            StorageCounter(
                name: "write_batches", help: "Transactions that carried more than one write.",
                value: statistics.batches),
            StorageCounter(
                name: "batched_writes", help: "Writes committed in transactions shared with other writes.",
                value: statistics.batchedWrites),
            StorageCounter(
                name: "batch_reruns",
                help: "Write batches undone and run again one write per transaction (a write failed).",
                value: statistics.isolatedBatches),
            StorageCounter(
                name: "conflict_retries", help: "Transactions retried after a conflict with another transaction.",
                value: statistics.conflictRetries),
            StorageCounter(
                name: "reads_ahead", help: "Reads sent with the start of a transaction for what it reads first.",
                value: statistics.readsAhead),
            StorageCounter(
                name: "reads_ahead_used", help: "Reads sent ahead that the operation then used.",
                value: statistics.readsAheadUsed),
            StorageCounter(
                name: "grants_from_reserve",
                help: "Grants served by the units an earlier grant of the same transaction read for them.",
                value: statistics.grantsFromReserve),
            StorageCounter(
                name: "units_copied", help: "Units inserted by COPY (adds of many units whose keys were all new).",
                value: statistics.unitsCopied),
            StorageCounter(
                name: "thread_waits",
                help: "Times a pool thread waited for the database (reads, and round trips in the middle of a write).",
                value: statistics.threadWaits),
        ]
    }

    /// Write operations one transaction runs at most: enough that a busy daemon commits a few times per
    /// millisecond rather than once per request, few enough that the row locks a batch holds are released soon.
    static let maxBatch = 64

    /// Transactions of queued writes under way at once: `postgres_write_transactions` (default 2), and at most
    /// half the pool, leaving the other connections to reads. Each takes every write queued meanwhile, so fewer
    /// runners make larger batches — fewer commits, sweeps and WAL flushes, and fewer transactions contending
    /// for the head of a ready queue — while two already keep a connection busy during the other's round trips
    /// (BENCHMARKS.md: two against four and five, at 8 and 64 workers).
    var writeRunners: Int { max(1, min(writeTransactions, poolSize / 2)) }

    public func execute(
        _ mode: AccessMode, _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        execute(mode, readingFirst: nil, body, completion: completion)
    }

    public func execute(
        _ mode: AccessMode, readingFirst hint: StorageReadHint?,
        _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        switch state.withLock({ $0.phase }) {
        case .ready: break
        case .initialising: return completion(StorageError.unavailable("initialising"))
        case .unavailable(let detail): return completion(StorageError.unavailable(detail))
        case .closed: return completion(StorageError.unavailable("closed"))
        }
        guard mode == .write else {
            threads.submit { _ in self.run(mode, hint, body, completion: completion) }
            return
        }
        // Writes that arrive while every runner is busy wait here and then share one transaction: one BEGIN, one
        // expiry sweep, one COMMIT (one WAL flush) and the namespace and spec rows read once for all of them.
        let startRunner = writes.withLock { queue -> Bool in
            queue.waiting.append(QueuedWrite(hint: hint, body: body, completion: completion))
            guard queue.runners < writeRunners else { return false }
            queue.runners += 1
            return true
        }
        if startRunner { threads.submit { _ in self.runWrites(on: nil) } }
    }

    /// Takes up to ``maxBatch`` queued writes, in arrival order; with none waiting, the caller stops being a
    /// runner.
    private func takeWrites() -> [QueuedWrite] {
        writes.withLock { queue -> [QueuedWrite] in
            guard !queue.waiting.isEmpty else {
                queue.runners -= 1
                return []
            }
            let count = min(queue.waiting.count, Self.maxBatch)
            defer { queue.waiting.removeFirst(count) }
            return Array(queue.waiting.prefix(count))
        }
    }

    /// A runner: runs queued writes, a batch per transaction, until none is left, on one connection kept from
    /// batch to batch (`channel`; nil for a new runner, or after a failure released it).
    ///
    /// No thread waits for a runner's BEGIN or COMMIT. The statements that begin a transaction are sent and the
    /// runner returns; their answers bring the batch to a pool thread, which runs its operations and sends their
    /// writes with the COMMIT; the COMMIT's answer completes the batch on the connection's event loop, which
    /// begins the next batch there. A pool thread waits only for a read an operation could not have sent ahead.
    private func runWrites(on channel: SQLChannel?) {
        var batch = takeWrites()
        guard !batch.isEmpty else {
            if let channel { checkin(channel) }
            return
        }
        if state.withLock({ $0.phase == .closed }) { return abandon(batch, channel) }
        if let channel { return beginBatch(batch, on: channel) }
        // Checking a connection out may mean connecting: this is a pool thread.
        while true {
            do {
                return beginBatch(batch, on: try checkout())
            } catch {
                let detail = "cannot connect to \(where_): \(describe(error))"
                lost(detail)
                for write in batch { write.completion(StorageError.unavailable(detail)) }
            }
            batch = takeWrites()
            if batch.isEmpty { return }
        }
    }

    /// Sends what begins the batch's transaction; its answers go on in ``runBatch(_:started:)``.
    private func beginBatch(_ batch: [QueuedWrite], on channel: SQLChannel) {
        let started = begin(.write, batch.map(\.hint), on: channel)
        channel.whenAnswered {
            self.threads.submit { state in
                guard state == .active else { return self.abandon(batch, channel) }
                self.runBatch(batch, started: started)
            }
        }
    }

    /// The backend closed under a runner: its writes fail, as do the writes still queued, and it stops.
    private func abandon(_ batch: [QueuedWrite], _ channel: SQLChannel?) {
        if let channel { discard(channel) }
        var batch = batch
        repeat {
            for write in batch { write.completion(StorageError.unavailable("closed")) }
            batch = takeWrites()
        } while !batch.isEmpty
    }

    /// Runs the operations of a batch, each seeing the ones before it, and sends the COMMIT, whose answer
    /// completes each with its error or nil. An operation's own refusal (an error that is not the database's) is
    /// its answer alone, provided it wrote nothing before refusing. Anything else — a refusal after a write, a
    /// failed statement, a conflict with another daemon — undoes the whole batch, which then runs one operation
    /// per transaction, so a bad request never fails its neighbours and each gets exactly the answer it would
    /// get alone.
    private func runBatch(_ batch: [QueuedWrite], started: StartedTransaction) {
        let channel = started.channel
        var refusals = [(any Error)?](repeating: nil, count: batch.count)
        do {
            let session = try openSession(started, batch.map(\.hint))
            for (index, operation) in batch.enumerated() {
                let writesBefore = session.writeCount
                do {
                    try operation.body(session)
                } catch {
                    guard !isDatabaseFailure(error), session.writeCount == writesBefore else { throw error }
                    refusals[index] = error
                }
            }
            record(session, readsAhead: started.readsAhead)
            // The counter writes travel with the COMMIT, behind any writes not yet awaited. Should one fail, the
            // server answers the COMMIT of the aborted transaction with a rollback, and the failure below
            // reports it.
            try session.sendCounts()
        } catch {
            return batchFailed(batch, error, reported: release(channel, after: error))
        }
        let commit = channel.send("COMMIT")
        let sent = ContinuousClock.now
        let answers = refusals
        channel.whenAnswered {
            // On the connection's event loop, with every answer in: nothing here waits.
            do {
                _ = try channel.finishAfterDeferred(commit)
            } catch {
                if isConnectionFailure(error) {
                    // Only a connection lost meanwhile leaves the COMMIT's fate unknown.
                    channel.discardUnsent()
                    self.discard(channel)
                    for operation in batch { operation.completion(StorageError.unavailable("commit outcome unknown")) }
                    return self.threads.submit { state in
                        guard state == .active else { return self.abandon([], nil) }
                        self.runWrites(on: nil)
                    }
                }
                return self.threads.submit { state in
                    guard state == .active else { return self.abandon(batch, channel) }
                    self.batchFailed(batch, error, reported: self.release(channel, after: error))
                }
            }
            self.observer?.storageOperation("commit", seconds: Engine.seconds(since: sent))
            if batch.count > 1 {
                self.batchCounts.withLock {
                    $0.batches += 1
                    $0.batchedWrites += batch.count
                }
            }
            for (operation, error) in zip(batch, answers) { operation.completion(error) }
            self.runWrites(on: channel)
        }
    }

    /// After a batch's transaction failed and was rolled back (on a pool thread): a lone operation gets its error,
    /// or is tried again after a conflict; a batch runs again one operation per transaction. Then the runner goes
    /// on, on a new connection.
    private func batchFailed(_ batch: [QueuedWrite], _ error: any Error, reported: any Error) {
        if batch.count == 1, let operation = batch.first {
            if Self.isConflict(error) {
                retryLater(.write, operation.hint, operation.body, after: 0, completion: operation.completion)
            } else {
                operation.completion(reported)
            }
        } else {
            batchCounts.withLock { $0.isolatedBatches += 1 }
            for operation in batch { run(.write, operation.hint, operation.body, completion: operation.completion) }
        }
        runWrites(on: nil)
    }

    /// One operation in a transaction of its own, on a pool thread, with its retries; completes with the error to
    /// report, or nil. Reads run so, and the writes of a failed batch again one by one.
    private func run(
        _ mode: AccessMode, _ hint: StorageReadHint?, _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        attempt: Int = 0, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        switch transaction(mode, [hint], body) {
        case .committed: completion(nil)
        case .commitUnknown(let error): completion(error)
        case .failed(let error, let retry):
            guard retry else { return completion(error) }
            retryLater(mode, hint, body, after: attempt, completion: completion)
        }
    }

    /// Tries an operation again after a conflict with another daemon, after a jittered pause from about 1 ms,
    /// doubling with each attempt. The pause is a timer, not a sleeping thread: the pool thread goes on with other
    /// work meanwhile, and the retry comes back to the pool when the timer fires.
    private func retryLater(
        _ mode: AccessMode, _ hint: StorageReadHint?, _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        after attempt: Int, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        guard attempt < Self.maxRetries else { return completion(StorageError.contention) }
        batchCounts.withLock { $0.conflictRetries += 1 }
        let base = min(Double(1 << min(attempt + 1, 8)), 256) * 0.0005
        let pause = TimeAmount.nanoseconds(Int64(base * Double.random(in: 0.5...1.5) * 1e9))
        MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: pause) {
            self.threads.submit { state in
                // The backend closed during the pause.
                guard state == .active else { return completion(StorageError.unavailable("closed")) }
                self.run(mode, hint, body, attempt: attempt + 1, completion: completion)
            }
        }
    }

    /// How one transaction ended.
    private enum TransactionOutcome {
        case committed
        /// The connection failed while the COMMIT was under way: whether it applied is unknown.
        case commitUnknown(any Error)
        /// Rolled back: the error to report and whether another try may succeed (a conflict with another
        /// transaction, tried again after a pause).
        case failed(any Error, retry: Bool)
    }

    /// A transaction whose BEGIN, sweep and reads ahead were sent on `channel` and not yet awaited.
    private struct StartedTransaction {
        let channel: SQLChannel
        let begin: SQLChannel.Pending
        let sweep: SQLChannel.Pending?
        let readsAhead: PostgresSession.ReadsAhead
    }

    /// Sends BEGIN and, on the database clock, the sweep every operation starts with, and what the operations
    /// read first (each read sees the sweep's changes), without waiting. The sweep also answers the clock, one
    /// statement less (each is a round trip, BENCHMARKS.md): the operation's `now` is the transaction's start
    /// time on the database clock (storage.md §4.4). A read sees one snapshot: under READ COMMITTED each of its
    /// statements would see the commits made since the previous one, and an answer assembled from several (a
    /// worker's held units: its attempts, then each unit, then each unit's history) could mix two states.
    private func begin(_ mode: AccessMode, _ hints: [StorageReadHint?], on channel: SQLChannel) -> StartedTransaction {
        let begin = channel.send(
            mode == .write ? "BEGIN ISOLATION LEVEL READ COMMITTED" : "BEGIN ISOLATION LEVEL REPEATABLE READ")
        let sweep =
            useDatabaseClock
            ? channel.send(PostgresSession.sweepWithClockSQL, [PostgresSession.keptNamespaces(catalog)]) : nil
        let readsAhead =
            sweep == nil
            ? PostgresSession.ReadsAhead() : PostgresSession.sendReadsAhead(hints, catalog: catalog, channel: channel)
        return StartedTransaction(channel: channel, begin: begin, sweep: sweep, readsAhead: readsAhead)
    }

    /// The session of a begun transaction, once BEGIN and the sweep are answered.
    private func openSession(_ started: StartedTransaction, _ hints: [StorageReadHint?]) throws -> PostgresSession {
        let channel = started.channel
        // The sweep's answer comes after BEGIN's: waiting for it first is one wake-up for both.
        let swept = started.sweep.map { sweep in Result { try channel.finish(sweep) } }
        try channel.finish(started.begin)
        guard let swept else { return PostgresSession(channel: channel, transactionTime: nil, catalog: catalog) }
        let (time, sweepRows) = try PostgresSession.splitClock(try swept.get())
        return PostgresSession(
            channel: channel, transactionTime: time, sweepRows: sweepRows, catalog: catalog,
            readsAhead: started.readsAhead, hints: hints)
    }

    /// Counts what the session's operations used of what was sent ahead for them.
    private func record(_ session: PostgresSession, readsAhead: PostgresSession.ReadsAhead) {
        session.dropReadsAhead()
        guard readsAhead.count > 0 || session.grantsFromReserve > 0 || session.unitsCopied > 0 else { return }
        let (used, fromReserve, copied) = (session.readsAheadUsed, session.grantsFromReserve, session.unitsCopied)
        batchCounts.withLock {
            $0.readsAhead += readsAhead.count
            $0.readsAheadUsed += used
            $0.grantsFromReserve += fromReserve
            $0.unitsCopied += copied
        }
    }

    /// Runs `body` in one transaction on a pooled connection, this thread waiting for each round trip; `hints`
    /// name what each of its operations reads first, in order.
    private func transaction(
        _ mode: AccessMode, _ hints: [StorageReadHint?], _ body: @Sendable (PostgresSession) throws -> Void
    ) -> TransactionOutcome {
        let channel: SQLChannel
        do {
            channel = try checkout()
        } catch {
            let detail = "cannot connect to \(where_): \(describe(error))"
            lost(detail)
            return .failed(StorageError.unavailable(detail), retry: false)
        }
        var committing = false
        do {
            let started = begin(mode, hints, on: channel)
            let session = try openSession(started, hints)
            try body(session)
            record(session, readsAhead: started.readsAhead)
            if mode == .write {
                // As in a batch (``runBatch(_:started:)``), the counter writes travel with the COMMIT.
                try session.sendCounts()
                committing = true
                let sent = ContinuousClock.now
                // Only a connection lost meanwhile leaves the COMMIT's fate unknown (below).
                _ = try channel.finishAfterDeferred(channel.send("COMMIT"))
                observer?.storageOperation("commit", seconds: Engine.seconds(since: sent))
            } else {
                try channel.finishDeferred()
                try channel.simple("ROLLBACK")
            }
            checkin(channel)
            return .committed
        } catch {
            if committing, isConnectionFailure(error) {
                channel.discardUnsent()
                discard(channel)
                return .commitUnknown(StorageError.unavailable("commit outcome unknown"))
            }
            let reported = release(channel, after: error)
            return .failed(reported, retry: Self.isConflict(error))
        }
    }

    /// Ends the channel's transaction and puts it back in the pool, or drops it when even that fails.
    func rollBackAndReturn(_ channel: SQLChannel) {
        if (try? channel.simple("ROLLBACK")) != nil { checkin(channel) } else { discard(channel) }
    }

    /// After a failed transaction: returns `channel` to the pool rolled back (or drops it when the connection
    /// itself failed) and gives the error to report — `storage unavailable` for the database's failures, the
    /// error itself for engine refusals.
    func release(_ channel: SQLChannel, after error: any Error) -> any Error {
        channel.discardUnsent()
        _ = try? channel.finishDeferred()
        if isConnectionFailure(error) {
            // The connection itself failed, or the server ended it.
            discard(channel)
            let detail = "lost connection to \(where_): \(describe(error))"
            lost(detail)
            return StorageError.unavailable(detail)
        }
        rollBackAndReturn(channel)
        if let code = sqlState(error) { return StorageError.unavailable("database error \(code): \(describe(error))") }
        return error
    }

    deinit {
        // Idle connections say goodbye to the server rather than leaving it to notice the closed socket.
        let channels = state.withLock { state -> [SQLChannel] in
            defer { state.idle.removeAll() }
            return state.idle
        }
        for channel in channels { channel.close() }
        threads.shutdownGracefully { _ in }
    }

    public func close() async {
        let channels = state.withLock { state -> [SQLChannel] in
            state.phase = .closed
            defer { state.idle.removeAll() }
            return state.idle
        }
        for channel in channels { _ = try? await channel.connection.close().get() }
        try? await threads.shutdownGracefully()
    }
}
