import CBOR

/// Unit lifecycle primitives shared by every operation: grant, add/reset, finish, fail, release, chaining
/// (semantics.md §5–§6).
extension EngineTransaction {
    /// Stores `unit`; every unit write of the engine goes through here, and backends store what they are given.
    /// A PENDING unit whose lease has already run out — a renewal with a negative lease — expires at once
    /// (``Expiry``), as the sweep would expire it a moment later.
    func store(_ unit: UnitRecord) throws {
        var unit = unit
        if Expiry.leaseHasLapsed(unit, at: now) {
            var attempt = try latestAttempt(of: unit)
            if Expiry.expire(&unit, attempt: &attempt), let attempt { try session.updateAttempt(attempt) }
        }
        try session.updateUnit(unit)
    }

    /// The unit's latest attempt.
    func latestAttempt(of unit: UnitRecord) throws -> AttemptRecord? {
        guard unit.latestAttemptID != nil else { return nil }
        return try session.latestAttempt(of: unit)
    }

    /// Ends the unit's pending attempt (if its latest attempt is pending) with `status`.
    mutating func endPendingAttempt(
        of unit: UnitRecord, as status: AttemptStatus, data: StoredValue, namespace: NamespaceRecord, spec: SpecRecord
    ) throws {
        guard var attempt = try latestAttempt(of: unit), attempt.status == .pending else { return }
        attempt.status = status
        attempt.endTime = now
        attempt.data = data
        try session.updateAttempt(attempt)
        count(AttemptOutcome(status), spec: spec)
    }

    /// Grants `unit` to `worker` with a lease of `lease` microseconds (semantics.md §6.1).
    mutating func grant(
        _ unit: inout UnitRecord, to worker: Identifier, lease: Int64, namespace: NamespaceRecord, spec: SpecRecord
    ) throws {
        if unit.state == .pending {
            try endPendingAttempt(of: unit, as: .retryable, data: unit.data, namespace: namespace, spec: spec)
        }
        unit.restoreOwnData()
        let deadline = now &+ lease
        let attempt = try session.insertAttempt(
            AttemptRecord(
                unitID: unit.id, specID: unit.specID, namespaceID: namespace.id, worker: worker, startTime: now,
                expirationTime: deadline, status: .pending, data: unit.data),
            for: unit)
        unit.state = .pending
        unit.leaseDeadline = deadline
        unit.notBefore = nil
        unit.completionTime = nil
        unit.latestAttemptID = attempt.id
        unit.attemptCount += 1
        try store(unit)
        count(.granted, spec: spec)
    }

    /// Creates an attempt that starts and ends now (forced transitions of semantics.md §6.3).
    mutating func recordZeroLengthAttempt(
        for unit: inout UnitRecord, worker: Identifier, status: AttemptStatus, namespace: NamespaceRecord,
        spec: SpecRecord
    ) throws {
        let attempt = try session.insertAttempt(
            AttemptRecord(
                unitID: unit.id, specID: unit.specID, namespaceID: namespace.id, worker: worker, startTime: now,
                expirationTime: now, endTime: now, status: status, data: unit.data),
            for: unit)
        unit.latestAttemptID = attempt.id
        unit.attemptCount += 1
        count(AttemptOutcome(status), spec: spec)
    }

    /// Adds an item to `spec`, or resets the existing unit with its key (semantics.md §6.2). Returns true when a
    /// new unit was created.
    @discardableResult
    mutating func add(
        _ item: UnitItem, to spec: SpecRecord, namespace: NamespaceRecord, pendingUnits: PendingUnitsOnAdd = .reset
    ) throws -> Bool {
        try add([item], to: spec, namespace: namespace, pendingUnits: pendingUnits) == 1
    }

    /// What adding an item does to an existing unit that is PENDING.
    enum PendingUnitsOnAdd {
        /// Its attempt ends `retryable` and it becomes AVAILABLE, like any other existing unit (semantics.md
        /// §6.2; CBOR-RPC's `add_work_units`).
        case reset
        /// It keeps running under its attempt; only its data, priority and not-before time are replaced
        /// (go-coordinate's `AddWorkUnit`, which its REST client's single-unit POST expects; docs/decisions.md).
        case keep
    }

    /// Adds items to `spec`, resetting the existing units with their keys (semantics.md §6.2; pending ones as
    /// `pendingUnits` says); of identifier-equal keys only the last item counts. Returns how many units were
    /// created.
    ///
    /// The new units go to the storage in one call (``StorageSession/insertUnitsIfAbsent(_:)``), which answers
    /// the units that were there already; those are then reset one by one.
    mutating func add(
        _ items: [UnitItem], to spec: SpecRecord, namespace: NamespaceRecord, pendingUnits: PendingUnitsOnAdd = .reset
    ) throws -> Int {
        var seen = Set<Identifier>()
        var lastItems: [UnitItem] = []
        for item in items.reversed() where seen.insert(item.key).inserted { lastItems.append(item) }
        lastItems.reverse()
        let existing = try session.insertUnitsIfAbsent(
            lastItems.map { item in
                UnitRecord(
                    specID: spec.id, key: item.key, data: item.data, priority: item.priority ?? 0,
                    notBefore: notBefore(of: item))
            })
        guard !existing.isEmpty else { return lastItems.count }
        // Stored keys are unique by their octets, whatever their string kind.
        var itemsByKey: [[UInt8]: UnitItem] = [:]
        for item in lastItems { itemsByKey[item.key.octets] = item }
        for var unit in existing {
            guard let item = itemsByKey[unit.key.octets] else { continue }
            if unit.state == .pending {
                if pendingUnits == .keep {
                    unit.setOwnData(item.data)
                    if let priority = item.priority { unit.priority = priority }
                    unit.notBefore = notBefore(of: item)
                    try store(unit)
                    continue
                }
                try endPendingAttempt(of: unit, as: .retryable, data: item.data, namespace: namespace, spec: spec)
            }
            unit.state = .available
            unit.leaseDeadline = nil
            unit.setOwnData(item.data)
            if let priority = item.priority { unit.priority = priority }
            unit.notBefore = notBefore(of: item)
            unit.completionTime = nil
            unit.retryCountBase = unit.attemptCount
            try store(unit)
        }
        return lastItems.count - existing.count
    }

    /// When an added item becomes ready: after its positive delay, else at its absolute not-before time.
    private func notBefore(of item: UnitItem) -> Timestamp? {
        if let delay = item.delay, delay > 0 { now &+ Time.duration(seconds: delay) } else { item.notBefore }
    }

    /// Marks `unit` FINISHED now and runs chaining (semantics.md §6.5). The caller has already ended or
    /// created the attempt and applied the data.
    mutating func finish(_ unit: inout UnitRecord, spec: SpecRecord, namespace: NamespaceRecord) throws {
        unit.state = .finished
        unit.completionTime = now
        unit.leaseDeadline = nil
        unit.notBefore = nil
        try store(unit)
        try chain(from: unit, spec: spec, namespace: namespace)
    }

    /// Marks `unit` FAILED now.
    func fail(_ unit: inout UnitRecord) throws {
        unit.state = .failed
        unit.completionTime = now
        unit.leaseDeadline = nil
        unit.notBefore = nil
        try store(unit)
    }

    /// Creates units in the successor spec from the finished unit's `output` (semantics.md §6.5): items as
    /// `add_work_units` reads them, where an invalid one is skipped rather than refusing the rest, and an item
    /// without an explicit priority inherits the finished unit's.
    mutating func chain(from unit: UnitRecord, spec: SpecRecord, namespace: NamespaceRecord) throws {
        guard let then = spec.effective.then,
            let successor = try session.spec(namespace: namespace.id, named: then),
            case .map(let data) = unit.data.decoded(),
            let output = data["output"], output.isTruthy,
            let elements = UnitItemParser.elements(of: output)
        else { return }
        var items: [UnitItem] = []
        for element in elements {
            guard case .success(var item) = UnitItemParser.item(element),
                (try? configuration.check(unitData: item.data)) != nil
            else { continue }
            item.priority = item.priority ?? unit.priority
            items.append(item)
        }
        _ = try add(items, to: successor, namespace: namespace)
    }
}
