import CBOR

/// One item to add to a spec (rpc-methods.md §2.8, REST bulk add, chaining outputs).
public struct UnitItem: Sendable, Equatable {
    public var key: Identifier
    public var data: StoredValue
    /// An explicit priority, if the item carries one.
    public var priority: Double?
    /// Not-before delay in seconds; only positive values delay.
    public var delay: Double?
    /// An absolute not-before time (REST `meta.not_before`); `delay` wins when both are set.
    public var notBefore: Timestamp?

    public init(
        key: Identifier, data: StoredValue, priority: Double? = nil, delay: Double? = nil, notBefore: Timestamp? = nil
    ) {
        self.key = key
        self.data = data
        self.priority = priority
        self.delay = delay
        self.notBefore = notBefore
    }
}

/// Unit lifecycle primitives shared by every operation: grant, add/reset, finish, fail, release, chaining
/// (semantics.md §5–§6).
extension EngineTransaction {
    /// Stores `unit`; every unit write of the engine goes through here, and backends store what they are given.
    /// A PENDING unit whose lease has already run out — a renewal with a negative lease — expires at once, as the
    /// sweep would expire it a moment later (semantics.md §6.4): its pending attempt ends `expired` at the
    /// deadline and the unit becomes AVAILABLE.
    func store(_ unit: UnitRecord) throws {
        var unit = unit
        if unit.state == .pending, let deadline = unit.leaseDeadline, deadline < now {
            if var attempt = try latestAttempt(of: unit), attempt.status == .pending {
                attempt.status = .expired
                attempt.endTime = max(attempt.startTime, deadline)
                try session.updateAttempt(attempt)
            }
            unit.state = .available
            unit.leaseDeadline = nil
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
                    unit.data = item.data
                    if let priority = item.priority { unit.priority = priority }
                    unit.notBefore = notBefore(of: item)
                    try store(unit)
                    continue
                }
                try endPendingAttempt(of: unit, as: .retryable, data: item.data, namespace: namespace, spec: spec)
            }
            unit.state = .available
            unit.leaseDeadline = nil
            unit.data = item.data
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

    /// Creates units in the successor spec from the finished unit's `output` (semantics.md §6.5).
    mutating func chain(from unit: UnitRecord, spec: SpecRecord, namespace: NamespaceRecord) throws {
        guard let then = spec.effective.then,
            let successor = try session.spec(namespace: namespace.id, named: then),
            case .map(let data) = unit.data.decoded(),
            let output = data["output"], output.isTruthy
        else { return }
        var items: [UnitItem] = []
        switch output {
        case .map(let pairs):
            for pair in pairs.pairs {
                guard let key = Identifier(pair.key),
                    let item = chainedItem(key: key, data: pair.value, meta: nil, priority: nil, parent: unit)
                else { continue }
                items.append(item)
            }
        case .array(let elements), .tuple(let elements):
            for element in elements {
                if let key = Identifier(element) {
                    if let item = chainedItem(key: key, data: .map(CBORMap()), meta: nil, priority: nil, parent: unit) {
                        items.append(item)
                    }
                    continue
                }
                guard let parts = element.listElements, (2...4).contains(parts.count), let key = Identifier(parts[0])
                else { continue }
                let meta = parts.count >= 3 ? parts[2] : .null
                let priority = parts.count == 4 ? parts[3] : .null
                if let item = chainedItem(key: key, data: parts[1], meta: meta, priority: priority, parent: unit) {
                    items.append(item)
                }
            }
        default:
            return
        }
        _ = try add(items, to: successor, namespace: namespace)
    }

    /// Builds one chained item, or nil when the element is malformed and must be skipped.
    private func chainedItem(
        key: Identifier, data: CBORValue, meta: CBORValue?, priority: CBORValue?, parent: UnitRecord
    )
        -> UnitItem?
    {
        var itemPriority = parent.priority
        var delay: Double?
        if let meta, !meta.isNull {
            guard case .map(let metaMap) = meta else { return nil }
            if let value = metaMap["priority"], !value.isNull {
                guard let number = value.strictNumber, number.isFinite else { return nil }
                itemPriority = number
            }
            if let value = metaMap["delay"], !value.isNull {
                guard let number = value.strictNumber, number.isFinite else { return nil }
                delay = number
            }
        }
        if let priority, !priority.isNull {
            guard let number = priority.strictNumber, number.isFinite else { return nil }
            itemPriority = number
        }
        let stored = StoredValue(encoding: data)
        if let limit = configuration.maxUnitDataBytes, stored.bytes.count > limit { return nil }
        return UnitItem(key: key, data: stored, priority: itemPriority, delay: delay)
    }
}
