import CBOR

/// A failure of the storage layer. The RPC surface renders it as `storage unavailable: DETAIL`
/// (storage.md §6) or, for contention, `internal error: storage contention` (storage.md §4.2 MD10).
public enum StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The backend cannot serve requests now (initialising, unreachable, disk full, file removed, …).
    case unavailable(String)
    /// Conflicting concurrent transactions could not be serialized within the retry budget.
    case contention
    /// The backend found data it cannot interpret.
    case corrupt(String)

    public var description: String {
        switch self {
        case .unavailable(let detail): return "storage unavailable: \(detail)"
        case .contention: return "internal error: storage contention"
        case .corrupt(let detail): return "internal error: \(detail)"
        }
    }
}

/// Whether an operation changes state. Backends may run reads without a write transaction, provided they
/// observe only committed state (storage.md §1.2.4).
/// Receives storage timings and failures for metrics (`coordinate_storage_operation_seconds`,
/// `coordinate_storage_errors_total`, rest-api.md §6).
public protocol StorageObserver: Sendable {
    /// Time spent in the backend: `op` is `read`, `write` or `commit`.
    func storageOperation(_ op: String, seconds: Double)
    /// A storage operation failed in the backend (not a semantic refusal).
    func storageError()
    /// A read found `count` stored values damaged (``StoredData``).
    func storageDamage(count: Int)
}

public enum AccessMode: Sendable {
    case read
    case write
}

/// A storage backend: it runs engine operations atomically and reports each result only once its effects are
/// durable (storage.md §1.1–1.2).
public protocol StorageBackend: Sendable {
    /// A short name for logs and metrics: `memory`, `sqlite`, `postgres`.
    var name: String { get }

    /// Where operations take their current time from (``StorageSession/databaseTime``).
    var timeSource: TimeSource { get }

    /// Makes the backend ready to serve: opens or connects to durable storage and migrates it. Until it returns,
    /// operations fail with `storage unavailable: initialising`. It throws only what must end the process (a
    /// schema newer than this build supports); any other problem leaves the backend unavailable, logged.
    func start(clock: any EngineClock) async throws(StorageStartError)

    /// The backend's own upkeep, once a second, before the engine's maintenance (file checks, checkpoints,
    /// schema-version checks). Answers whether the backend can serve now: the engine's maintenance is skipped
    /// for that second when it cannot. `second` counts the seconds since maintenance began.
    func maintain(second: Int) async -> Bool

    /// File descriptors the backend may hold open at most, for the daemon's descriptor budget.
    var descriptorDemand: Int { get }

    /// Runs `body` as one atomic operation with exclusive use of a session, then calls `completion` once the
    /// operation's effects are durable: with nil, or with the error that `body` threw or that prevented the
    /// commit. `body` may run on any thread; `completion` may be called on any thread, possibly before
    /// `execute` returns. The callee is deliberately not generic: results travel in the caller's closures, so
    /// the hot path never instantiates generic metadata at run time.
    ///
    /// If `body` throws, none of its effects persist.
    func execute(
        _ mode: AccessMode, _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void)

    /// ``execute(_:_:completion:)`` told what the operation will read first (``StorageReadHint``), so that a
    /// backend paying a round trip per statement can send that read with the start of the transaction.
    func execute(
        _ mode: AccessMode, readingFirst hint: StorageReadHint?,
        _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void)

    /// Reports whether the backend can currently serve requests (for `/healthz` and metrics).
    func health() -> StorageHealth

    /// Counters of the backend's own mechanics since start (exported as `coordinate_storage_NAME_total`).
    var counters: [StorageCounter] { get }

    /// Flushes and closes the backend; later `execute` calls fail with `unavailable`.
    func close() async

    /// Opens a read-only view of committed state for a long read (export), which writers are not held up by.
    /// `completion` may be called on any thread.
    func openSnapshot(completion: @escaping @Sendable (Result<any StorageSnapshot, any Error>) -> Void)
}

/// What an operation will read first, named before it starts. A hint changes no result: a backend may ignore it,
/// and one that reads ahead uses what it read only if the operation then makes exactly that read (the names
/// are resolved again inside the transaction, where they may have changed).
public enum StorageReadHint: Sendable {
    /// A grant (`get_work`): the specs of a namespace, as scheduling reads them
    /// (``StorageSession/specs(namespace:)``), then up to `count` ready units of the spec it picks
    /// (``StorageSession/lockSpecForGrant(_:expecting:)``, ``StorageSession/readyUnits(spec:limit:)``).
    case grant(namespace: Identifier, count: Int)
    /// One unit by its spec and key (``StorageSession/unit(spec:key:)``).
    case unit(namespace: Identifier, spec: Identifier, key: Identifier)
    /// One worker by its id (``StorageSession/worker(namespace:id:)``): a heartbeat.
    case worker(namespace: Identifier, id: Identifier)
}

extension StorageBackend {
    /// Backends that cannot use a hint run the operation as if none were given.
    public func execute(
        _ mode: AccessMode, readingFirst hint: StorageReadHint?,
        _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        execute(mode, body, completion: completion)
    }
}

/// A read-only view of the storage for a long read, taken by ``StorageBackend/openSnapshot(completion:)``.
///
/// Reads go through the ``StorageSession`` API (never ``StorageSession/materialize(now:)``, and never a
/// write), one at a time. The owner closes the snapshot when done, including on failure.
public protocol StorageSnapshot: AnyObject, Sendable {
    /// Whether every read sees one and the same committed state while writers carry on (SQLite's WAL read
    /// transaction, PostgreSQL's repeatable-read transaction). When false (the memory backend), each read sees
    /// the state of its own moment, and a caller that needs one consistent view reads everything at once.
    var isIsolated: Bool { get }
    /// When the view was taken, on the clock operations use (the database's, for PostgreSQL); nil when the
    /// backend has no clock of its own.
    var takenAt: Timestamp? { get }
    /// Runs `body` against the view on a thread of the backend's that may block, then calls `completion`.
    func read(
        _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Ends the view and releases what it holds (a connection, a read transaction).
    func close()
}

/// One counter of a backend's mechanics (``StorageBackend/counters``).
public struct StorageCounter: Sendable, Equatable {
    /// The metric name's middle part: `coordinate_storage_<name>_total`.
    public var name: String
    /// The metric's help text.
    public var help: String
    public var value: Int

    public init(name: String, help: String, value: Int) {
        self.name = name
        self.help = help
        self.value = value
    }
}

/// Where a backend's operations take "now" from.
public enum TimeSource: Sendable, Equatable {
    /// The engine's clock (one process owns the storage).
    case engineClock
    /// The database's clock, shared by every daemon on that database (storage.md §4.4): a reader of the current
    /// time must ask through an operation.
    case storage
}

/// Why a backend could not start and the process must end (``StorageBackend/start(clock:)``).
public struct StorageStartError: Error, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

extension StorageBackend {
    /// Backends owned by one process use the engine's clock.
    public var timeSource: TimeSource { .engineClock }

    /// A backend ready from construction has nothing to start.
    public func start(clock: any EngineClock) async throws(StorageStartError) {}

    /// A backend without upkeep of its own serves while it is healthy.
    public func maintain(second: Int) async -> Bool { health().isAvailable }

    /// A backend that holds no descriptors of its own.
    public var descriptorDemand: Int { 0 }

    /// A backend without counters of its own.
    public var counters: [StorageCounter] { [] }
}

public struct StorageHealth: Sendable, Equatable {
    public var isAvailable: Bool
    public var detail: String?

    public init(isAvailable: Bool, detail: String? = nil) {
        self.isAvailable = isAvailable
        self.detail = detail
    }

    public static let available = StorageHealth(isAvailable: true)
}

/// Which units a listing wants, in which order: the one definition of the ready order (semantics.md §4.3), which
/// the memory backend compares with and the SQL backends sort and index by.
public enum UnitOrder: Sendable {
    /// Key ascending.
    case key
    /// Priority descending, then key ascending: the order units are granted in.
    case priority

    /// The order as an SQL `ORDER BY` list over `work_unit`'s columns, qualified by `alias` when given.
    public func sql(_ alias: String? = nil) -> String {
        let column = { (name: String) in alias.map { "\($0).\(name)" } ?? name }
        switch self {
        case .key: return column("key")
        case .priority: return "\(column("priority")) DESC, \(column("key"))"
        }
    }

    /// Whether a unit of priority `a` comes before one of priority `b` in the ready order; `keyPrecedes` says
    /// whether its key comes first (octet order), and is asked only on equal priorities.
    @inlinable
    public static func readyPrecedes(_ a: Double, _ b: Double, keyPrecedes: () -> Bool) -> Bool {
        a != b ? a > b : keyPrecedes()
    }
}

/// The data access an engine operation needs, expressed so that memory structures and SQL can both provide it
/// efficiently. A session is used by one operation at a time; every method may throw a ``StorageError``.
///
/// Contract for time: the engine calls ``materialize(now:)`` at the start of every operation, which applies
/// ``Expiry`` to what is due at `now`: lapsed leases become AVAILABLE with their attempt `expired`, delayed units
/// whose time came become ready, lapsed locks go. Reads then see the state observed at `now`. A backend shared by
/// several daemons may leave a due row that another transaction holds for that transaction to sweep
/// (PostgreSQL's `SKIP LOCKED`); the units it answers still show that row as ``UnitRecord/bucket(at:)`` says —
/// ready, not pending — while its counters may lag until the holder commits.
public protocol StorageSession: AnyObject {
    /// Applies every time-based transition due at `now` (lease expiry, delayed units becoming ready, lock
    /// expiry). Idempotent.
    /// Returns the number of leases that expired, by spec id.
    func materialize(now: Timestamp) throws -> [Int64: Int]

    // MARK: Namespaces

    func namespace(named name: Identifier) throws -> NamespaceRecord?
    func createNamespace(named name: Identifier) throws -> NamespaceRecord
    /// All namespaces in name order.
    func allNamespaces() throws -> [NamespaceRecord]
    /// Deletes everything in the namespace; the record itself is kept when `keepRecord` is true.
    func deleteNamespace(_ namespace: NamespaceRecord, keepRecord: Bool) throws

    // MARK: Specs

    /// All specs of a namespace in name order.
    func specs(namespace: Int64) throws -> [SpecRecord]
    /// A number that changes whenever a spec of the namespace is created, updated or deleted; the engine caches
    /// the scheduler graph under it (storage.md §4.5).
    func specGeneration(namespace: Int64) throws -> UInt64
    func spec(namespace: Int64, named name: Identifier) throws -> SpecRecord?
    func spec(id: Int64) throws -> SpecRecord?
    /// Inserts a new spec and returns it with its id.
    func insertSpec(_ spec: SpecRecord) throws -> SpecRecord
    func updateSpec(_ spec: SpecRecord) throws
    /// Deletes the spec with its units and their attempts.
    func deleteSpec(_ spec: SpecRecord) throws

    // MARK: Units

    func unit(spec: Int64, key: Identifier) throws -> UnitRecord?
    /// The unit an attempt belongs to, or nil if it was deleted.
    func unit(of attempt: AttemptRecord) throws -> UnitRecord?
    /// Inserts a new unit (its bucket follows from its fields at the last materialized instant) and returns it
    /// with its id.
    func insertUnit(_ unit: UnitRecord) throws -> UnitRecord
    /// Inserts each of `units` (new units, all of one spec, distinct keys) whose key is not taken yet, and
    /// returns the stored units whose keys were taken, in any order. A backend with round trips may do this in a
    /// few statements for any number of units.
    func insertUnitsIfAbsent(_ units: [UnitRecord]) throws -> [UnitRecord]
    /// Replaces the stored unit with the same id, moving it between buckets and indexes as needed. The engine
    /// never writes a PENDING unit whose lease already ran out (``EngineTransaction/store(_:)``).
    func updateUnit(_ unit: UnitRecord) throws
    /// Deletes the unit and its attempts.
    func deleteUnit(_ unit: UnitRecord) throws
    /// Live counts by bucket, from maintained counters.
    func unitCounts(spec: Int64) throws -> UnitCounts
    /// Up to `limit` ready units, best first (semantics.md §4.3).
    func readyUnits(spec: Int64, limit: Int) throws -> [UnitRecord]
    /// The priority of the best ready unit, or nil when there is none.
    func topReadyPriority(spec: Int64) throws -> Double?
    /// Units in `buckets` (all buckets when nil) with key ≥ `startKey`, in `order`, at most `limit`.
    func units(
        spec: Int64, buckets: Set<UnitBucket>?, startKey: Identifier?, order: UnitOrder, limit: Int
    ) throws
        -> [UnitRecord]
    /// Units of a completed bucket (finished or failed) in (completion time, key) ascending order, at most
    /// `limit`; used by archiving.
    func completedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord]
    /// The most recently completed units of a FINISHED or FAILED bucket, newest first (dashboard failures).
    func newestCompletedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord]
    /// Deletes every unit in `buckets` (all when nil) with their attempts; returns how many units went.
    func deleteUnits(spec: Int64, buckets: Set<UnitBucket>?) throws -> Int

    // MARK: Attempts

    func attempt(id: Int64) throws -> AttemptRecord?
    /// Whether an attempt with this id was ever created in this storage. Attempt ids are never reused, so an id
    /// that was issued but is no longer found belongs to an attempt deleted with its unit, spec or namespace.
    func attemptIDWasIssued(_ id: Int64) throws -> Bool
    /// The unit's latest attempt (the one `latestAttemptID` names), or nil.
    func latestAttempt(of unit: UnitRecord) throws -> AttemptRecord?
    /// The unit's attempts, oldest first.
    func attempts(of unit: UnitRecord) throws -> [AttemptRecord]
    /// Inserts an attempt of `unit` and returns it with its newly allocated, increasing id.
    func insertAttempt(_ attempt: AttemptRecord, for unit: UnitRecord) throws -> AttemptRecord
    func updateAttempt(_ attempt: AttemptRecord) throws
    /// A worker's attempts (all statuses when nil), oldest first.
    func attempts(namespace: Int64, worker: Identifier, statuses: Set<AttemptStatus>?) throws -> [AttemptRecord]

    // MARK: Workers

    func worker(namespace: Int64, id: Identifier) throws -> WorkerRecord?
    /// Inserts or replaces the worker record with this id.
    func saveWorker(_ worker: WorkerRecord) throws
    /// Deletes the worker record. With `ifLastHeartbeat`, only while its last heartbeat is still that instant
    /// — a heartbeat another daemon commits meanwhile keeps it — answering whether it went; without, it answers
    /// true.
    @discardableResult
    func deleteWorker(namespace: Int64, id: Identifier, ifLastHeartbeat: Timestamp?) throws -> Bool
    /// All worker records of the namespace (live or not), in id order.
    func workers(namespace: Int64) throws -> [WorkerRecord]

    // MARK: Locks

    /// Held locks whose path equals `pathKey`, is a prefix of it, or has it as a prefix.
    func conflictingLocks(namespace: Int64, pathKey: [UInt8]) throws -> [LockRecord]
    func lock(namespace: Int64, pathKey: [UInt8]) throws -> LockRecord?
    /// Inserts or replaces the lock with this path key.
    func saveLock(_ lock: LockRecord) throws
    func deleteLock(namespace: Int64, pathKey: [UInt8]) throws
    /// Held locks in path-key order, optionally only those under one first label (its encoded key prefix).
    func locks(namespace: Int64, pathKeyPrefix: [UInt8]?) throws -> [LockRecord]

    // MARK: Several daemons on one database (defaults below suit single-process backends)

    /// The instant of this operation according to the storage (PostgreSQL's clock, storage.md §4.4); nil means
    /// the engine's own clock.
    var databaseTime: Timestamp? { get }

    /// Called before a grant from `spec`: locks the spec against concurrent grants by other daemons and returns
    /// its current record and counts (nil if it was deleted meanwhile), so limits are re-checked on fresh data.
    /// `count` is how many units the grant asks for at most: a backend with round trips may read that many ready
    /// units along with the lock, and answer the ``readyUnits(spec:limit:)`` that follows from them.
    func lockSpecForGrant(_ spec: SpecRecord, expecting count: Int) throws -> (SpecRecord, UnitCounts)?

    /// Serializes lock-service operations on one namespace.
    func serializeLockService(namespace: Int64) throws

    /// The damage found by reads since the last call (``StoredData``); the engine reports it after each
    /// operation.
    func takeDamage() -> [StoredDamage]
}

extension StorageSession {
    public func deleteWorker(namespace: Int64, id: Identifier) throws {
        try deleteWorker(namespace: namespace, id: id, ifLastHeartbeat: nil)
    }
}

/// Defaults of the hooks that only a backend shared by several daemons needs.
extension StorageSession {
    public var databaseTime: Timestamp? { nil }

    public func lockSpecForGrant(_ spec: SpecRecord, expecting count: Int) throws -> (SpecRecord, UnitCounts)? {
        (spec, try unitCounts(spec: spec.id))
    }

    public func serializeLockService(namespace: Int64) throws {}

    public func insertUnitsIfAbsent(_ units: [UnitRecord]) throws -> [UnitRecord] {
        var existing: [UnitRecord] = []
        for unit in units {
            if let stored = try self.unit(spec: unit.specID, key: unit.key) {
                existing.append(stored)
            } else {
                _ = try insertUnit(unit)
            }
        }
        return existing
    }

    /// A backend that keeps values in memory as the engine made them finds no damage.
    public func takeDamage() -> [StoredDamage] { [] }
}
