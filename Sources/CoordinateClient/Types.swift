import CBOR

/// The status of a work unit, with the protocol's integer codes.
public enum WorkUnitStatus: Int, Sendable, CaseIterable, Hashable, CustomStringConvertible {
    case available = 1
    case blocked = 2
    case pending = 3
    case finished = 4
    case failed = 5

    /// The upper-case name the Python tools print (`AVAILABLE`, `PENDING`, …).
    public var description: String {
        switch self {
        case .available: return "AVAILABLE"
        case .blocked: return "BLOCKED"
        case .pending: return "PENDING"
        case .finished: return "FINISHED"
        case .failed: return "FAILED"
        }
    }

    /// Parses a status name (any case) or its integer code.
    public init?(name: String) {
        if let code = Int(name), let status = WorkUnitStatus(rawValue: code) {
            self = status
            return
        }
        guard let status = Self.allCases.first(where: { $0.description == name.uppercased() }) else { return nil }
        self = status
    }
}

/// A work unit to add: a key, its data, and optionally a priority and a delay before it may run.
public struct WorkUnitSubmission: Sendable, Equatable {
    /// The unit's key: a text or byte string.
    public var key: CBORValue
    /// The unit's data, normally a map.
    public var data: CBORValue
    /// Scheduling priority (higher runs first); `nil` keeps an existing unit's priority, or 0 for a new one.
    public var priority: Double?
    /// Seconds before the unit may be handed out.
    public var delay: Double?

    public init(key: CBORValue, data: CBORValue = .map(CBORMap()), priority: Double? = nil, delay: Double? = nil) {
        self.key = key
        self.data = data
        self.priority = priority
        self.delay = delay
    }

    /// The item form `add_work_units` takes: `[key, data]`, or `[key, data, meta]` when there is a priority or a
    /// delay.
    var item: CBORValue {
        guard priority != nil || delay != nil else { return .array([key, data]) }
        var meta = CBORMap()
        if let priority { meta.append(.text("priority"), Self.number(priority)) }
        if let delay { meta.append(.text("delay"), Self.number(delay)) }
        return .array([key, data, .map(meta)])
    }

    static func number(_ value: Double) -> CBORValue {
        if value == value.rounded(), abs(value) < 9e15 { return .int(Int64(value)) }
        return .float(value)
    }
}

/// One element of a unit listing: the key and the data (`nil` when a requested key does not exist).
public struct WorkUnitEntry: Sendable, Equatable {
    public var key: CBORValue
    public var data: CBORValue?

    public init(key: CBORValue, data: CBORValue?) {
        self.key = key
        self.data = data
    }
}

/// What `get_work_unit_status` reports for one unit.
public struct WorkUnitStatusReport: Sendable, Equatable {
    public var status: WorkUnitStatus
    /// The worker of the unit's latest attempt, when there is one.
    public var workerID: CBORValue?
    /// Lease deadline (pending) or completion time (finished, failed), seconds since the epoch.
    public var expiration: Double?
    /// The `traceback` entry of the unit's data, when present.
    public var traceback: CBORValue?

    public init(status: WorkUnitStatus, workerID: CBORValue?, expiration: Double?, traceback: CBORValue?) {
        self.status = status
        self.workerID = workerID
        self.expiration = expiration
        self.traceback = traceback
    }
}

/// A spec's effective control fields, from `get_work_spec_meta`.
public struct WorkSpecMeta: Sendable, Equatable {
    public var paused: Bool
    public var continuous: Bool
    public var maxRunning: Int?
    public var weight: Int
    public var interval: Double?

    public init(paused: Bool, continuous: Bool, maxRunning: Int?, weight: Int, interval: Double?) {
        self.paused = paused
        self.continuous = continuous
        self.maxRunning = maxRunning
        self.weight = weight
        self.interval = interval
    }
}

/// One page of `list_work_specs`.
public struct WorkSpecPage: Sendable, Equatable {
    /// The specs' stored data maps, in name order.
    public var specs: [CBORMap]
    /// Pass as `start` to continue; `nil` when the listing is complete.
    public var next: CBORValue?

    public init(specs: [CBORMap], next: CBORValue?) {
        self.specs = specs
        self.next = next
    }
}

/// A unit held by a child worker, as `get_child_work_units` reports it.
public struct ChildWorkUnit: Sendable, Equatable {
    public var specName: CBORValue
    public var key: CBORValue
    public var data: CBORValue
    /// The holder; `nil` only when the unit was released.
    public var workerID: CBORValue?
    /// The holder's lease deadline (possibly in the past), seconds since the epoch.
    public var expires: Double?

    public init(specName: CBORValue, key: CBORValue, data: CBORValue, workerID: CBORValue?, expires: Double?) {
        self.specName = specName
        self.key = key
        self.data = data
        self.workerID = workerID
        self.expires = expires
    }
}

/// A live child worker and the units it holds.
public struct ChildWorker: Sendable, Equatable {
    public var workerID: CBORValue
    public var units: [ChildWorkUnit]

    public init(workerID: CBORValue, units: [ChildWorkUnit]) {
        self.workerID = workerID
        self.units = units
    }
}

/// Counts over live workers, from `worker_stats`.
public struct WorkerStats: Sendable, Equatable {
    public var workers: Int
    public var expirable: Int
    /// Distinct parents among live workers that have one.
    public var parents: Int

    public init(workers: Int, expirable: Int, parents: Int) {
        self.workers = workers
        self.expirable = expirable
        self.parents = parents
    }
}

/// A held lock, from `list_locks`.
public struct HeldLock: Sendable, Equatable {
    public var path: [CBORValue]
    public var owner: CBORValue
    /// Seconds since the epoch.
    public var deadline: Double

    public init(path: [CBORValue], owner: CBORValue, deadline: Double) {
        self.path = path
        self.owner = owner
        self.deadline = deadline
    }
}

/// The outcome of an all-or-nothing lock operation: success, or the server's reason.
public struct LockOutcome: Sendable, Equatable {
    public var succeeded: Bool
    public var message: String?

    public init(succeeded: Bool, message: String?) {
        self.succeeded = succeeded
        self.message = message
    }
}

extension CBORValue {
    /// The value as a Swift string when it is a string (invalid UTF-8 replaced).
    public var stringValue: String? { stringOctets.map { String(decoding: $0, as: UTF8.self) } }

    /// The value, or `nil` when it is CBOR null. (A bare `nil` where a `CBORValue` is expected means CBOR null,
    /// so optional results are built with this instead of `x.isNull ? nil : x`.)
    public var nonNull: CBORValue? { isNull ? CBORValue?.none : self }

    /// The value as a double when it is an integer or a float.
    public var doubleValue: Double? {
        switch self {
        case .float(let value): return value
        case .encoded(let item): return item.decoded().doubleValue
        default: return int64Value.map(Double.init)
        }
    }
}
