import CBOR

/// A work request (semantics.md §9.1).
public struct WorkRequest: Sendable {
    public var worker: Identifier
    /// Requested number of units, ≥ 1; the engine clamps it to `max_units_per_call`.
    public var count: Int
    /// Lease in microseconds, already adjusted by the caller's rules (semantics.md §8.1).
    public var lease: Int64
    public var filter: Scheduler.Filter

    public init(worker: Identifier, count: Int, lease: Int64, filter: Scheduler.Filter) {
        self.worker = worker
        self.count = max(1, count)
        self.lease = lease
        self.filter = filter
    }
}

/// One unit handed out by `get_work`.
public struct GrantedUnit: Sendable, Equatable {
    public var spec: SpecRecord
    public var unit: UnitRecord
    public var attemptID: Int64
}

extension EngineTransaction {
    /// The scheduler inputs of every spec of the namespace, in name order.
    func schedulerInputs(namespace: NamespaceRecord) throws -> (specs: [SpecRecord], inputs: [SchedulerInput]) {
        let specs = try session.specs(namespace: namespace.id)
        var inputs: [SchedulerInput] = []
        inputs.reserveCapacity(specs.count)
        for spec in specs {
            let counts = try session.unitCounts(spec: spec.id)
            let top = counts.ready > 0 ? try session.topReadyPriority(spec: spec.id) ?? 0 : 0
            inputs.append(
                SchedulerInput(
                    name: spec.name, fields: spec.effective, nextContinuous: spec.nextContinuous,
                    pending: counts.pending, available: counts.ready, unitPriority: top))
        }
        return (specs, inputs)
    }

    /// Hands out work (semantics.md §9.2): one spec chosen by the scheduler, up to the request's count of its
    /// best units (or one minted continuous unit), each granted with a new attempt; `max_retries` applied.
    /// Always terminates: at most 16 scheduling rounds.
    public mutating func getWork(namespace name: Identifier, _ request: WorkRequest) throws -> [GrantedUnit] {
        guard let namespace = try namespace(name, create: false) else { return [] }
        var request = request
        request.count = configuration.grantable(request.count)
        for _ in 0..<16 {
            let (specs, inputs) = try schedulerInputs(namespace: namespace)
            let generation = try session.specGeneration(namespace: namespace.id)
            var graph = engine.graphs.withLock { graphs in
                graphs[namespace.id].flatMap { $0.generation == generation ? $0.graph : nil }
            }
            if graph == nil {
                let built = SchedulerGraph(specs: inputs)
                engine.graphs.withLock { $0[namespace.id] = (generation, built) }
                graph = built
            }
            let pick = engine.credits.withLock { credits -> Int? in
                var namespaceCredits = credits[namespace.id] ?? SchedulerCredits()
                let pick = Scheduler.choose(
                    specs: inputs, filter: request.filter, now: now, credits: &namespaceCredits, graph: graph)
                credits[namespace.id] = namespaceCredits
                return pick
            }
            guard let pick else { return [] }
            // Re-validate the choice on the spec's current state under its grant lock: another daemon sharing the
            // database may have granted, paused or changed it since the inputs were read (storage.md §4.3).
            guard let (locked, counts) = try session.lockSpecForGrant(specs[pick], expecting: request.count) else {
                continue
            }
            var spec = locked
            let fields = spec.effective
            let input = SchedulerInput(
                name: spec.name, fields: fields, nextContinuous: spec.nextContinuous, pending: counts.pending,
                available: counts.ready, unitPriority: inputs[pick].unitPriority)
            guard !fields.paused, fields.weight >= 1, input.willRun(at: now) else { continue }

            var wanted = request.count
            if let maxGetwork = fields.maxGetwork { wanted = min(wanted, Int(clamping: maxGetwork)) }
            if let maxRunning = fields.maxRunning { wanted = min(wanted, Int(clamping: maxRunning) - input.pending) }
            var units = wanted > 0 ? try session.readyUnits(spec: spec.id, limit: wanted) : []
            if units.isEmpty, input.isMintable(at: now) {
                units = [try mint(in: spec)]
            }
            guard !units.isEmpty else { continue }

            var granted: [GrantedUnit] = []
            for var unit in units {
                if unit.damage != nil {
                    try failDamaged(&unit, worker: request.worker, namespace: namespace, spec: spec)
                    continue
                }
                try grant(&unit, to: request.worker, lease: request.lease, namespace: namespace, spec: spec)
                granted.append(GrantedUnit(spec: spec, unit: unit, attemptID: unit.latestAttemptID ?? 0))
            }
            if let interval = fields.interval {
                spec.nextContinuous = now &+ interval
                try session.updateSpec(spec)
                for index in granted.indices { granted[index].spec = spec }
            }
            if let maxRetries = fields.maxRetries {
                var kept: [GrantedUnit] = []
                for entry in granted {
                    var unit = entry.unit
                    if unit.attemptCount - unit.retryCountBase > maxRetries {
                        try failForRetries(&unit, namespace: namespace, spec: spec)
                    } else {
                        kept.append(entry)
                    }
                }
                granted = kept
            }
            if !granted.isEmpty { return granted }
        }
        return []
    }

    /// Creates a continuous unit: key `<seconds>.<microseconds>` of now as bytes, made unique by adding
    /// microseconds; empty data; priority −1 (semantics.md §9.3).
    mutating func mint(in spec: SpecRecord) throws -> UnitRecord {
        var instant = now
        while true {
            let seconds = instant / 1_000_000
            let micros = instant % 1_000_000
            let digits = String(micros)
            let text = "\(seconds)." + String(repeating: "0", count: 6 - digits.count) + digits
            let key = Identifier(octets: Array(text.utf8), isText: false)
            if try session.unit(spec: spec.id, key: key) == nil {
                return try session.insertUnit(UnitRecord(specID: spec.id, key: key, data: .emptyMap, priority: -1))
            }
            instant += 1
        }
    }

    /// The unit's stored data is damaged (``StoredData``): it fails instead of being granted, its data the
    /// replacement that says why, with an attempt of the requesting worker recording that.
    mutating func failDamaged(
        _ unit: inout UnitRecord, worker: Identifier, namespace: NamespaceRecord, spec: SpecRecord
    ) throws {
        if unit.state == .pending {
            try endPendingAttempt(of: unit, as: .failed, data: unit.data, namespace: namespace, spec: spec)
        } else {
            try recordZeroLengthAttempt(for: &unit, worker: worker, status: .failed, namespace: namespace, spec: spec)
        }
        try fail(&unit)
    }

    /// `max_retries` exceeded: the new attempt fails and the unit becomes FAILED with traceback
    /// `too many retries`; no chaining (semantics.md §9.4).
    mutating func failForRetries(_ unit: inout UnitRecord, namespace: NamespaceRecord, spec: SpecRecord) throws {
        let message = CBORValue.text("too many retries")
        switch unit.data.decoded() {
        case .map(var map):
            if let index = map.pairs.lastIndex(where: { $0.key.stringOctets == Array("traceback".utf8) }) {
                map.pairs[index].value = message
            } else {
                map.append(.text("traceback"), message)
            }
            unit.setOwnData(StoredValue(encoding: .map(map)))
        default:
            unit.setOwnData(StoredValue(encoding: .map(CBORMap([(.text("traceback"), message)]))))
        }
        try endPendingAttempt(of: unit, as: .failed, data: unit.data, namespace: namespace, spec: spec)
        try fail(&unit)
    }
}
