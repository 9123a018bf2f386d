import CBOR

/// Everything persistent in one namespace (storage.md §1.3), as export writes it and import restores it
/// (README "Operations", rest-api.md §3.7).
public struct NamespaceSnapshot: Sendable {
    public struct Unit: Sendable {
        public var unit: UnitRecord
        /// Oldest first.
        public var attempts: [AttemptRecord]

        public init(unit: UnitRecord, attempts: [AttemptRecord]) {
            self.unit = unit
            self.attempts = attempts
        }
    }

    public struct Spec: Sendable {
        public var spec: SpecRecord
        /// In key order.
        public var units: [Unit]

        public init(spec: SpecRecord, units: [Unit]) {
            self.spec = spec
            self.units = units
        }
    }

    /// In name order.
    public var specs: [Spec]
    /// In id order.
    public var workers: [WorkerRecord]
    /// In `list_locks` order.
    public var locks: [LockRecord]

    public init(specs: [Spec] = [], workers: [WorkerRecord] = [], locks: [LockRecord] = []) {
        self.specs = specs
        self.workers = workers
        self.locks = locks
    }
}

/// What an import restored.
public struct ImportCounts: Sendable, Equatable {
    public var specs = 0
    public var units = 0
    public var attempts = 0
    public var workers = 0
    public var locks = 0

    public init() {}
}

public enum ImportOutcome: Sendable, Equatable {
    /// The namespace holds specs, workers or locks (409 `ErrNotEmpty`).
    case notEmpty
    case imported(ImportCounts)
}

extension EngineTransaction {
    /// A consistent snapshot of a namespace; nil when it does not exist (it is not created).
    public func exportNamespace(_ name: Identifier) throws -> NamespaceSnapshot? {
        guard let namespace = try namespace(name, create: false) else { return nil }
        var snapshot = NamespaceSnapshot()
        for spec in try session.specs(namespace: namespace.id) {
            let units = try session.units(spec: spec.id, buckets: nil, startKey: nil, order: .key, limit: Int.max)
            snapshot.specs.append(
                NamespaceSnapshot.Spec(
                    spec: spec,
                    units: try units.map { NamespaceSnapshot.Unit(unit: $0, attempts: try session.attempts(of: $0)) }))
        }
        snapshot.workers = try session.workers(namespace: namespace.id)
        snapshot.locks = try session.locks(namespace: namespace.id, pathKeyPrefix: nil)
        return snapshot
    }

    /// Restores a snapshot into an empty namespace (created if needed), atomically. Records keep their stored
    /// states, deadlines and counts; attempts get new ids in file order.
    public func importNamespace(_ name: Identifier, _ snapshot: NamespaceSnapshot) throws -> ImportOutcome {
        guard let namespace = try namespace(name, create: true) else { return .notEmpty }
        if try !session.specs(namespace: namespace.id).isEmpty || !session.workers(namespace: namespace.id).isEmpty
            || !session.locks(namespace: namespace.id, pathKeyPrefix: nil).isEmpty
        {
            return .notEmpty
        }
        var counts = ImportCounts()
        for entry in snapshot.specs {
            var spec = entry.spec
            spec.namespaceID = namespace.id
            spec = try session.insertSpec(spec)
            counts.specs += 1
            for item in entry.units {
                var unit = item.unit
                unit.specID = spec.id
                unit.latestAttemptID = nil
                unit.attemptCount = 0
                unit = try session.insertUnit(unit)
                for var attempt in item.attempts {
                    attempt.unitID = unit.id
                    attempt.specID = spec.id
                    attempt.namespaceID = namespace.id
                    let stored = try session.insertAttempt(attempt, for: unit)
                    unit.latestAttemptID = stored.id
                    unit.attemptCount += 1
                    counts.attempts += 1
                }
                if unit.attemptCount > 0 { try session.updateUnit(unit) }
                counts.units += 1
            }
        }
        for var worker in snapshot.workers {
            worker.namespaceID = namespace.id
            try session.saveWorker(worker)
            counts.workers += 1
        }
        for var lock in snapshot.locks {
            lock.namespaceID = namespace.id
            try session.saveLock(lock)
            counts.locks += 1
        }
        return .imported(counts)
    }
}
