import CBOR

/// A unit's status as `get_work_unit_status` reports it (rpc-methods.md §2.13).
public struct UnitStatusInfo: Sendable, Equatable {
    public var bucket: UnitBucket
    /// The worker of the latest attempt while PENDING, FINISHED or FAILED.
    public var worker: Identifier?
    /// PENDING: lease deadline; FINISHED/FAILED: completion time; otherwise nil.
    public var expiration: Timestamp?
    public var data: StoredValue
}

public enum AddUnitsOutcome: Sendable, Equatable {
    case noSuchSpec
    case added(created: Int, reset: Int)
}

public enum DeleteUnitsOutcome: Sendable, Equatable {
    case noSuchSpec
    case noUsableOptions
    case deleted(Int)
}

/// The buckets a status code of semantics.md §4 selects (1 includes delayed units; 2 selects nothing).
public func buckets(forStatusCode status: Int64) -> Set<UnitBucket> {
    switch status {
    case 1: return [.ready, .delayed]
    case 3: return [.pending]
    case 4: return [.finished]
    case 5: return [.failed]
    default: return []
    }
}

extension EngineTransaction {
    func specAndNamespace(_ name: Identifier, _ specName: Identifier) throws -> (NamespaceRecord, SpecRecord)? {
        guard let namespace = try namespace(name, create: false),
            let spec = try session.spec(namespace: namespace.id, named: specName)
        else { return nil }
        return (namespace, spec)
    }

    // MARK: add

    /// Adds or resets units (rpc-methods.md §2.8). The spec check and the count limit come first, as the
    /// specification orders them; then each item's problem in item order: the data limit of the items the
    /// request's parser accepted, then the problem it stopped at.
    public mutating func addWorkUnits(
        namespace name: Identifier, spec specName: Identifier, _ batch: UnitItemBatch
    ) throws -> AddUnitsOutcome {
        guard let (namespace, spec) = try specAndNamespace(name, specName) else { return .noSuchSpec }
        try configuration.check(unitCount: batch.count)
        for item in batch.items { try configuration.check(unitData: item.data) }
        if let problem = batch.problem { throw EngineError.invalidUnitItem(problem) }
        let distinct = Set(batch.items.map(\.key)).count
        let created = try add(batch.items, to: spec, namespace: namespace)
        return .added(created: created, reset: distinct - created)
    }

    // MARK: counts and listings

    /// Live counts and archived counts (nil when there is no such spec).
    public func countWorkUnits(
        namespace name: Identifier, spec specName: Identifier
    ) throws
        -> (counts: UnitCounts, archivedFinished: Int64, archivedFailed: Int64)?
    {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        return (try session.unitCounts(spec: spec.id), spec.archivedFinished, spec.archivedFailed)
    }

    /// Live unit counts of a spec by bucket.
    public func unitCounts(of spec: SpecRecord) throws -> UnitCounts {
        try session.unitCounts(spec: spec.id)
    }

    /// A spec's most recently failed units, newest first.
    public func recentFailures(of spec: SpecRecord, limit: Int) throws -> [UnitRecord] {
        try session.newestCompletedUnits(spec: spec.id, bucket: .failed, limit: limit)
    }

    /// Units by key, in request order (nil where missing); nil when there is no such spec.
    public func workUnits(
        namespace name: Identifier, spec specName: Identifier, keys: [Identifier]
    ) throws
        -> [UnitRecord?]?
    {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        return try keys.map { try session.unit(spec: spec.id, key: $0) }
    }

    /// Units filtered by buckets (priority order) or all units (key order), from `start`, at most `limit`
    /// (rpc-methods.md §2.10 cases 2 and 3).
    public func workUnits(
        namespace name: Identifier, spec specName: Identifier, buckets: Set<UnitBucket>?, start: Identifier?, limit: Int
    ) throws -> [UnitRecord]? {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        if let buckets {
            return try session.units(spec: spec.id, buckets: buckets, startKey: start, order: .priority, limit: limit)
        }
        return try session.units(spec: spec.id, buckets: nil, startKey: start, order: .key, limit: limit)
    }

    /// One unit (nil if the spec or the unit does not exist).
    public func workUnit(namespace name: Identifier, spec specName: Identifier, key: Identifier) throws -> UnitRecord? {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        return try session.unit(spec: spec.id, key: key)
    }

    /// Status entries for `keys`; nil when there is no such spec.
    public func workUnitStatus(
        namespace name: Identifier, spec specName: Identifier, keys: [Identifier]
    ) throws
        -> [UnitStatusInfo?]?
    {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        return try keys.map { key in
            guard let unit = try session.unit(spec: spec.id, key: key) else { return nil }
            let bucket = unit.bucket(at: now)
            var worker: Identifier?
            var expiration: Timestamp?
            switch bucket {
            case .pending:
                worker = try latestAttempt(of: unit)?.worker
                expiration = unit.leaseDeadline
            case .finished, .failed:
                worker = try latestAttempt(of: unit)?.worker
                expiration = unit.completionTime
            case .ready, .delayed:
                break
            }
            return UnitStatusInfo(bucket: bucket, worker: worker, expiration: expiration, data: unit.data)
        }
    }

    // MARK: priorities and deletion

    /// Sets or adjusts priorities of the listed units in any state (rpc-methods.md §2.11). False: no such spec.
    public func prioritizeWorkUnits(
        namespace name: Identifier, spec specName: Identifier, keys: [Identifier], priority: Double?,
        adjustment: Double?
    ) throws -> Bool {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return false }
        guard priority != nil || adjustment != nil else { return true }
        for key in keys {
            guard var unit = try session.unit(spec: spec.id, key: key) else { continue }
            unit.priority = Self.newPriority(unit.priority, set: priority, adjust: adjustment)
            try store(unit)
        }
        return true
    }

    /// A set or adjusted priority, saturating at ±1.7976931348623157e308 (wire-protocol.md §5.4).
    static func newPriority(_ current: Double, set: Double?, adjust: Double?) -> Double {
        if let set { return set }
        guard let adjust else { return current }
        return min(max(current + adjust, -Double.greatestFiniteMagnitude), Double.greatestFiniteMagnitude)
    }

    /// Deletes units (rpc-methods.md §2.12).
    public func deleteWorkUnits(
        namespace name: Identifier, spec specName: Identifier, all: Bool, keys: [Identifier]?, state: Int64?
    ) throws -> DeleteUnitsOutcome {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return .noSuchSpec }
        if all {
            let live = try session.deleteUnits(spec: spec.id, buckets: nil)
            var updated = spec
            let archived = updated.archivedFinished + updated.archivedFailed
            updated.archivedFinished = 0
            updated.archivedFailed = 0
            try session.updateSpec(updated)
            return .deleted(live + Int(archived))
        }
        if let keys {
            let selected = state.map { buckets(forStatusCode: $0) }
            var deleted = 0
            for key in keys {
                guard let unit = try session.unit(spec: spec.id, key: key) else { continue }
                if let selected, !selected.contains(unit.bucket(at: now)) { continue }
                try session.deleteUnit(unit)
                deleted += 1
            }
            return .deleted(deleted)
        }
        if let state {
            let live = try session.deleteUnits(spec: spec.id, buckets: buckets(forStatusCode: state))
            var updated = spec
            var archived: Int64 = 0
            if state == 4 {
                archived = updated.archivedFinished
                updated.archivedFinished = 0
            } else if state == 5 {
                archived = updated.archivedFailed
                updated.archivedFailed = 0
            }
            if archived > 0 { try session.updateSpec(updated) }
            return .deleted(live + Int(archived))
        }
        return .noUsableOptions
    }
}
