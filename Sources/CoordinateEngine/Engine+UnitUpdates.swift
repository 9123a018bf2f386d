import CBOR

/// What `update_work_unit` asks for (rpc-methods.md §2.14).
public struct UnitUpdate: Sendable, Equatable {
    /// Relative seconds, already finite.
    public var leaseSeconds: Double?
    /// The requested status code of semantics.md §6.3 (1, 3, 4 or 5; any other is refused as invalid).
    public var status: Int64?
    public var data: StoredValue?
    public var worker: Identifier?

    public init(leaseSeconds: Double? = nil, status: Int64? = nil, data: StoredValue? = nil, worker: Identifier? = nil)
    {
        self.leaseSeconds = leaseSeconds
        self.status = status
        self.data = data
        self.worker = worker
    }
}

public enum UnitUpdateOutcome: Sendable, Equatable {
    case applied
    case noSuchSpec
    case nothingToDo
    case noSuchUnit
    case invalidStatus
    case notPending
}

/// One item of a batch of unit updates (REST's bulk update, rest-api.md §3.2).
public struct UnitUpdateItem: Sendable, Equatable {
    public var key: Identifier
    public var update: UnitUpdate
    public var priority: Double?

    public init(key: Identifier, update: UnitUpdate, priority: Double?) {
        self.key = key
        self.update = update
        self.priority = priority
    }
}
/// A change of a unit's priority, not-before time or active attempt (REST's unit `PUT`, rest-api.md §3.3).
public struct UnitChange: Sendable, Equatable {
    public var priority: Double?
    /// `.some(nil)` clears the not-before time.
    public var notBefore: Timestamp??
    public var clearActiveAttempt: Bool

    public init(priority: Double? = nil, notBefore: Timestamp?? = nil, clearActiveAttempt: Bool = false) {
        self.priority = priority
        self.notBefore = notBefore
        self.clearActiveAttempt = clearActiveAttempt
    }
}
extension EngineTransaction {
    // MARK: update_work_unit

    /// The `update_work_unit` transitions of semantics.md §6.3.
    public mutating func updateWorkUnit(
        namespace name: Identifier, spec specName: Identifier, key: Identifier, _ update: UnitUpdate
    ) throws -> UnitUpdateOutcome {
        if let data = update.data { try configuration.check(unitData: data) }
        guard let (namespace, spec) = try specAndNamespace(name, specName) else { return .noSuchSpec }
        guard update.leaseSeconds != nil || update.status != nil else { return .nothingToDo }
        guard var unit = try session.unit(spec: spec.id, key: key) else { return .noSuchUnit }
        if let status = update.status, ![1, 3, 4, 5].contains(status) { return .invalidStatus }

        let observed = unit.bucket(at: now)
        let worker = update.worker ?? Identifier(text: "")
        let lease: Int64? = update.leaseSeconds.map {
            $0 > 86400 ? Time.duration(seconds: 300) : Time.duration(seconds: $0)
        }

        /// Applies D to the unit and, when given, the attempt whose snapshot it refreshes.
        func applyData(to unit: inout UnitRecord) {
            if let data = update.data { unit.setOwnData(data) }
        }
        func refreshLatestSnapshot(_ unit: UnitRecord) throws {
            guard update.data != nil, var attempt = try latestAttempt(of: unit) else { return }
            attempt.data = unit.data
            try session.updateAttempt(attempt)
        }

        switch update.status {
        case 1?:
            applyData(to: &unit)
            if observed == .pending {
                try endPendingAttempt(of: unit, as: .retryable, data: unit.data, namespace: namespace, spec: spec)
            }
            unit.state = .available
            unit.leaseDeadline = nil
            unit.notBefore = nil
            unit.completionTime = nil
            try store(unit)
        case 3?:
            applyData(to: &unit)
            if observed == .pending {
                let current = try latestAttempt(of: unit)
                if let given = update.worker, let current, current.worker != given {
                    let keepDeadline = (unit.leaseDeadline ?? now) &- now
                    try grant(&unit, to: given, lease: lease ?? keepDeadline, namespace: namespace, spec: spec)
                } else {
                    if let lease {
                        unit.leaseDeadline = now &+ lease
                        if var attempt = current {
                            attempt.expirationTime = now &+ lease
                            attempt.data = unit.data
                            try session.updateAttempt(attempt)
                        }
                    } else if var attempt = current, update.data != nil {
                        attempt.data = unit.data
                        try session.updateAttempt(attempt)
                    }
                    try store(unit)
                }
            } else {
                try grant(
                    &unit, to: worker, lease: lease ?? Time.duration(seconds: 300), namespace: namespace, spec: spec)
            }
        case 4?:
            switch observed {
            case .ready, .delayed:
                applyData(to: &unit)
                try recordZeroLengthAttempt(
                    for: &unit, worker: worker, status: .finished, namespace: namespace, spec: spec)
                try finish(&unit, spec: spec, namespace: namespace)
            case .pending:
                applyData(to: &unit)
                try endPendingAttempt(of: unit, as: .finished, data: unit.data, namespace: namespace, spec: spec)
                try finish(&unit, spec: spec, namespace: namespace)
            case .finished:
                applyData(to: &unit)
                try store(unit)
                try refreshLatestSnapshot(unit)
            case .failed:
                applyData(to: &unit)
                if var attempt = try latestAttempt(of: unit) {
                    attempt.status = .finished
                    attempt.data = unit.data
                    if attempt.endTime == nil { attempt.endTime = now }
                    try session.updateAttempt(attempt)
                    count(.finished, spec: spec)
                } else {
                    try recordZeroLengthAttempt(
                        for: &unit, worker: worker, status: .finished, namespace: namespace, spec: spec)
                }
                try finish(&unit, spec: spec, namespace: namespace)
            }
        case 5?:
            switch observed {
            case .ready, .delayed:
                applyData(to: &unit)
                try recordZeroLengthAttempt(
                    for: &unit, worker: worker, status: .failed, namespace: namespace, spec: spec)
                try fail(&unit)
            case .pending:
                applyData(to: &unit)
                try endPendingAttempt(of: unit, as: .failed, data: unit.data, namespace: namespace, spec: spec)
                try fail(&unit)
            case .finished:
                break
            case .failed:
                applyData(to: &unit)
                try store(unit)
                try refreshLatestSnapshot(unit)
            }
        default:
            // Lease only.
            guard observed == .pending, let lease else { return .notPending }
            applyData(to: &unit)
            unit.leaseDeadline = now &+ lease
            if var attempt = try latestAttempt(of: unit) {
                attempt.expirationTime = now &+ lease
                attempt.data = unit.data
                try session.updateAttempt(attempt)
            }
            try store(unit)
        }
        return .applied
    }

    // MARK: batches of updates

    /// Applies updates in order, atomically (rest-api.md §3.2). Nil when there is no such spec; otherwise one
    /// message per item, nil for success.
    public mutating func updateWorkUnits(
        namespace name: Identifier, spec specName: Identifier, _ items: [UnitUpdateItem]
    )
        throws -> [String?]?
    {
        for item in items { if let data = item.update.data { try configuration.check(unitData: data) } }
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        var results: [String?] = []
        for item in items {
            guard item.update.status != nil || item.update.leaseSeconds != nil || item.priority != nil else {
                results.append("nothing to do")
                continue
            }
            guard try session.unit(spec: spec.id, key: item.key) != nil else {
                results.append("No such work unit \"\(item.key)\"")
                continue
            }
            if item.update.status != nil || item.update.leaseSeconds != nil {
                switch try updateWorkUnit(namespace: name, spec: specName, key: item.key, item.update) {
                case .applied: break
                case .notPending:
                    results.append("work unit is not pending")
                    continue
                case .invalidStatus:
                    results.append("invalid status")
                    continue
                case .noSuchSpec, .noSuchUnit, .nothingToDo:
                    results.append("No such work unit \"\(item.key)\"")
                    continue
                }
            } else if let data = item.update.data, var unit = try session.unit(spec: spec.id, key: item.key) {
                unit.setOwnData(data)
                try store(unit)
            }
            if let priority = item.priority, var unit = try session.unit(spec: spec.id, key: item.key) {
                unit.priority = priority
                try store(unit)
            }
            results.append(nil)
        }
        return results
    }
}
