import CBOR
import Synchronization

/// The `memory` backend (storage.md §2): every operation of every namespace runs under one mutex, against
/// in-process structures. Nothing survives the process.
public final class MemoryBackend: StorageBackend {
    public let name = "memory"
    private let store: Mutex<MemoryStore>
    private let closed = Atomic<Bool>(false)

    public init() {
        store = Mutex(MemoryStore())
    }

    public func execute<T: Sendable>(
        _ mode: AccessMode, _ body: @escaping @Sendable (any StorageSession) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) {
        guard !closed.load(ordering: .relaxed) else {
            completion(.failure(StorageError.unavailable("storage closed")))
            return
        }
        // The engine validates every input before its first mutation, so a throwing body has changed nothing
        // (the memory store keeps no undo log).
        let result: Result<T, any Error> = store.withLock { store in Result { try body(store) } }
        completion(result)
    }

    public func health() -> StorageHealth {
        closed.load(ordering: .relaxed) ? .init(isAvailable: false, detail: "closed") : .available
    }

    public func close() async { closed.store(true, ordering: .relaxed) }
}

/// The in-memory structures behind ``MemoryBackend``. Not thread-safe: always used under the backend's mutex.
final class MemoryStore: StorageSession {
    final class UnitBox {
        var record: UnitRecord
        var bucket: UnitBucket
        var attempts: [AttemptRecord] = []
        var deleted = false

        init(record: UnitRecord, bucket: UnitBucket) {
            self.record = record
            self.bucket = bucket
        }
    }

    struct KeyEntry: Comparable {
        let key: [UInt8]
        let box: UnitBox
        static func == (a: KeyEntry, b: KeyEntry) -> Bool { a.key == b.key }
        static func < (a: KeyEntry, b: KeyEntry) -> Bool { a.key.lexicographicallyPrecedes(b.key) }
    }

    /// Priority descending, then key ascending.
    struct PriorityEntry: Comparable {
        let priority: Double
        let key: [UInt8]
        let box: UnitBox
        static func == (a: PriorityEntry, b: PriorityEntry) -> Bool { a.priority == b.priority && a.key == b.key }
        static func < (a: PriorityEntry, b: PriorityEntry) -> Bool {
            if a.priority != b.priority { return a.priority > b.priority }
            return a.key.lexicographicallyPrecedes(b.key)
        }
    }

    /// Completion time ascending, then key ascending.
    struct CompletionEntry: Comparable {
        let time: Timestamp
        let key: [UInt8]
        let box: UnitBox
        static func == (a: CompletionEntry, b: CompletionEntry) -> Bool { a.time == b.time && a.key == b.key }
        static func < (a: CompletionEntry, b: CompletionEntry) -> Bool {
            if a.time != b.time { return a.time < b.time }
            return a.key.lexicographicallyPrecedes(b.key)
        }
    }

    final class SpecState {
        var record: SpecRecord
        var byKey = SortedChunks<KeyEntry>()
        var byPriority = [SortedChunks<PriorityEntry>](repeating: SortedChunks(), count: UnitBucket.allCases.count)
        var finishedByTime = SortedChunks<CompletionEntry>()
        var failedByTime = SortedChunks<CompletionEntry>()
        var counts = UnitCounts()

        init(record: SpecRecord) { self.record = record }

        func box(for key: Identifier) -> UnitBox? {
            var found: UnitBox?
            byKey.forEach(from: { $0.key.lexicographicallyPrecedes(key.octets) }) { entry in
                if entry.key == key.octets { found = entry.box }
                return false
            }
            return found
        }
    }

    struct DeadlineEntry: Comparable {
        let time: Timestamp
        let sequence: Int64
        let box: UnitBox
        static func == (a: DeadlineEntry, b: DeadlineEntry) -> Bool { a.time == b.time && a.sequence == b.sequence }
        static func < (a: DeadlineEntry, b: DeadlineEntry) -> Bool {
            a.time != b.time ? a.time < b.time : a.sequence < b.sequence
        }
    }

    struct LockEntry: Comparable {
        let record: LockRecord
        static func == (a: LockEntry, b: LockEntry) -> Bool { a.record.pathKey == b.record.pathKey }
        static func < (a: LockEntry, b: LockEntry) -> Bool {
            a.record.pathKey.lexicographicallyPrecedes(b.record.pathKey)
        }
    }

    struct LockDeadline: Comparable {
        let time: Timestamp
        let namespaceID: Int64
        let pathKey: [UInt8]
        static func == (a: LockDeadline, b: LockDeadline) -> Bool {
            a.time == b.time && a.namespaceID == b.namespaceID && a.pathKey == b.pathKey
        }
        static func < (a: LockDeadline, b: LockDeadline) -> Bool {
            if a.time != b.time { return a.time < b.time }
            if a.namespaceID != b.namespaceID { return a.namespaceID < b.namespaceID }
            return a.pathKey.lexicographicallyPrecedes(b.pathKey)
        }
    }

    private var namespacesByName: [Identifier: NamespaceRecord] = [:]
    private var specsByID: [Int64: SpecState] = [:]
    private var specIDsByName: [Int64: [Identifier: Int64]] = [:]
    private var workers: [Int64: [Identifier: WorkerRecord]] = [:]
    private var locks: [Int64: SortedChunks<LockEntry>] = [:]
    private var attemptsByID: [Int64: UnitBox] = [:]
    private var attemptIDsByWorker: [Int64: [Identifier: [Int64]]] = [:]

    private var leaseQueue = MinHeap<DeadlineEntry>()
    private var delayQueue = MinHeap<DeadlineEntry>()
    private var lockQueue = MinHeap<LockDeadline>()

    private var nextNamespaceID: Int64 = 1
    private var nextSpecID: Int64 = 1
    private var nextUnitID: Int64 = 1
    private var nextAttemptID: Int64 = 1
    private var queueSequence: Int64 = 0
    /// The instant of the last materialization: buckets of inserted and updated units are judged at it.
    private var materializedAt: Timestamp = .min

    init() {}

    // MARK: - Time

    func materialize(now: Timestamp) throws -> [Int64: Int] {
        materializedAt = max(materializedAt, now)
        var expired: [Int64: Int] = [:]
        while let top = leaseQueue.top, top.time < now {
            leaseQueue.pop()
            let box = top.box
            guard !box.deleted, box.record.state == .pending, box.record.leaseDeadline == top.time else { continue }
            expireLease(box)
            expired[box.record.specID, default: 0] += 1
        }
        while let top = delayQueue.top, top.time <= now {
            delayQueue.pop()
            let box = top.box
            guard !box.deleted, box.bucket == .delayed, box.record.notBefore == top.time else { continue }
            guard let spec = specsByID[box.record.specID] else { continue }
            move(box, in: spec, to: .ready)
        }
        while let top = lockQueue.top, top.time < now {
            lockQueue.pop()
            guard var chunks = locks[top.namespaceID] else { continue }
            let probe = LockEntry(
                record: LockRecord(
                    namespaceID: top.namespaceID, pathKey: top.pathKey, path: .null, owner: Identifier(text: ""),
                    deadline: 0))
            var current: LockRecord?
            chunks.forEach(from: { $0 < probe }) { entry in
                if entry.record.pathKey == top.pathKey { current = entry.record }
                return false
            }
            if let current, current.deadline == top.time {
                chunks.remove(probe)
                locks[top.namespaceID] = chunks
            }
        }
        return expired
    }

    /// A lease passed: the pending attempt becomes `expired` and the unit AVAILABLE (semantics.md §6.4).
    private func expireLease(_ box: UnitBox) {
        guard let spec = specsByID[box.record.specID], let deadline = box.record.leaseDeadline else { return }
        if let last = box.attempts.indices.last, box.attempts[last].status == .pending {
            box.attempts[last].status = .expired
            box.attempts[last].endTime = max(box.attempts[last].startTime, deadline)
        }
        var record = box.record
        record.state = .available
        record.leaseDeadline = nil
        apply(record, to: box, in: spec)
    }

    // MARK: - Namespaces

    func namespace(named name: Identifier) throws -> NamespaceRecord? { namespacesByName[name] }

    func createNamespace(named name: Identifier) throws -> NamespaceRecord {
        if let existing = namespacesByName[name] { return existing }
        let record = NamespaceRecord(id: nextNamespaceID, name: name)
        nextNamespaceID += 1
        namespacesByName[name] = record
        return record
    }

    func allNamespaces() throws -> [NamespaceRecord] { namespacesByName.values.sorted { $0.name < $1.name } }

    func deleteNamespace(_ namespace: NamespaceRecord, keepRecord: Bool) throws {
        for spec in try specs(namespace: namespace.id) { try deleteSpec(spec) }
        workers[namespace.id] = nil
        locks[namespace.id] = nil
        attemptIDsByWorker[namespace.id] = nil
        if !keepRecord { namespacesByName[namespace.name] = nil }
    }

    // MARK: - Specs

    func specs(namespace: Int64) throws -> [SpecRecord] {
        guard let names = specIDsByName[namespace] else { return [] }
        return names.values.compactMap { specsByID[$0]?.record }.sorted { $0.name < $1.name }
    }

    func spec(namespace: Int64, named name: Identifier) throws -> SpecRecord? {
        guard let id = specIDsByName[namespace]?[name] else { return nil }
        return specsByID[id]?.record
    }

    func spec(id: Int64) throws -> SpecRecord? { specsByID[id]?.record }

    func insertSpec(_ spec: SpecRecord) throws -> SpecRecord {
        var record = spec
        record.id = nextSpecID
        nextSpecID += 1
        specsByID[record.id] = SpecState(record: record)
        specIDsByName[record.namespaceID, default: [:]][record.name] = record.id
        return record
    }

    func updateSpec(_ spec: SpecRecord) throws {
        guard let state = specsByID[spec.id] else { throw StorageError.corrupt("no spec \(spec.id)") }
        state.record = spec
        // The stored name keeps the kind of the latest data's `name`; the dictionary key compares octets only.
        specIDsByName[spec.namespaceID]?[spec.name] = spec.id
    }

    func deleteSpec(_ spec: SpecRecord) throws {
        guard let state = specsByID.removeValue(forKey: spec.id) else { return }
        specIDsByName[spec.namespaceID]?[spec.name] = nil
        state.byKey.forEach { entry in
            forget(entry.box)
            return true
        }
    }

    /// Drops a deleted unit's attempts from the indexes and marks it for the deadline queues.
    private func forget(_ box: UnitBox) {
        box.deleted = true
        for attempt in box.attempts { attemptsByID[attempt.id] = nil }
    }

    // MARK: - Units

    func unit(spec: Int64, key: Identifier) throws -> UnitRecord? {
        specsByID[spec]?.box(for: key)?.record
    }

    func unit(of attempt: AttemptRecord) throws -> UnitRecord? {
        guard let box = attemptsByID[attempt.id], !box.deleted else { return nil }
        return box.record
    }

    func insertUnit(_ unit: UnitRecord) throws -> UnitRecord {
        guard let spec = specsByID[unit.specID] else { throw StorageError.corrupt("no spec \(unit.specID)") }
        var record = unit
        record.id = nextUnitID
        nextUnitID += 1
        let bucket = record.bucket(at: materializedAt)
        let box = UnitBox(record: record, bucket: bucket)
        spec.byKey.insert(KeyEntry(key: record.key.octets, box: box))
        index(box, in: spec)
        return record
    }

    func updateUnit(_ unit: UnitRecord) throws {
        guard let spec = specsByID[unit.specID], let box = spec.box(for: unit.key) else {
            throw StorageError.corrupt("no unit \(unit.key) in spec \(unit.specID)")
        }
        apply(unit, to: box, in: spec)
    }

    /// Replaces a box's record and re-files it under its new bucket and sort keys. A PENDING record whose
    /// deadline has already passed (a renewal with a non-positive lease) expires at once.
    private func apply(_ newRecord: UnitRecord, to box: UnitBox, in spec: SpecState) {
        var record = newRecord
        if record.state == .pending, let deadline = record.leaseDeadline, deadline < materializedAt {
            if let last = box.attempts.indices.last, box.attempts[last].status == .pending {
                box.attempts[last].status = .expired
                box.attempts[last].endTime = max(box.attempts[last].startTime, deadline)
            }
            record.state = .available
            record.leaseDeadline = nil
        }
        let newBucket = record.bucket(at: materializedAt)
        let old = box.record
        let reindex =
            newBucket != box.bucket || old.priority != record.priority || old.completionTime != record.completionTime
            || old.notBefore != record.notBefore || old.leaseDeadline != record.leaseDeadline
        if reindex { unindex(box, in: spec) }
        box.record = record
        box.bucket = newBucket
        if reindex { index(box, in: spec) }
    }

    private func move(_ box: UnitBox, in spec: SpecState, to bucket: UnitBucket) {
        unindex(box, in: spec)
        box.bucket = bucket
        index(box, in: spec)
    }

    private func index(_ box: UnitBox, in spec: SpecState) {
        let record = box.record
        spec.byPriority[Int(box.bucket.rawValue)].insert(
            PriorityEntry(priority: record.priority, key: record.key.octets, box: box))
        spec.counts[box.bucket] += 1
        switch box.bucket {
        case .pending:
            queueSequence += 1
            leaseQueue.push(DeadlineEntry(time: record.leaseDeadline ?? .max, sequence: queueSequence, box: box))
        case .delayed:
            queueSequence += 1
            delayQueue.push(DeadlineEntry(time: record.notBefore ?? .min, sequence: queueSequence, box: box))
        case .finished:
            spec.finishedByTime.insert(
                CompletionEntry(time: record.completionTime ?? 0, key: record.key.octets, box: box))
        case .failed:
            spec.failedByTime.insert(
                CompletionEntry(time: record.completionTime ?? 0, key: record.key.octets, box: box))
        case .ready:
            break
        }
    }

    private func unindex(_ box: UnitBox, in spec: SpecState) {
        let record = box.record
        spec.byPriority[Int(box.bucket.rawValue)].remove(
            PriorityEntry(priority: record.priority, key: record.key.octets, box: box))
        spec.counts[box.bucket] -= 1
        switch box.bucket {
        case .finished:
            spec.finishedByTime.remove(
                CompletionEntry(time: record.completionTime ?? 0, key: record.key.octets, box: box))
        case .failed:
            spec.failedByTime.remove(
                CompletionEntry(time: record.completionTime ?? 0, key: record.key.octets, box: box))
        default:
            // Deadline queue entries are invalidated lazily: the popped entry no longer matches the unit.
            break
        }
    }

    func deleteUnit(_ unit: UnitRecord) throws {
        guard let spec = specsByID[unit.specID], let box = spec.box(for: unit.key) else { return }
        unindex(box, in: spec)
        spec.byKey.remove(KeyEntry(key: unit.key.octets, box: box))
        forget(box)
    }

    func unitCounts(spec: Int64) throws -> UnitCounts { specsByID[spec]?.counts ?? UnitCounts() }

    func readyUnits(spec: Int64, limit: Int) throws -> [UnitRecord] {
        guard let state = specsByID[spec] else { return [] }
        return state.byPriority[Int(UnitBucket.ready.rawValue)].prefix(limit).map(\.box.record)
    }

    func topReadyPriority(spec: Int64) throws -> Double? {
        specsByID[spec]?.byPriority[Int(UnitBucket.ready.rawValue)].first?.priority
    }

    func units(
        spec: Int64, buckets: Set<UnitBucket>?, startKey: Identifier?, order: UnitOrder, limit: Int
    ) throws
        -> [UnitRecord]
    {
        guard let state = specsByID[spec], limit > 0 else { return [] }
        var result: [UnitRecord] = []
        switch order {
        case .key:
            state.byKey.forEach(from: { entry in
                startKey.map { entry.key.lexicographicallyPrecedes($0.octets) } ?? false
            }) {
                entry in
                if buckets == nil || buckets!.contains(entry.box.bucket) { result.append(entry.box.record) }
                return result.count < limit
            }
        case .priority:
            // Merge the per-bucket priority indexes.
            let selected = (buckets ?? Set(UnitBucket.allCases)).sorted()
            var iterators: [[PriorityEntry]] = []
            for bucket in selected {
                var entries: [PriorityEntry] = []
                state.byPriority[Int(bucket.rawValue)].forEach { entry in
                    if let startKey, entry.key.lexicographicallyPrecedes(startKey.octets) { return true }
                    entries.append(entry)
                    return entries.count < limit
                }
                iterators.append(entries)
            }
            var merged = iterators.flatMap { $0 }
            merged.sort()
            result = merged.prefix(limit).map(\.box.record)
        }
        return result
    }

    func completedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        guard let state = specsByID[spec] else { return [] }
        switch bucket {
        case .finished: return state.finishedByTime.prefix(limit).map(\.box.record)
        case .failed: return state.failedByTime.prefix(limit).map(\.box.record)
        default: return []
        }
    }

    func deleteUnits(spec: Int64, buckets: Set<UnitBucket>?) throws -> Int {
        guard let state = specsByID[spec] else { return 0 }
        var doomed: [UnitRecord] = []
        if let buckets {
            for bucket in buckets {
                state.byPriority[Int(bucket.rawValue)].forEach { entry in
                    doomed.append(entry.box.record)
                    return true
                }
            }
        } else {
            state.byKey.forEach { entry in
                doomed.append(entry.box.record)
                return true
            }
        }
        for unit in doomed { try deleteUnit(unit) }
        return doomed.count
    }

    // MARK: - Attempts

    func attempt(id: Int64) throws -> AttemptRecord? {
        attemptsByID[id]?.attempts.first { $0.id == id }
    }

    func attempts(of unit: UnitRecord) throws -> [AttemptRecord] {
        specsByID[unit.specID]?.box(for: unit.key)?.attempts ?? []
    }

    func insertAttempt(_ attempt: AttemptRecord, for unit: UnitRecord) throws -> AttemptRecord {
        guard let box = specsByID[unit.specID]?.box(for: unit.key) else {
            throw StorageError.corrupt("no unit \(unit.key) in spec \(unit.specID)")
        }
        var record = attempt
        record.id = nextAttemptID
        nextAttemptID += 1
        box.attempts.append(record)
        attemptsByID[record.id] = box
        attemptIDsByWorker[record.namespaceID, default: [:]][record.worker, default: []].append(record.id)
        return record
    }

    func updateAttempt(_ attempt: AttemptRecord) throws {
        guard let box = attemptsByID[attempt.id], let index = box.attempts.lastIndex(where: { $0.id == attempt.id })
        else {
            throw StorageError.corrupt("no attempt \(attempt.id)")
        }
        box.attempts[index] = attempt
    }

    func attempts(namespace: Int64, worker: Identifier, statuses: Set<AttemptStatus>?) throws -> [AttemptRecord] {
        guard var ids = attemptIDsByWorker[namespace]?[worker] else { return [] }
        var result: [AttemptRecord] = []
        var live: [Int64] = []
        for id in ids {
            guard let attempt = attemptsByID[id]?.attempts.first(where: { $0.id == id }) else { continue }
            live.append(id)
            if statuses == nil || statuses!.contains(attempt.status) { result.append(attempt) }
        }
        if live.count < ids.count {
            ids = live
            attemptIDsByWorker[namespace]?[worker] = ids
        }
        return result
    }

    // MARK: - Workers

    func worker(namespace: Int64, id: Identifier) throws -> WorkerRecord? { workers[namespace]?[id] }

    func saveWorker(_ worker: WorkerRecord) throws {
        workers[worker.namespaceID, default: [:]][worker.id] = worker
    }

    func deleteWorker(namespace: Int64, id: Identifier) throws { workers[namespace]?[id] = nil }

    func workers(namespace: Int64) throws -> [WorkerRecord] {
        (workers[namespace]?.values.map { $0 } ?? []).sorted { $0.id < $1.id }
    }

    func purgeWorkers(lastHeartbeatBefore cutoff: Timestamp, now: Timestamp) throws -> Int {
        var purged = 0
        for (namespace, records) in workers {
            for (id, record) in records where record.lastHeartbeat < cutoff && !record.isLive(at: now) {
                workers[namespace]?[id] = nil
                purged += 1
            }
        }
        return purged
    }

    // MARK: - Locks

    func conflictingLocks(namespace: Int64, pathKey: [UInt8]) throws -> [LockRecord] {
        guard let chunks = locks[namespace] else { return [] }
        var result: [LockRecord] = []
        // Ancestors (and the path itself): every prefix ending at a label terminator.
        for end in LockPath.labelBoundaries(of: pathKey) {
            let prefix = Array(pathKey[..<end])
            chunks.forEach(from: { $0.record.pathKey.lexicographicallyPrecedes(prefix) }) { entry in
                if entry.record.pathKey == prefix { result.append(entry.record) }
                return false
            }
        }
        // Descendants: keys that extend the path.
        chunks.forEach(from: { $0.record.pathKey.lexicographicallyPrecedes(pathKey) }) { entry in
            guard entry.record.pathKey.starts(with: pathKey) else { return false }
            if entry.record.pathKey != pathKey { result.append(entry.record) }
            return true
        }
        return result
    }

    func lock(namespace: Int64, pathKey: [UInt8]) throws -> LockRecord? {
        var found: LockRecord?
        locks[namespace]?.forEach(from: { $0.record.pathKey.lexicographicallyPrecedes(pathKey) }) { entry in
            if entry.record.pathKey == pathKey { found = entry.record }
            return false
        }
        return found
    }

    func saveLock(_ lock: LockRecord) throws {
        var chunks = locks[lock.namespaceID] ?? SortedChunks()
        chunks.remove(LockEntry(record: lock))
        chunks.insert(LockEntry(record: lock))
        locks[lock.namespaceID] = chunks
        lockQueue.push(LockDeadline(time: lock.deadline, namespaceID: lock.namespaceID, pathKey: lock.pathKey))
    }

    func deleteLock(namespace: Int64, pathKey: [UInt8]) throws {
        guard var chunks = locks[namespace] else { return }
        chunks.remove(
            LockEntry(
                record: LockRecord(
                    namespaceID: namespace, pathKey: pathKey, path: .null, owner: Identifier(text: ""), deadline: 0)))
        locks[namespace] = chunks
    }

    func locks(namespace: Int64, pathKeyPrefix: [UInt8]?) throws -> [LockRecord] {
        var result: [LockRecord] = []
        let prefix = pathKeyPrefix ?? []
        locks[namespace]?.forEach(from: { $0.record.pathKey.lexicographicallyPrecedes(prefix) }) { entry in
            guard entry.record.pathKey.starts(with: prefix) else { return false }
            result.append(entry.record)
            return true
        }
        return result
    }
}
