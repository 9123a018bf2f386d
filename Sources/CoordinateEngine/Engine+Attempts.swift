import CBOR

/// An action on an attempt (REST's attempt actions, rest-api.md §3.4).
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
/// The lease of a grant or renewal that names none (semantics.md §8.1).
public let defaultAttemptLease: Int64 = 900 * Time.microsecondsPerSecond
extension EngineTransaction {
    // MARK: attempts by id

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

    /// Applies an attempt action (rest-api.md §3.4). `data` becomes the attempt's; it stands in for the unit's
    /// own data while the attempt stays active (renew, finish, fail), and the unit shows its own data again when
    /// the action ends the attempt's activity (expire, retry), as in go-coordinate (docs/decisions.md).
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
            guard let data else { return }
            unit.setAttemptData(data)
            attempt.data = data
        }
        func endActivity() {
            if let data { attempt.data = data }
            unit.restoreOwnData()
        }
        switch action {
        case .renew(let extend):
            guard latest else { return .lostLease }
            guard attempt.status == .pending else { return .notPending }
            var lease = extend.flatMap { $0 > 0 ? $0 : nil } ?? defaultAttemptLease
            lease = min(lease, 86400 * Time.microsecondsPerSecond)
            applyData()
            attempt.expirationTime = now &+ lease
            unit.leaseDeadline = attempt.expirationTime
        case .expire:
            if attempt.status == .expired { return .applied }
            guard attempt.status == .pending else { return .notPending }
            endActivity()
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
            endActivity()
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
