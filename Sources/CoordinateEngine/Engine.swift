import CBOR
import Locking
import Logging
import Synchronization

/// Engine settings that come from the daemon configuration.
public struct EngineConfiguration: Sendable {
    /// `coordinate.server.max_units_per_call`; nil is unlimited.
    public var maxUnitsPerCall: Int?
    /// `coordinate.server.max_unit_data_bytes`; nil is unlimited.
    public var maxUnitDataBytes: Int?
    /// `coordinate.job_queue.limit_completed_count`; nil keeps everything.
    public var limitCompletedCount: Int?
    /// `coordinate.job_queue.limit_completed_age` in seconds; nil keeps everything.
    public var limitCompletedAge: Double?
    /// `coordinate.job_queue.worker_retention` in seconds.
    public var workerRetention: Double

    public init(
        maxUnitsPerCall: Int? = nil, maxUnitDataBytes: Int? = nil, limitCompletedCount: Int? = nil,
        limitCompletedAge: Double? = nil, workerRetention: Double = 86400
    ) {
        self.maxUnitsPerCall = maxUnitsPerCall
        self.maxUnitDataBytes = maxUnitDataBytes
        self.limitCompletedCount = limitCompletedCount
        self.limitCompletedAge = limitCompletedAge
        self.workerRetention = workerRetention
    }
}

/// Carries an operation's result from the body to the completion.
@usableFromInline
final class ResultBox<T>: @unchecked Sendable {
    // @unchecked Sendable: written once by the operation body, read afterwards by the completion; the backend
    // orders the two (the completion runs after the body returns).
    @usableFromInline var value: T?

    @usableFromInline init() {}
}

/// Counters of engine events since process start, exported as `coordinate_attempts_total` (rest-api.md §6).
public final class EngineStatistics: Sendable {
    /// Attempt outcomes by spec id; names are resolved when metrics are read, so deleted specs drop out.
    private let counts = Locked<[Int64: AttemptOutcomeCounts]>([:])

    public init() {}

    func record(_ events: [(specID: Int64, outcome: AttemptOutcome)]) {
        counts.withLock { counts in
            for event in events { counts[event.specID, default: AttemptOutcomeCounts()][event.outcome] += 1 }
        }
    }

    /// Counts by spec id.
    public var attemptOutcomes: [Int64: AttemptOutcomeCounts] { counts.withLock { $0 } }
}

/// What happened to attempts: `granted` or the status an attempt ended with.
public enum AttemptOutcome: Int, Sendable, CaseIterable {
    case granted, finished, failed, expired, retryable

    public var name: String {
        switch self {
        case .granted: return "granted"
        case .finished: return "finished"
        case .failed: return "failed"
        case .expired: return "expired"
        case .retryable: return "retryable"
        }
    }

    init(_ status: AttemptStatus) {
        switch status {
        case .finished: self = .finished
        case .failed: self = .failed
        case .expired: self = .expired
        case .retryable, .pending: self = .retryable
        }
    }
}

/// Attempt outcome counters of one spec.
public struct AttemptOutcomeCounts: Sendable, Equatable {
    public var values = [Int](repeating: 0, count: AttemptOutcome.allCases.count)

    public subscript(outcome: AttemptOutcome) -> Int {
        get { values[outcome.rawValue] }
        set { values[outcome.rawValue] = newValue }
    }
}

/// The job-queue engine: every work spec, unit, lease, worker, attempt, lock and scheduling decision, over a
/// pluggable ``StorageBackend``. It knows nothing of sockets or framing.
///
/// Each public operation runs as one atomic, linearizable unit through the backend (storage.md §1.1). The
/// operations themselves are methods of ``EngineTransaction``; ``perform(_:_:completion:)`` and
/// ``perform(_:_:)`` run one.
public final class Engine: Sendable {
    public let backend: any StorageBackend
    public let clock: any EngineClock
    public let configuration: EngineConfiguration
    public let statistics = EngineStatistics()
    /// Receives storage timings and failures; nil when nobody measures.
    public let observer: (any StorageObserver)?
    let logger: Logger
    /// Smooth weighted round-robin credits per namespace id (semantics.md §10.4); per daemon, not persisted.
    let credits = Locked<[Int64: SchedulerCredits]>([:])
    /// The scheduler graph per namespace id, valid while the namespace's spec generation is unchanged.
    let graphs = Locked<[Int64: (generation: UInt64, graph: SchedulerGraph)]>([:])
    /// Places whose damaged data was already logged (``reportDamage(_:)``).
    let reportedDamage = Locked<Set<String>>([])

    public init(
        backend: any StorageBackend, clock: any EngineClock = SystemClock(),
        configuration: EngineConfiguration = EngineConfiguration(), logger: Logger = Logger(label: "coordinate.engine"),
        observer: (any StorageObserver)? = nil
    ) {
        self.observer = observer
        self.backend = backend
        self.clock = clock
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs `body` as one atomic operation and calls `completion` once its effects are durable. With the memory
    /// backend the completion runs before this method returns. `hint` names what `body` reads first, for backends
    /// that can send that read with the start of the transaction (``StorageReadHint``).
    @inlinable
    public func perform<T: Sendable>(
        _ mode: AccessMode, readingFirst hint: StorageReadHint? = nil,
        _ body: @escaping @Sendable (inout EngineTransaction) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) {
        // The result crosses from the body to the completion through this box; the backend runs the body before
        // it calls the completion, and never concurrently with it.
        let box = ResultBox<T>()
        run(
            mode, hint, { transaction in box.value = try body(&transaction) },
            completion: { error in
                if let error {
                    completion(.failure(error))
                } else if let value = box.value {
                    completion(.success(value))
                } else {
                    completion(.failure(StorageError.corrupt("operation produced no result")))
                }
            })
    }

    /// The non-generic core of ``perform(_:_:completion:)``.
    @usableFromInline
    func run(
        _ mode: AccessMode, _ hint: StorageReadHint?,
        _ body: @escaping @Sendable (inout EngineTransaction) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let clock = self.clock
        let transact: @Sendable (any StorageSession) throws -> Void = { [self] session in
            var transaction = EngineTransaction(
                engine: self, session: session, now: session.databaseTime ?? clock.now())
            defer {
                let damage = session.takeDamage()
                if !damage.isEmpty { reportDamage(damage) }
            }
            let expired = try session.materialize(now: transaction.now)
            if !expired.isEmpty { transaction.countExpired(expired) }
            try body(&transaction)
            if !transaction.attemptEvents.isEmpty { statistics.record(transaction.attemptEvents) }
        }
        guard let observer else {
            backend.execute(mode, readingFirst: hint, transact, completion: completion)
            return
        }
        let op = mode == .read ? "read" : "write"
        backend.execute(
            mode, readingFirst: hint,
            { session in
                let started = ContinuousClock.now
                defer { observer.storageOperation(op, seconds: Self.seconds(since: started)) }
                try transact(session)
            },
            completion: { error in
                if error is StorageError { observer.storageError() }
                completion(error)
            })
    }

    /// Logs damaged stored values — each place once per process, so that a listing repeated every few seconds
    /// does not flood the log — and counts every detection.
    func reportDamage(_ damage: [StoredDamage]) {
        observer?.storageDamage(count: damage.count)
        let fresh = reportedDamage.withLock { reported in
            damage.filter { reported.count < 100_000 && reported.insert($0.location).inserted }
        }
        for item in fresh {
            logger.error(
                "stored data is damaged; it is withheld from clients and the unit is never granted",
                metadata: ["location": "\(item.location)", "reason": "\(item.reason)"])
        }
    }

    /// Runs `body` as one atomic operation and returns its result once durable.
    @inlinable
    public func perform<T: Sendable>(
        _ mode: AccessMode, readingFirst hint: StorageReadHint? = nil,
        _ body: @escaping @Sendable (inout EngineTransaction) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            perform(mode, readingFirst: hint, body) { result in continuation.resume(with: result) }
        }
    }

    /// Seconds elapsed since `start`.
    public static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// Forgets the scheduler credits of a namespace (on `clear` and namespace deletion).
    func resetCredits(namespace: Int64) {
        _ = credits.withLock { $0.removeValue(forKey: namespace) }
    }
}

/// One operation's view of the engine: the storage session, the operation's instant, and the configuration.
/// All job-queue and lock-service semantics are implemented as methods of this type.
public struct EngineTransaction {
    // Stored properties are @usableFromInline so the inlinable `Engine.perform` can be specialized by callers.
    public let engine: Engine
    /// The storage, for the engine's own rules only: consumers use the transaction's domain methods.
    let session: any StorageSession
    /// The instant at which this operation happens (semantics.md §1).
    public let now: Timestamp
    /// Attempt outcomes recorded by this operation, counted once it completes.
    var attemptEvents: [(specID: Int64, outcome: AttemptOutcome)] = []

    init(engine: Engine, session: any StorageSession, now: Timestamp) {
        self.engine = engine
        self.session = session
        self.now = now
    }

    public var configuration: EngineConfiguration { engine.configuration }

    /// The namespace, created if `create` is set and it does not exist yet.
    public func namespace(_ name: Identifier, create: Bool) throws -> NamespaceRecord? {
        if let existing = try session.namespace(named: name) { return existing }
        return create ? try session.createNamespace(named: name) : nil
    }

    /// Notes an attempt event for `coordinate_attempts_total`.
    mutating func count(_ outcome: AttemptOutcome, spec: SpecRecord) {
        attemptEvents.append((spec.id, outcome))
    }

    /// Counts leases that the materialization step expired.
    @usableFromInline
    mutating func countExpired(_ expired: [Int64: Int]) {
        for (specID, number) in expired {
            for _ in 0..<number { attemptEvents.append((specID, .expired)) }
        }
    }

    func warnClamped(_ key: String, _ original: Int64, _ clamped: Int64) {
        engine.logger.warning("work spec field \(key) clamped from \(original) to \(clamped)")
    }
}
