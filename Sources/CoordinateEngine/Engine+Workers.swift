import CBOR

/// A change of a worker record (REST's worker `PUT`, rest-api.md §3.5). Nil fields are absent.
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

    /// Deletes the records of workers that are not live and sent no heartbeat within `worker_retention`
    /// (semantics.md §7.2). The rule is decided here; the storage lists, and deletes a record only while its
    /// heartbeat is the one read (another daemon may take a heartbeat meanwhile). It runs once a minute, so
    /// reading every worker record is cheap next to keeping a copy of the rule in each backend's SQL.
    public func purgeInactiveWorkers() throws -> Int {
        let cutoff = now &- Time.duration(seconds: configuration.workerRetention)
        var purged = 0
        for namespace in try session.allNamespaces() {
            for worker in try session.workers(namespace: namespace.id)
            where worker.lastHeartbeat < cutoff && !worker.isLive(at: now) {
                if try session.deleteWorker(
                    namespace: namespace.id, id: worker.id, ifLastHeartbeat: worker.lastHeartbeat)
                {
                    purged += 1
                }
            }
        }
        return purged
    }

    // MARK: records by id

    /// The worker record, created with REST defaults when it does not exist (semantics.md §7.2) and `create`
    /// is set. Nil when it does not exist and `create` is not set.
    public func worker(namespace name: Identifier, id: Identifier, create: Bool) throws -> WorkerRecord? {
        guard let namespace = try namespace(name, create: create) else { return nil }
        if let existing = try session.worker(namespace: namespace.id, id: id) { return existing }
        guard create else { return nil }
        let worker = WorkerRecord(
            namespaceID: namespace.id, id: id, active: true, mode: StoredValue(encoding: .text([])), data: .emptyMap,
            parent: nil, firstSeen: now, lastHeartbeat: now, expiration: now &+ defaultAttemptLease)
        try session.saveWorker(worker)
        return worker
    }

    /// A worker `PUT` (rest-api.md §3.5); creates the worker first when needed.
    public func updateWorker(namespace name: Identifier, id: Identifier, _ update: WorkerUpdate) throws {
        guard var worker = try worker(namespace: name, id: id, create: true) else { return }
        if let parent = update.parent { worker.parent = parent.flatMap { $0.isEmpty ? nil : $0 } }
        if update.active == true {
            worker.active = true
            if let mode = update.mode { worker.mode = mode }
            if let data = update.data { worker.data = data }
            worker.expiration = update.expiration ?? now &+ defaultAttemptLease
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
}
