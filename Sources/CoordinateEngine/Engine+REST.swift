import CBOR

/// A REST unit query (rest-api.md §3 `Q`): units matching every given parameter, by name, after `previous`,
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

/// A REST attempt action (rest-api.md §3.4).
public enum AttemptAction: Sendable, Equatable {
    /// Extend by this many microseconds (nil or ≤ 0: 900 s; at most 86 400 s).
    case renew(extend: Int64?)
    case expire
    case finish
    case fail
    /// Make the unit available again, not before now + this many seconds when positive.
    case retry(delay: Double?)
}

public enum AttemptActionOutcome: Sendable, Equatable {
    case applied
    case noSuchAttempt
    /// 409 `ErrNotPending`
    case notPending
    /// 409 `ErrLostLease`
    case lostLease
}

/// A REST worker `PUT` (rest-api.md §3.5). Nil fields are absent.
public struct WorkerUpdate: Sendable, Equatable {
    /// `.some(nil)` clears the parent (`""`).
    public var parent: Identifier??
    public var active: Bool?
    public var mode: StoredValue?
    public var data: StoredValue?
    public var expiration: Timestamp?

    public init(
        parent: Identifier?? = nil, active: Bool? = nil, mode: StoredValue? = nil, data: StoredValue? = nil,
        expiration: Timestamp? = nil
    ) {
        self.parent = parent
        self.active = active
        self.mode = mode
        self.data = data
        self.expiration = expiration
    }
}

/// One item of a REST bulk update (rest-api.md §3.2).
public struct BulkUpdateItem: Sendable, Equatable {
    public var key: Identifier
    public var update: UnitUpdate
    public var priority: Double?

    public init(key: Identifier, update: UnitUpdate, priority: Double?) {
        self.key = key
        self.update = update
        self.priority = priority
    }
}

/// A REST unit `PUT` (rest-api.md §3.3).
public struct UnitPut: Sendable, Equatable {
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

/// The default lease of REST grants and renewals (semantics.md §8.1).
public let restDefaultLease: Int64 = 900 * Time.microsecondsPerSecond

extension EngineTransaction {
    // MARK: - Namespaces

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

    // MARK: - Unit queries

    /// The units a REST query selects, in name order.
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

    // MARK: - Single units

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
    public mutating func putWorkUnit(
        namespace name: Identifier, spec specName: Identifier, key: Identifier, _ put: UnitPut
    ) throws -> Bool {
        guard let (namespace, spec) = try specAndNamespace(name, specName),
            var unit = try session.unit(spec: spec.id, key: key)
        else { return false }
        if let priority = put.priority { unit.priority = priority }
        if let notBefore = put.notBefore { unit.notBefore = notBefore }
        if put.clearActiveAttempt {
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

    // MARK: - Bulk update

    /// Applies updates in order, atomically (rest-api.md §3.2). Nil when there is no such spec; otherwise one
    /// message per item, nil for success.
    public mutating func bulkUpdate(
        namespace name: Identifier, spec specName: Identifier, _ items: [BulkUpdateItem]
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
                unit.data = data
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

    // MARK: - Attempts

    /// An attempt with its unit and spec, or nil.
    public func attempt(namespace name: Identifier, id: Int64) throws -> (AttemptRecord, UnitRecord, SpecRecord)? {
        guard let namespace = try namespace(name, create: false), let attempt = try session.attempt(id: id),
            attempt.namespaceID == namespace.id, let unit = try session.unit(of: attempt),
            let spec = try session.spec(id: attempt.specID)
        else { return nil }
        return (attempt, unit, spec)
    }

    /// Whether the attempt with this id existed once and was deleted with its unit, spec or namespace (go-coordinate's
    /// `ErrGone`), as opposed to never having existed.
    public func attemptIsGone(id: Int64) throws -> Bool {
        try session.attempt(id: id) == nil && session.attemptIDWasIssued(id)
    }

    /// The oldest attempt of a unit by `worker` whose start time truncated to the second is `startSecond`
    /// (the attempt alias route).
    public func attempt(
        namespace name: Identifier, spec specName: Identifier, key: Identifier, worker: Identifier,
        startSecond: Int64
    ) throws -> AttemptRecord? {
        guard let (_, spec) = try specAndNamespace(name, specName), let unit = try session.unit(spec: spec.id, key: key)
        else { return nil }
        return try session.attempts(of: unit).first {
            $0.worker == worker && Self.floorSeconds($0.startTime) == startSecond
        }
    }

    /// Whole seconds of an instant, rounded down (the attempt alias route's start time).
    public static func floorSeconds(_ instant: Timestamp) -> Int64 {
        instant >= 0 ? instant / Time.microsecondsPerSecond : (instant - 999_999) / Time.microsecondsPerSecond
    }

    /// Applies an attempt action (rest-api.md §3.4); `data` replaces the unit's data and the snapshot.
    public mutating func attemptAction(
        namespace name: Identifier, id: Int64, _ action: AttemptAction, data: StoredValue?
    ) throws -> AttemptActionOutcome {
        if let data { try configuration.check(unitData: data) }
        guard let namespace = try namespace(name, create: false), var attempt = try session.attempt(id: id),
            attempt.namespaceID == namespace.id, var unit = try session.unit(of: attempt),
            let spec = try session.spec(id: attempt.specID)
        else { return .noSuchAttempt }
        let latest = unit.latestAttemptID == attempt.id
        func applyData() {
            if let data {
                unit.data = data
                attempt.data = data
            }
        }
        switch action {
        case .renew(let extend):
            guard latest else { return .lostLease }
            guard attempt.status == .pending else { return .notPending }
            var lease = extend.flatMap { $0 > 0 ? $0 : nil } ?? restDefaultLease
            lease = min(lease, 86400 * Time.microsecondsPerSecond)
            applyData()
            attempt.expirationTime = now &+ lease
            unit.leaseDeadline = attempt.expirationTime
        case .expire:
            if attempt.status == .expired { return .applied }
            guard attempt.status == .pending else { return .notPending }
            applyData()
            attempt.status = .expired
            attempt.endTime = now
            unit.state = .available
            unit.leaseDeadline = nil
            count(.expired, spec: spec)
        case .finish:
            if attempt.status == .finished { return .applied }
            guard latest else { return try finishSuperseded(&attempt, data: data) }
            applyData()
            attempt.status = .finished
            if attempt.endTime == nil { attempt.endTime = now }
            try session.updateAttempt(attempt)
            count(.finished, spec: spec)
            try finish(&unit, spec: spec, namespace: namespace)
            return .applied
        case .fail:
            if attempt.status == .failed { return .applied }
            if attempt.status == .finished { return .notPending }
            guard latest else { return .lostLease }
            applyData()
            attempt.status = .failed
            attempt.endTime = attempt.endTime ?? now
            try session.updateAttempt(attempt)
            count(.failed, spec: spec)
            try fail(&unit)
            return .applied
        case .retry(let delay):
            guard attempt.status == .pending else { return .notPending }
            applyData()
            attempt.status = .retryable
            attempt.endTime = now
            unit.state = .available
            unit.leaseDeadline = nil
            unit.notBefore = delay.flatMap { $0 > 0 ? now &+ Time.duration(seconds: $0) : nil }
            count(.retryable, spec: spec)
        }
        try session.updateAttempt(attempt)
        try store(unit)
        return .applied
    }

    /// Finishes an attempt that is no longer its unit's latest, as go-coordinate lets its REST client do: the
    /// attempt records that its worker finished, with the data it sent; the unit belongs to a newer attempt or
    /// to none, so it does not change and nothing chains (docs/decisions.md, "REST: finishing a superseded
    /// attempt"). An attempt superseded here ended `retryable` (semantics.md §6.1) — or `failed` — and may be
    /// finished; an expired one may not.
    private func finishSuperseded(
        _ attempt: inout AttemptRecord, data: StoredValue?
    ) throws -> AttemptActionOutcome {
        switch attempt.status {
        case .retryable, .failed:
            if let data { attempt.data = data }
            attempt.status = .finished
            attempt.endTime = now
            try session.updateAttempt(attempt)
            return .applied
        case .expired: return .notPending
        case .pending, .finished: return .lostLease
        }
    }

    /// Attempts of a worker, oldest first, optionally only those with the given statuses.
    public func attempts(
        namespace name: Identifier, worker: Identifier, statuses: Set<AttemptStatus>?
    ) throws
        -> [AttemptRecord]
    {
        guard let namespace = try namespace(name, create: false) else { return [] }
        return try session.attempts(namespace: namespace.id, worker: worker, statuses: statuses)
    }

    /// Pending attempts of the children of `parent`, live or not: go-coordinate's REST client registers a child
    /// without activating it (docs/decisions.md), unlike `get_child_work_units`, which reports live children.
    public func childAttempts(namespace name: Identifier, parent: Identifier) throws -> [AttemptRecord] {
        guard let namespace = try namespace(name, create: false) else { return [] }
        let children = try session.workers(namespace: namespace.id).filter { $0.parent == parent }
        return try children.flatMap {
            try session.attempts(namespace: namespace.id, worker: $0.id, statuses: [.pending])
        }
        .sorted { $0.id < $1.id }
    }

    /// The unit and spec of an attempt (for representations).
    public func unitAndSpec(of attempt: AttemptRecord) throws -> (UnitRecord, SpecRecord)? {
        guard let unit = try session.unit(of: attempt), let spec = try session.spec(id: attempt.specID) else {
            return nil
        }
        return (unit, spec)
    }

    // MARK: - Workers

    /// The worker record, created with REST defaults when it does not exist (semantics.md §7.2) and `create`
    /// is set. Nil when it does not exist and `create` is not set.
    public func worker(namespace name: Identifier, id: Identifier, create: Bool) throws -> WorkerRecord? {
        guard let namespace = try namespace(name, create: create) else { return nil }
        if let existing = try session.worker(namespace: namespace.id, id: id) { return existing }
        guard create else { return nil }
        let worker = WorkerRecord(
            namespaceID: namespace.id, id: id, active: true, mode: StoredValue(encoding: .text([])), data: .emptyMap,
            parent: nil, firstSeen: now, lastHeartbeat: now, expiration: now &+ restDefaultLease)
        try session.saveWorker(worker)
        return worker
    }

    /// A worker `PUT` (rest-api.md §3.5); creates the worker first when needed.
    public func putWorker(namespace name: Identifier, id: Identifier, _ update: WorkerUpdate) throws {
        guard var worker = try worker(namespace: name, id: id, create: true) else { return }
        if let parent = update.parent { worker.parent = parent.flatMap { $0.isEmpty ? nil : $0 } }
        if update.active == true {
            worker.active = true
            if let mode = update.mode { worker.mode = mode }
            if let data = update.data { worker.data = data }
            worker.expiration = update.expiration ?? now &+ restDefaultLease
            worker.lastHeartbeat = now
        } else if update.active == false, worker.isLive(at: now) {
            worker.active = false
        }
        try session.saveWorker(worker)
    }

    /// The units a worker holds (semantics.md §7.5), in the order of its attempts.
    public func heldUnitsOf(namespace name: Identifier, worker: Identifier) throws -> [HeldUnit] {
        guard let namespace = try namespace(name, create: false) else { return [] }
        return try heldUnits(namespace: namespace, worker: worker)
    }

    /// Deletes a worker record (attempts are kept); false when it does not exist.
    public func deleteWorker(namespace name: Identifier, id: Identifier) throws -> Bool {
        guard let namespace = try namespace(name, create: false),
            try session.worker(namespace: namespace.id, id: id) != nil
        else { return false }
        try session.deleteWorker(namespace: namespace.id, id: id)
        return true
    }

    /// A forced grant (semantics.md §6.1): the unit is granted to the worker even if it is pending. Nil when
    /// the spec or unit does not exist.
    public mutating func makeAttempt(
        namespace name: Identifier, spec specName: Identifier, key: Identifier, worker: Identifier, lease: Int64
    ) throws -> AttemptRecord? {
        guard let (namespace, spec) = try specAndNamespace(name, specName),
            var unit = try session.unit(spec: spec.id, key: key)
        else { return nil }
        _ = try self.worker(namespace: name, id: worker, create: true)
        try grant(&unit, to: worker, lease: lease, namespace: namespace, spec: spec)
        return try latestAttempt(of: unit)
    }
}
