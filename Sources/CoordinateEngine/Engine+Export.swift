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

/// One record of an export, in the order an export lists them: each spec followed by its units in key order,
/// then the workers, then the locks.
public enum ExportRecord: Sendable {
    case spec(SpecRecord)
    case unit(NamespaceSnapshot.Unit, spec: Identifier)
    case worker(WorkerRecord)
    case lock(LockRecord)

    /// The bytes of stored values it carries, which is what makes a page large.
    var size: Int {
        switch self {
        case .spec(let spec): return spec.data.bytes.count
        case .unit(let entry, _):
            return entry.attempts.reduce(entry.unit.data.bytes.count) { $0 + $1.data.bytes.count }
        case .worker(let worker): return worker.data.bytes.count + worker.mode.bytes.count
        case .lock(let lock): return lock.path.bytes.count
        }
    }
}

/// An export in progress (README "Operations", rest-api.md §3.7): a namespace read page by page from one
/// storage snapshot (``StorageSnapshot``), so writers keep going and memory stays bounded by a page, however
/// large the namespace. Call ``next()`` until it returns an empty page, and ``close()`` in every case.
public struct NamespaceExport: Sendable {
    private enum Position: Sendable {
        case start
        /// The units of `specs[index]` whose key is after `after` (from the first when nil).
        case units(index: Int, after: Identifier?)
        case workersAndLocks
        case done
    }

    /// A page ends after this many records or this many bytes of stored data, whichever comes first (at least
    /// one record); units are fetched this many at a time.
    static let pageRecords = 512
    static let pageBytes = 1 << 20
    static let fetchUnits = 64

    private let engine: Engine
    private let snapshot: any StorageSnapshot
    private let name: Identifier
    /// When the export was taken.
    public let exportedAt: Timestamp
    private var namespaceID: Int64?
    private var specs: [SpecRecord] = []
    private var position = Position.start
    /// Records read but not handed out yet: all of them, after the single read of a snapshot that is not
    /// isolated, which ``next()`` then hands out a page at a time.
    private var pending: ArraySlice<ExportRecord> = []

    init(engine: Engine, snapshot: any StorageSnapshot, name: Identifier) {
        self.engine = engine
        self.snapshot = snapshot
        self.name = name
        exportedAt = snapshot.takenAt ?? engine.clock.now()
    }

    /// The next records; empty once everything was listed.
    public mutating func next() async throws -> [ExportRecord] {
        if pending.isEmpty { try await read() }
        var count = 0
        var bytes = 0
        for record in pending {
            count += 1
            bytes += record.size
            if count >= Self.pageRecords || bytes >= Self.pageBytes { break }
        }
        defer { pending = pending.dropFirst(count) }
        return Array(pending.prefix(count))
    }

    private mutating func read() async throws {
        if case .done = position { return }
        // A snapshot that is not isolated is consistent only within one read: then everything is read at once.
        let isolated = snapshot.isIsolated
        let state = (namespaceID, specs, position)
        let (records, newState) = try await engine.read(on: snapshot) { [name, exportedAt] session in
            var page = Page(
                namespaceID: state.0, specs: state.1, position: state.2, exportedAt: exportedAt,
                budget: isolated ? (Self.pageRecords, Self.pageBytes) : (.max, .max))
            try page.fill(session, name: name)
            return (page.records, (page.namespaceID, page.specs, page.position))
        }
        (namespaceID, specs, position) = newState
        pending = records[...]
    }

    /// Releases the snapshot.
    public func close() { snapshot.close() }

    /// The reading of one page, on the storage's thread.
    private struct Page {
        var namespaceID: Int64?
        var specs: [SpecRecord]
        var position: Position
        let exportedAt: Timestamp
        let budget: (records: Int, bytes: Int)
        var records: [ExportRecord] = []
        var bytes = 0

        var full: Bool { records.count >= budget.records || bytes >= budget.bytes }

        mutating func fill(_ session: any StorageSession, name: Identifier) throws {
            while !full {
                switch position {
                case .start:
                    guard let namespace = try session.namespace(named: name) else {
                        position = .done
                        return
                    }
                    namespaceID = namespace.id
                    specs = try session.specs(namespace: namespace.id)
                    position = specs.isEmpty ? .workersAndLocks : .units(index: 0, after: nil)
                    if let first = specs.first { add(.spec(first)) }
                case .units(let index, let after):
                    let spec = specs[index]
                    // As many units as fit what is left of the page at the size of those read so far (large
                    // units one or two at a time), at most fetchUnits.
                    let average = records.isEmpty ? 16 << 10 : max(1, bytes / records.count)
                    let fitting = max(1, min(budget.records - records.count, (budget.bytes - bytes) / average))
                    let fetch = min(NamespaceExport.fetchUnits, fitting) + (after == nil ? 0 : 1)
                    var units = try session.units(
                        spec: spec.id, buckets: nil, startKey: after, order: .key, limit: fetch)
                    let exhausted = units.count < fetch
                    // The start key is inclusive: the first unit is the last one of the previous fetch.
                    if let after, units.first?.key == after { units.removeFirst() }
                    for var unit in units {
                        let attempts = try session.attempts(of: unit)
                        if unit.damage != nil { Self.exportDamaged(&unit, at: exportedAt) }
                        add(.unit(NamespaceSnapshot.Unit(unit: unit, attempts: attempts), spec: spec.name))
                    }
                    if !exhausted, let last = units.last {
                        position = .units(index: index, after: last.key)
                    } else if index + 1 < specs.count {
                        position = .units(index: index + 1, after: nil)
                        add(.spec(specs[index + 1]))
                    } else {
                        position = .workersAndLocks
                    }
                case .workersAndLocks:
                    guard let namespaceID else {
                        position = .done
                        return
                    }
                    for worker in try session.workers(namespace: namespaceID) { add(.worker(worker)) }
                    for lock in try session.locks(namespace: namespaceID, pathKeyPrefix: nil) { add(.lock(lock)) }
                    position = .done
                    return
                case .done:
                    return
                }
            }
        }

        mutating func add(_ record: ExportRecord) {
            records.append(record)
            bytes += record.size
        }

        /// A unit whose stored data is damaged is exported as `get_work` would leave it — failed, with the
        /// replacement that says why — so that importing the export never hands the replacement out as work.
        static func exportDamaged(_ unit: inout UnitRecord, at now: Timestamp) {
            guard unit.state != .failed else { return }
            unit.state = .failed
            unit.completionTime = now
            unit.leaseDeadline = nil
            unit.notBefore = nil
        }
    }
}

extension Engine {
    /// Starts an export of the namespace `name` from a snapshot of the storage (``NamespaceExport``). A
    /// namespace that does not exist exports as empty; it is not created.
    public func exportNamespace(_ name: Identifier) async throws -> NamespaceExport {
        let snapshot = try await withCheckedThrowingContinuation { continuation in
            backend.openSnapshot { continuation.resume(with: $0) }
        }
        return NamespaceExport(engine: self, snapshot: snapshot, name: name)
    }

    /// Runs `body` on `snapshot` and returns its result; damage it found is reported as for any operation.
    func read<T: Sendable>(
        on snapshot: any StorageSnapshot, _ body: @escaping @Sendable (any StorageSession) throws -> T
    ) async throws -> T {
        let box = ResultBox<T>()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            snapshot.read(
                { [self] session in
                    defer {
                        let damage = session.takeDamage()
                        if !damage.isEmpty { reportDamage(damage) }
                    }
                    box.value = try body(session)
                },
                completion: { error in
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                })
        }
        guard let value = box.value else { throw StorageError.corrupt("snapshot read produced no result") }
        return value
    }
}

extension EngineTransaction {
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
                if unit.attemptCount > 0 { try store(unit) }
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
