import CBOR
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

/// Counters of engine events since process start, exported as `coordinate_attempts_total` (rest-api.md §6).
public final class EngineStatistics: Sendable {
    /// Attempt outcomes by (namespace name, spec name, outcome).
    private let counts = Mutex<[AttemptOutcomeKey: Int]>([:])

    public struct AttemptOutcomeKey: Hashable, Sendable {
        public let namespace: Identifier
        public let spec: Identifier
        public let outcome: String
    }

    public init() {}

    func record(_ events: [AttemptOutcomeKey: Int]) {
        guard !events.isEmpty else { return }
        counts.withLock { counts in
            for (key, value) in events { counts[key, default: 0] += value }
        }
    }

    public var attemptOutcomes: [AttemptOutcomeKey: Int] { counts.withLock { $0 } }
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
    let logger: Logger
    /// Smooth weighted round-robin credits per namespace id (semantics.md §10.4); per daemon, not persisted.
    let credits = Mutex<[Int64: SchedulerCredits]>([:])

    public init(
        backend: any StorageBackend, clock: any EngineClock = SystemClock(),
        configuration: EngineConfiguration = EngineConfiguration(), logger: Logger = Logger(label: "coordinate.engine")
    ) {
        self.backend = backend
        self.clock = clock
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs `body` as one atomic operation and calls `completion` once its effects are durable. With the memory
    /// backend the completion runs before this method returns.
    public func perform<T: Sendable>(
        _ mode: AccessMode, _ body: @escaping @Sendable (inout EngineTransaction) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) {
        let clock = self.clock
        backend.execute(
            mode,
            { [self] session in
                var transaction = EngineTransaction(engine: self, session: session, now: clock.now())
                let expired = try session.materialize(now: transaction.now)
                if !expired.isEmpty { try transaction.countExpired(expired) }
                let result = try body(&transaction)
                statistics.record(transaction.attemptEvents)
                return result
            }, completion: completion)
    }

    /// Runs `body` as one atomic operation and returns its result once durable.
    public func perform<T: Sendable>(
        _ mode: AccessMode, _ body: @escaping @Sendable (inout EngineTransaction) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            perform(mode, body) { result in continuation.resume(with: result) }
        }
    }

    /// Forgets the scheduler credits of a namespace (on `clear` and namespace deletion).
    func resetCredits(namespace: Int64) {
        _ = credits.withLock { $0.removeValue(forKey: namespace) }
    }
}

/// One operation's view of the engine: the storage session, the operation's instant, and the configuration.
/// All job-queue and lock-service semantics are implemented as methods of this type.
public struct EngineTransaction {
    public let engine: Engine
    public let session: any StorageSession
    /// The instant at which this operation happens (semantics.md §1).
    public let now: Timestamp
    /// Attempt outcomes recorded by this operation, counted once it completes.
    var attemptEvents: [EngineStatistics.AttemptOutcomeKey: Int] = [:]

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
    mutating func count(_ outcome: String, namespace: NamespaceRecord, spec: SpecRecord) {
        attemptEvents[.init(namespace: namespace.name, spec: spec.name, outcome: outcome), default: 0] += 1
    }

    /// Counts leases that the materialization step expired.
    mutating func countExpired(_ expired: [Int64: Int]) throws {
        for (specID, number) in expired {
            guard let spec = try session.spec(id: specID) else { continue }
            let namespaces = try session.allNamespaces()
            guard let namespace = namespaces.first(where: { $0.id == spec.namespaceID }) else { continue }
            attemptEvents[.init(namespace: namespace.name, spec: spec.name, outcome: "expired"), default: 0] += number
        }
    }

    func warnClamped(_ key: String, _ original: Int64, _ clamped: Int64) {
        engine.logger.warning("work spec field \(key) clamped from \(original) to \(clamped)")
    }
}
