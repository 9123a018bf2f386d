import CBOR

/// A unit held by a child worker, as `get_child_work_units` reports it (semantics.md §7.5).
public struct HeldUnit: Sendable, Equatable {
    public var spec: SpecRecord
    public var unit: UnitRecord
    /// The worker of the unit's latest attempt while that attempt is pending or expired; nil once released.
    public var holder: Identifier?
    /// The deadline of that attempt, possibly past; nil when the holder is nil.
    public var expires: Timestamp?
}

extension EngineTransaction {
    /// Records a heartbeat (rpc-methods.md §2.17): the worker becomes live until now + `expiresIn`.
    public func workerHeartbeat(
        namespace name: Identifier, worker id: Identifier, mode: StoredValue, data: StoredValue, parent: Identifier?,
        expiresIn: Int64
    ) throws {
        guard let namespace = try namespace(name, create: true) else { return }
        let existing = try session.worker(namespace: namespace.id, id: id)
        try session.saveWorker(
            WorkerRecord(
                namespaceID: namespace.id, id: id, active: true, mode: mode, data: data,
                parent: parent.flatMap { $0.isEmpty ? nil : $0 }, firstSeen: existing?.firstSeen ?? now,
                lastHeartbeat: now, expiration: now &+ expiresIn))
    }

    /// Makes a live worker inactive; false when there is no live worker with this id.
    public func workerUnregister(namespace name: Identifier, worker id: Identifier) throws -> Bool {
        guard let namespace = try namespace(name, create: false),
            var worker = try session.worker(namespace: namespace.id, id: id), worker.isLive(at: now)
        else { return false }
        worker.active = false
        try session.saveWorker(worker)
        return true
    }

    /// Live workers in id order.
    public func liveWorkers(namespace name: Identifier) throws -> [WorkerRecord] {
        guard let namespace = try namespace(name, create: false) else { return [] }
        return try session.workers(namespace: namespace.id).filter { $0.isLive(at: now) }
    }

    /// Every worker record (live and inactive) in id order.
    public func allWorkers(namespace name: Identifier) throws -> [WorkerRecord] {
        guard let namespace = try namespace(name, create: false) else { return [] }
        return try session.workers(namespace: namespace.id)
    }

    /// A live worker's record, or nil.
    public func liveWorker(namespace name: Identifier, worker id: Identifier) throws -> WorkerRecord? {
        guard let namespace = try namespace(name, create: false),
            let worker = try session.worker(namespace: namespace.id, id: id), worker.isLive(at: now)
        else { return nil }
        return worker
    }

    /// The live children of `parent` with the units each holds (rpc-methods.md §2.16), children in id order.
    public func childWorkUnits(namespace name: Identifier, parent: Identifier) throws -> [(WorkerRecord, [HeldUnit])] {
        guard let namespace = try namespace(name, create: false) else { return [] }
        let children = try session.workers(namespace: namespace.id).filter { $0.isLive(at: now) && $0.parent == parent }
        return try children.map { child in (child, try heldUnits(namespace: namespace, worker: child.id)) }
    }

    /// The units `worker` holds (semantics.md §7.5), in order of the holding attempt's start time and id.
    func heldUnits(namespace: NamespaceRecord, worker: Identifier) throws -> [HeldUnit] {
        let candidates = try session.attempts(namespace: namespace.id, worker: worker, statuses: [.pending, .expired])
        var held: [(AttemptRecord, HeldUnit)] = []
        var seenUnits = Set<Int64>()
        for attempt in candidates.reversed() {
            guard seenUnits.insert(attempt.unitID).inserted, let unit = try session.unit(of: attempt),
                unit.state != .finished, unit.state != .failed
            else { continue }
            let history = try session.attempts(of: unit)
            // The worker's most recent attempt on the unit must be this pending or expired one.
            guard let mostRecent = history.last(where: { $0.worker == worker }), mostRecent.id == attempt.id,
                let spec = try session.spec(id: unit.specID), let latest = history.last
            else { continue }
            let holding = latest.status == .pending || latest.status == .expired
            held.append(
                (
                    attempt,
                    HeldUnit(
                        spec: spec, unit: unit, holder: holding ? latest.worker : nil,
                        expires: holding ? latest.expirationTime : nil)
                ))
        }
        held.sort { $0.0.startTime != $1.0.startTime ? $0.0.startTime < $1.0.startTime : $0.0.id < $1.0.id }
        return held.map(\.1)
    }

    /// Deletes inactive worker records whose last heartbeat is older than the retention (semantics.md §7.2).
    public func purgeInactiveWorkers() throws -> Int {
        try session.purgeWorkers(
            lastHeartbeatBefore: now &- Time.duration(seconds: configuration.workerRetention), now: now)
    }
}
