import CBOR

/// Options of `control_work_spec` / REST meta `PUT` (semantics.md §3.3). Nil means "not given".
public struct SpecControl: Sendable, Equatable {
    public var continuous: Bool?
    /// 1 = RUNNABLE, 2 = PAUSED; other values are refused with `invalid work spec status R(value)`.
    public var status: CBORValue?
    public var paused: Bool?
    public var weight: Int64?
    /// `.some(nil)` removes the interval.
    public var interval: Double??
    /// `.some(nil)` (or ≤ 0) means unlimited.
    public var maxRunning: Int64??
    public var maxGetwork: Int64??
    public var maxRetries: Int64??
    public var priority: Int64?
    public var nextContinuous: Timestamp??

    public init() {}
}

/// The outcome of `control_work_spec`.
public enum SpecControlOutcome: Sendable, Equatable {
    case applied
    case noSuchSpec
    case cannotBeContinuous(name: Identifier)
    case invalidStatus(CBORValue)
}

extension EngineTransaction {
    // MARK: set / get / list / delete

    /// Creates or replaces a spec (rpc-methods.md §2.1). Returns true when the spec was created.
    @discardableResult
    public func setWorkSpec(
        namespace name: Identifier, data: CBORMap, requireName expected: Identifier? = nil
    )
        throws -> Bool
    {
        let specName = try SpecDerivation.name(of: data)
        if let expected, expected != specName { throw EngineError.changedName }
        let fields = try SpecDerivation.fields(of: data, report: warnClamped)
        guard let namespace = try namespace(name, create: true) else { return false }
        let stored = StoredValue(encoding: .map(data))
        if var existing = try session.spec(namespace: namespace.id, named: specName) {
            existing.name = specName
            existing.data = stored
            existing.derived = fields
            existing.overridden = []
            existing.overrideValues = SpecFields()
            try session.updateSpec(existing)
            return false
        }
        _ = try session.insertSpec(
            SpecRecord(namespaceID: namespace.id, name: specName, data: stored, derived: fields))
        return true
    }

    /// The spec record, or nil.
    public func spec(namespace name: Identifier, named spec: Identifier) throws -> SpecRecord? {
        guard let namespace = try namespace(name, create: false) else { return nil }
        return try session.spec(namespace: namespace.id, named: spec)
    }

    /// Specs with names ≥ `start` in name order, at most `limit` (nil: all), and the name of the first spec
    /// not returned when the limit stopped the listing (rpc-methods.md §2.5).
    public func listWorkSpecs(
        namespace name: Identifier, start: Identifier?, limit: Int?
    ) throws
        -> (specs: [SpecRecord], next: Identifier?)
    {
        guard let namespace = try namespace(name, create: false) else { return ([], nil) }
        var specs = try session.specs(namespace: namespace.id)
        if let start { specs.removeAll { $0.name < start } }
        if let limit, limit > 0, specs.count > limit {
            return (Array(specs.prefix(limit)), specs[limit].name)
        }
        return (specs, nil)
    }

    /// Deletes a spec with its units, attempts and archived counts. Returns false if there is no such spec.
    public func deleteWorkSpec(namespace name: Identifier, named specName: Identifier) throws -> Bool {
        guard let spec = try spec(namespace: name, named: specName) else { return false }
        try session.deleteSpec(spec)
        return true
    }

    /// Deletes every spec of the namespace and resets its scheduler state; returns how many specs went
    /// (rpc-methods.md §2.7).
    public func clear(namespace name: Identifier) throws -> Int {
        guard let namespace = try namespace(name, create: false) else { return 0 }
        let specs = try session.specs(namespace: namespace.id)
        for spec in specs { try session.deleteSpec(spec) }
        engine.resetCredits(namespace: namespace.id)
        return specs.count
    }

    // MARK: control

    /// Applies overrides (rpc-methods.md §2.3). All checks happen before anything changes.
    public func controlWorkSpec(
        namespace name: Identifier, named specName: Identifier, _ control: SpecControl
    )
        throws -> SpecControlOutcome
    {
        guard var spec = try spec(namespace: name, named: specName) else { return .noSuchSpec }
        if control.continuous == true, !spec.derived.canBeContinuous {
            return .cannotBeContinuous(name: spec.name)
        }
        var paused = control.paused
        if let status = control.status {
            switch status.intLike {
            case 1: paused = false
            case 2: paused = true
            default: return .invalidStatus(status)
            }
        }
        func clamp(_ value: Int64, _ key: String) -> Int64 {
            SpecDerivation.clampControl(value, key: key, report: warnClamped)
        }
        func limit(_ value: Int64?, _ key: String) -> Int64? {
            guard let value else { return nil }
            let clamped = clamp(value, key)
            return clamped > 0 ? clamped : nil
        }
        if let continuous = control.continuous {
            spec.overridden.insert(.continuous)
            spec.overrideValues.continuous = continuous
        }
        if let paused {
            spec.overridden.insert(.paused)
            spec.overrideValues.paused = paused
        }
        if let weight = control.weight {
            spec.overridden.insert(.weight)
            spec.overrideValues.weight = clamp(weight, "weight")
        }
        if let interval = control.interval {
            spec.overridden.insert(.interval)
            spec.overrideValues.interval = interval.flatMap { $0 > 0 ? Time.duration(seconds: $0) : nil }
        }
        if let maxRunning = control.maxRunning {
            spec.overridden.insert(.maxRunning)
            spec.overrideValues.maxRunning = limit(maxRunning, "max_running")
        }
        if let maxGetwork = control.maxGetwork {
            spec.overridden.insert(.maxGetwork)
            spec.overrideValues.maxGetwork = limit(maxGetwork, "max_getwork")
        }
        if let maxRetries = control.maxRetries {
            spec.overridden.insert(.maxRetries)
            spec.overrideValues.maxRetries = limit(maxRetries, "max_retries")
        }
        if let priority = control.priority {
            spec.overridden.insert(.priority)
            spec.overrideValues.priority = clamp(priority, "priority")
        }
        if let next = control.nextContinuous { spec.nextContinuous = next }
        try session.updateSpec(spec)
        return .applied
    }
}

/// One record of a summary (semantics.md §13): live units of one status in one spec.
public struct SummaryRecord: Sendable, Equatable {
    public var namespace: Identifier
    public var spec: Identifier
    public var bucket: UnitBucket
    public var count: Int
}

extension EngineTransaction {
    /// Live unit counts by (namespace, spec, status) with count > 0, sorted by namespace, spec and status in the
    /// order available, pending, finished, failed, delayed (semantics.md §13). `namespace` nil: all namespaces;
    /// `spec` restricts to one spec.
    public func summary(namespace name: Identifier?, spec specName: Identifier? = nil) throws -> [SummaryRecord] {
        let namespaces: [NamespaceRecord]
        if let name {
            guard let namespace = try session.namespace(named: name) else { return [] }
            namespaces = [namespace]
        } else {
            namespaces = try session.allNamespaces()
        }
        let order: [UnitBucket] = [.ready, .pending, .finished, .failed, .delayed]
        var records: [SummaryRecord] = []
        for namespace in namespaces {
            for spec in try session.specs(namespace: namespace.id) where specName == nil || spec.name == specName {
                let counts = try session.unitCounts(spec: spec.id)
                for bucket in order where counts[bucket] > 0 {
                    records.append(
                        SummaryRecord(namespace: namespace.name, spec: spec.name, bucket: bucket, count: counts[bucket])
                    )
                }
            }
        }
        return records
    }

    // MARK: namespaces

    /// Every namespace in name order.
    public func namespaces() throws -> [NamespaceRecord] {
        try session.allNamespaces().sorted { $0.name < $1.name }
    }

    /// Deletes everything in a namespace; `keepRecord` empties it but keeps it existing (the CBOR-RPC
    /// namespace). False when it does not exist.
    public func deleteNamespace(_ name: Identifier, keepRecord: Bool) throws -> Bool {
        guard let namespace = try namespace(name, create: false) else { return false }
        try session.deleteNamespace(namespace, keepRecord: keepRecord)
        engine.resetCredits(namespace: namespace.id)
        return true
    }
}
