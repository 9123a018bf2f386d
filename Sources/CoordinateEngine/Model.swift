import CBOR

/// An instant of the engine clock: microseconds since the Unix epoch (storage.md §1.3).
public typealias Timestamp = Int64

/// Conversions between seconds (the CBOR-RPC surface) and engine instants.
public enum Time {
    public static let microsecondsPerSecond: Int64 = 1_000_000

    /// Seconds as a duration in microseconds, first clamped into −10⁹…10⁹ s (wire-protocol.md §5.4) so every
    /// computed time fits.
    @inlinable
    public static func duration(seconds: Double) -> Int64 {
        let clamped = min(max(seconds, -1e9), 1e9)
        return Int64((clamped * 1e6).rounded(.towardZero))
    }

    /// Float64 seconds for the CBOR-RPC surface.
    @inlinable
    public static func seconds(_ instant: Timestamp) -> Double { Double(instant) / 1e6 }
}

/// A stored opaque value (spec data, unit data, attempt snapshots, worker data and modes, lock paths): its
/// canonical CBOR encoding (storage.md §1.3).
public typealias StoredValue = CBOREncodedItem

extension CBOREncodedItem {
    /// The encoding of an empty map, the default data of new units.
    public static let emptyMap = CBOREncodedItem(uncheckedCanonicalBytes: [0xa0])
    /// The encoding of null.
    public static let null = CBOREncodedItem(uncheckedCanonicalBytes: [0xf6])
}

// MARK: - Namespaces

public struct NamespaceRecord: Sendable, Equatable {
    public var id: Int64
    public var name: Identifier

    public init(id: Int64, name: Identifier) {
        self.id = id
        self.name = name
    }
}

// MARK: - Work specs

/// The control fields of a work spec (semantics.md §3.2–3.3).
public struct SpecFields: Sendable, Equatable {
    public var paused = false
    /// ≤ 0 means never scheduled.
    public var weight: Int64 = 20
    public var priority: Int64 = 0
    public var canBeContinuous = false
    public var continuous = false
    /// nil: no interval.
    public var interval: Int64?
    /// nil: unlimited.
    public var maxRunning: Int64?
    public var maxGetwork: Int64?
    public var maxRetries: Int64?
    public var then: Identifier?
    public var thenPreempts = true
    public var runtime: [UInt8] = []
    public var minGB: Double = 0

    public init() {}
}

/// The fields `control_work_spec` (and REST meta `PUT`) can override without changing the data.
public enum OverridableField: String, Sendable, CaseIterable, Hashable {
    case paused, continuous, weight, interval, maxRunning, maxGetwork, maxRetries, priority
}

public struct SpecRecord: Sendable, Equatable {
    public var id: Int64
    public var namespaceID: Int64
    /// The `name` value of the current data, with its kind.
    public var name: Identifier
    public var data: StoredValue
    /// Fields derived from the data.
    public var derived: SpecFields
    /// Which fields are overridden, and their values (in the matching properties of `overrideValues`).
    public var overridden: Set<OverridableField>
    public var overrideValues: SpecFields
    public var nextContinuous: Timestamp?
    public var archivedFinished: Int64
    public var archivedFailed: Int64

    public init(
        id: Int64 = 0, namespaceID: Int64, name: Identifier, data: StoredValue, derived: SpecFields,
        overridden: Set<OverridableField> = [], overrideValues: SpecFields = SpecFields(),
        nextContinuous: Timestamp? = nil, archivedFinished: Int64 = 0, archivedFailed: Int64 = 0
    ) {
        self.id = id
        self.namespaceID = namespaceID
        self.name = name
        self.data = data
        self.derived = derived
        self.overridden = overridden
        self.overrideValues = overrideValues
        self.nextContinuous = nextContinuous
        self.archivedFinished = archivedFinished
        self.archivedFailed = archivedFailed
    }

    /// The effective fields: overrides where set, derived values otherwise.
    public var effective: SpecFields {
        var fields = derived
        for field in overridden {
            switch field {
            case .paused: fields.paused = overrideValues.paused
            case .continuous: fields.continuous = overrideValues.continuous && derived.canBeContinuous
            case .weight: fields.weight = overrideValues.weight
            case .interval: fields.interval = overrideValues.interval
            case .maxRunning: fields.maxRunning = overrideValues.maxRunning
            case .maxGetwork: fields.maxGetwork = overrideValues.maxGetwork
            case .maxRetries: fields.maxRetries = overrideValues.maxRetries
            case .priority: fields.priority = overrideValues.priority
            }
        }
        return fields
    }
}

// MARK: - Work units

/// The stored state of a unit (semantics.md §4.1).
public enum UnitState: UInt8, Sendable, Equatable, CaseIterable {
    case available = 1
    case pending = 3
    case finished = 4
    case failed = 5
}

/// The physical partition a unit lives in at the current instant: stored state plus the time-derived
/// distinction between ready and delayed available units. Every index and counter is kept per bucket.
public enum UnitBucket: UInt8, Sendable, Hashable, CaseIterable, Comparable {
    case ready = 0
    case delayed = 1
    case pending = 2
    case finished = 3
    case failed = 4

    public static func < (lhs: UnitBucket, rhs: UnitBucket) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The status's name, as every text surface shows it (REST, metrics labels, the dashboard).
    public var name: String {
        switch self {
        case .ready: return "available"
        case .delayed: return "delayed"
        case .pending: return "pending"
        case .finished: return "finished"
        case .failed: return "failed"
        }
    }
}

public struct UnitRecord: Sendable, Equatable {
    /// Storage row id; unique within the storage.
    public var id: Int64
    public var specID: Int64
    public var key: Identifier
    public var data: StoredValue
    /// Always finite.
    public var priority: Double
    public var notBefore: Timestamp?
    public var state: UnitState
    /// PENDING only.
    public var leaseDeadline: Timestamp?
    /// FINISHED/FAILED only.
    public var completionTime: Timestamp?
    public var latestAttemptID: Int64?
    /// Number of attempts the unit has (for `max_retries`).
    public var attemptCount: Int64
    public var retryCountBase: Int64
    /// The unit's own data while the data an attempt reported stands in for it in `data`; nil when `data` is the
    /// unit's own. go-coordinate's model, which its REST client expects: a unit shows its active attempt's data,
    /// and its own again once that attempt is no longer active (``setOwnData(_:)``, ``setAttemptData(_:)``,
    /// ``restoreOwnData()``).
    public var originalData: StoredValue?
    /// Why the stored data is damaged, when the backend found it so on reading (``StoredData``); `data` is then
    /// the replacement that says so. Never stored.
    public var damage: String?

    public init(
        id: Int64 = 0, specID: Int64, key: Identifier, data: StoredValue, priority: Double = 0,
        notBefore: Timestamp? = nil, state: UnitState = .available, leaseDeadline: Timestamp? = nil,
        completionTime: Timestamp? = nil, latestAttemptID: Int64? = nil, attemptCount: Int64 = 0,
        retryCountBase: Int64 = 0
    ) {
        self.id = id
        self.specID = specID
        self.key = key
        self.data = data
        self.priority = priority
        self.notBefore = notBefore
        self.state = state
        self.leaseDeadline = leaseDeadline
        self.completionTime = completionTime
        self.latestAttemptID = latestAttemptID
        self.attemptCount = attemptCount
        self.retryCountBase = retryCountBase
    }

    /// Replaces the unit's own data: an add, CBOR-RPC's `update_work_unit`, a REST bulk update. No attempt's data
    /// stands in for it any more.
    public mutating func setOwnData(_ data: StoredValue) {
        self.data = data
        originalData = nil
    }

    /// Lets data the active attempt reported stand in for the unit's own (REST attempt actions).
    public mutating func setAttemptData(_ data: StoredValue) {
        if originalData == nil { originalData = self.data }
        self.data = data
    }

    /// The active attempt is no longer active (a new grant, REST's expire and retry, clearing it): the unit
    /// shows its own data again.
    public mutating func restoreOwnData() {
        guard let originalData else { return }
        data = originalData
        self.originalData = nil
    }

    /// Where a durable backend files the unit at `now`: its bucket, and the time that orders it there (the
    /// not-before time of a delayed unit, the lease deadline of a pending one, the completion time of a
    /// finished or failed one; none for a ready one).
    public func placement(at now: Timestamp) -> (bucket: UnitBucket, time: Timestamp?) {
        let bucket = bucket(at: now)
        switch bucket {
        case .ready: return (.ready, nil)
        case .delayed: return (.delayed, notBefore)
        case .pending: return (.pending, leaseDeadline)
        case .finished, .failed: return (bucket, completionTime)
        }
    }

    /// The bucket the unit belongs to as observed at `now` (semantics.md §4.2).
    @inlinable
    public func bucket(at now: Timestamp) -> UnitBucket {
        switch state {
        case .available:
            if let notBefore, !Expiry.delayIsDue(notBefore: notBefore, at: now) { return .delayed }
            return .ready
        case .pending:
            if let deadline = leaseDeadline, Expiry.leaseIsDue(deadline: deadline, at: now) { return .ready }
            return .pending
        case .finished: return .finished
        case .failed: return .failed
        }
    }
}

/// Live unit counts of one spec by bucket.
public struct UnitCounts: Sendable, Equatable {
    public var ready = 0
    public var delayed = 0
    public var pending = 0
    public var finished = 0
    public var failed = 0

    public init() {}

    public subscript(bucket: UnitBucket) -> Int {
        get {
            switch bucket {
            case .ready: return ready
            case .delayed: return delayed
            case .pending: return pending
            case .finished: return finished
            case .failed: return failed
            }
        }
        set {
            switch bucket {
            case .ready: ready = newValue
            case .delayed: delayed = newValue
            case .pending: pending = newValue
            case .finished: finished = newValue
            case .failed: failed = newValue
            }
        }
    }

    public var total: Int { ready + delayed + pending + finished + failed }
}

// MARK: - Attempts

public enum AttemptStatus: UInt8, Sendable, Equatable, CaseIterable {
    case pending = 1
    case expired = 2
    case finished = 3
    case failed = 4
    case retryable = 5

    public var name: String {
        switch self {
        case .pending: return "pending"
        case .expired: return "expired"
        case .finished: return "finished"
        case .failed: return "failed"
        case .retryable: return "retryable"
        }
    }
}

public struct AttemptRecord: Sendable, Equatable {
    public var id: Int64
    public var unitID: Int64
    public var specID: Int64
    public var namespaceID: Int64
    public var worker: Identifier
    public var startTime: Timestamp
    public var expirationTime: Timestamp
    public var endTime: Timestamp?
    public var status: AttemptStatus
    public var data: StoredValue

    public init(
        id: Int64 = 0, unitID: Int64, specID: Int64, namespaceID: Int64, worker: Identifier, startTime: Timestamp,
        expirationTime: Timestamp, endTime: Timestamp? = nil, status: AttemptStatus = .pending, data: StoredValue
    ) {
        self.id = id
        self.unitID = unitID
        self.specID = specID
        self.namespaceID = namespaceID
        self.worker = worker
        self.startTime = startTime
        self.expirationTime = expirationTime
        self.endTime = endTime
        self.status = status
        self.data = data
    }
}

// MARK: - Workers

public struct WorkerRecord: Sendable, Equatable {
    public var namespaceID: Int64
    public var id: Identifier
    public var active: Bool
    public var mode: StoredValue
    public var data: StoredValue
    public var parent: Identifier?
    public var firstSeen: Timestamp
    public var lastHeartbeat: Timestamp
    public var expiration: Timestamp

    public init(
        namespaceID: Int64, id: Identifier, active: Bool, mode: StoredValue, data: StoredValue, parent: Identifier?,
        firstSeen: Timestamp, lastHeartbeat: Timestamp, expiration: Timestamp
    ) {
        self.namespaceID = namespaceID
        self.id = id
        self.active = active
        self.mode = mode
        self.data = data
        self.parent = parent
        self.firstSeen = firstSeen
        self.lastHeartbeat = lastHeartbeat
        self.expiration = expiration
    }

    /// Live: active and not past its expiration (semantics.md §7.2).
    @inlinable
    public func isLive(at now: Timestamp) -> Bool { active && now <= expiration }
}

// MARK: - Locks

public struct LockRecord: Sendable, Equatable {
    public var namespaceID: Int64
    /// The prefix-preserving key of the normalised path (storage.md §3.4).
    public var pathKey: [UInt8]
    /// The path exactly as given when it was locked.
    public var path: StoredValue
    public var owner: Identifier
    public var deadline: Timestamp

    public init(namespaceID: Int64, pathKey: [UInt8], path: StoredValue, owner: Identifier, deadline: Timestamp) {
        self.namespaceID = namespaceID
        self.pathKey = pathKey
        self.path = path
        self.owner = owner
        self.deadline = deadline
    }
}

// MARK: - Stored codes in SQL

/// An enum stored by its raw value. The SQL backends write these codes into statements through ``sql`` and
/// ``sqlList(_:)``, never as bare numbers, so a statement says which state it means and follows the enum.
public protocol StoredCode: RawRepresentable where RawValue == UInt8 {}

extension StoredCode {
    /// The code as an SQL integer literal.
    public var sql: String { String(rawValue) }

    /// Codes as a comma-separated SQL list, ascending (for `IN (…)`).
    public static func sqlList(_ codes: some Sequence<Self>) -> String {
        codes.map(\.rawValue).sorted().map(String.init).joined(separator: ", ")
    }
}

extension UnitState: StoredCode {}
extension UnitBucket: StoredCode {}
extension AttemptStatus: StoredCode {}
