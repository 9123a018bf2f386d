import CBOR

/// A unit query (REST's `Q`, rest-api.md §3): units matching every given parameter, by name, after `previous`,
/// at most `limit`.
public struct UnitQuery: Sendable, Equatable {
    /// Only these names (nil: any).
    public var names: [Identifier]?
    /// Only these observed statuses (nil: any).
    public var buckets: Set<UnitBucket>?
    /// Exclusive lower bound on names.
    public var previous: Identifier?
    /// At most this many; nil: no limit.
    public var limit: Int?

    public init(
        names: [Identifier]? = nil, buckets: Set<UnitBucket>? = nil, previous: Identifier? = nil, limit: Int? = nil
    ) {
        self.names = names
        self.buckets = buckets
        self.previous = previous
        self.limit = limit
    }

    /// Whether no parameter is given (a `DELETE` without parameters deletes every unit).
    public var isEmpty: Bool { names == nil && buckets == nil && previous == nil && limit == nil }
}
extension EngineTransaction {
    // MARK: queries

    /// The units a query selects, in name order.
    public func queryUnits(
        namespace name: Identifier, spec specName: Identifier, _ query: UnitQuery
    ) throws
        -> [UnitRecord]?
    {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        return try queryUnits(spec: spec, query)
    }

    func queryUnits(spec: SpecRecord, _ query: UnitQuery) throws -> [UnitRecord] {
        let limit = query.limit.flatMap { $0 > 0 ? $0 : nil } ?? Int.max
        var units: [UnitRecord]
        if let names = query.names {
            units = try Set(names).sorted().compactMap { try session.unit(spec: spec.id, key: $0) }
            if let buckets = query.buckets { units.removeAll { !buckets.contains($0.bucket(at: now)) } }
            if let previous = query.previous { units.removeAll { $0.key <= previous } }
            return Array(units.prefix(limit))
        }
        let fetch = limit == Int.max ? Int.max : limit + 1
        units = try session.units(
            spec: spec.id, buckets: query.buckets, startKey: query.previous, order: .key, limit: fetch)
        if let previous = query.previous, units.first?.key == previous { units.removeFirst() }
        return Array(units.prefix(limit))
    }

    /// Sets (`adjust` false) or adds to (`adjust` true) the priority of every unit a query selects. False: no
    /// such spec.
    public func changePriorities(
        namespace name: Identifier, spec specName: Identifier, _ query: UnitQuery, value: Double, adjust: Bool
    ) throws -> Bool {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return false }
        for var unit in try queryUnits(spec: spec, query) {
            unit.priority = Self.newPriority(unit.priority, set: adjust ? nil : value, adjust: adjust ? value : nil)
            try store(unit)
        }
        return true
    }

    /// Deletes the units a query selects (every unit when the query is empty); nil when there is no such spec.
    public func deleteUnits(namespace name: Identifier, spec specName: Identifier, _ query: UnitQuery) throws -> Int? {
        guard let (_, spec) = try specAndNamespace(name, specName) else { return nil }
        if query.isEmpty { return try session.deleteUnits(spec: spec.id, buckets: nil) }
        let units = try queryUnits(spec: spec, query)
        for unit in units { try session.deleteUnit(unit) }
        return units.count
    }
    // MARK: single units

    /// Adds or resets one unit (REST `POST …/work_unit`), a pending one left running under its attempt as
    /// go-coordinate does (docs/decisions.md); nil when there is no such spec, else whether it was created.
    public mutating func addWorkUnit(
        namespace name: Identifier, spec specName: Identifier, _ item: UnitItem
    ) throws
        -> Bool?
    {
        try configuration.check(unitData: item.data)
        guard let (namespace, spec) = try specAndNamespace(name, specName) else { return nil }
        return try add(item, to: spec, namespace: namespace, pendingUnits: .keep)
    }

    /// A unit `PUT` (rest-api.md §3.3); false when the unit does not exist.
    public mutating func changeWorkUnit(
        namespace name: Identifier, spec specName: Identifier, key: Identifier, _ put: UnitChange
    ) throws -> Bool {
        guard let (namespace, spec) = try specAndNamespace(name, specName),
            var unit = try session.unit(spec: spec.id, key: key)
        else { return false }
        if let priority = put.priority { unit.priority = priority }
        if let notBefore = put.notBefore { unit.notBefore = notBefore }
        if put.clearActiveAttempt {
            unit.restoreOwnData()
            switch unit.bucket(at: now) {
            case .pending:
                try endPendingAttempt(of: unit, as: .retryable, data: unit.data, namespace: namespace, spec: spec)
                unit.state = .available
                unit.leaseDeadline = nil
            case .finished, .failed:
                unit.state = .available
                unit.completionTime = nil
            case .ready, .delayed:
                break
            }
        }
        try store(unit)
        return true
    }

    /// Deletes one unit; false when it does not exist.
    public func deleteWorkUnit(namespace name: Identifier, spec specName: Identifier, key: Identifier) throws -> Bool {
        guard let (_, spec) = try specAndNamespace(name, specName), let unit = try session.unit(spec: spec.id, key: key)
        else { return false }
        try session.deleteUnit(unit)
        return true
    }

    /// A unit's attempts, oldest first.
    public func attempts(of unit: UnitRecord) throws -> [AttemptRecord] {
        try session.attempts(of: unit)
    }

    /// The latest attempt of a unit.
    public func latestAttempt(ofUnit unit: UnitRecord) throws -> AttemptRecord? {
        try latestAttempt(of: unit)
    }
}
