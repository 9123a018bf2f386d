import CBOR
import HeapModule
import Locking
import Synchronization

/// The `memory` backend (storage.md §2): every operation of every namespace runs under one mutex, against
/// in-process structures. Nothing survives the process.
public final class MemoryBackend: StorageBackend {
    public let name = "memory"
    /// Only ever touched under `lock`.
    private nonisolated(unsafe) let store = MemoryStore()
    private let lock = Locked(())
    private let closed = Atomic<Bool>(false)

    public init() {}

    public func execute(
        _ mode: AccessMode, _ body: @escaping @Sendable (any StorageSession) throws -> Void,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        guard !closed.load(ordering: .relaxed) else {
            completion(StorageError.unavailable("storage closed"))
            return
        }
        // The engine validates every input before its first mutation, so a throwing body has changed nothing
        // (the memory store keeps no undo log).
        let error: (any Error)? = lock.withLock {
            do {
                try body(store)
                return nil
            } catch {
                return error
            }
        }
        completion(error)
    }

    public func health() -> StorageHealth {
        closed.load(ordering: .relaxed) ? .init(isAvailable: false, detail: "closed") : .available
    }

    public func close() async { closed.store(true, ordering: .relaxed) }

    /// The live store, read under the lock: not isolated (``StorageSnapshot/isIsolated``), so a long reader
    /// reads everything in one call, which holds writers only for as long as copying records out takes.
    public func openSnapshot(completion: @escaping @Sendable (Result<any StorageSnapshot, any Error>) -> Void) {
        completion(.success(MemorySnapshot(backend: self)))
    }

    private final class MemorySnapshot: StorageSnapshot {
        let backend: MemoryBackend
        let isIsolated = false
        let takenAt: Timestamp? = nil

        init(backend: MemoryBackend) { self.backend = backend }

        func read(
            _ body: @escaping @Sendable (any StorageSession) throws -> Void,
            completion: @escaping @Sendable ((any Error)?) -> Void
        ) {
            backend.execute(.read, body, completion: completion)
        }

        func close() {}
    }
}

/// The in-memory structures behind ``MemoryBackend``. Not thread-safe: always used under the backend's mutex.
final class MemoryStore: StorageSession {
    /// One unit, stored compactly: short keys and data inline, absent times as `Int64.min`, one time field
    /// (the lease deadline while PENDING, the completion time once FINISHED or FAILED).
    final class UnitBox {
        var key: SmallBytes
        var data: SmallBytes
        var priority: Double
        var notBefore: Int64
        var time: Int64
        var latestAttemptID: Int64
        var id: Int64
        var attemptCount: Int32
        var retryCountBase: Int32
        var state: UnitState
        var bucket: UnitBucket
        var keyIsText: Bool
        var deleted = false
        var attempts: [AttemptRecord] = []
        /// ``UnitRecord/originalData``: nil for nearly every unit, so it costs a word.
        var originalData: StoredValue?

        static let none = Int64.min

        init(_ record: UnitRecord, bucket: UnitBucket) {
            key = SmallBytes(record.key.octets)
            keyIsText = record.key.isText
            data = SmallBytes(record.data.bytes)
            priority = record.priority
            notBefore = record.notBefore ?? Self.none
            time = Self.none
            latestAttemptID = 0
            id = record.id
            attemptCount = 0
            retryCountBase = 0
            state = record.state
            self.bucket = bucket
            assign(record)
        }

        /// Copies the mutable fields of `record` into the box (the key never changes).
        func assign(_ record: UnitRecord) {
            if record.data.bytes.count != data.count || !data.equals(record.data.bytes) {
                data = SmallBytes(record.data.bytes)
            }
            priority = record.priority
            notBefore = record.notBefore ?? Self.none
            switch record.state {
            case .pending: time = record.leaseDeadline ?? Self.none
            case .finished, .failed: time = record.completionTime ?? Self.none
            case .available: time = Self.none
            }
            state = record.state
            latestAttemptID = record.latestAttemptID ?? 0
            attemptCount = Int32(clamping: record.attemptCount)
            retryCountBase = Int32(clamping: record.retryCountBase)
            originalData = record.originalData
        }

        var leaseDeadline: Int64? { state == .pending && time != Self.none ? time : nil }
        var completionTime: Int64? { (state == .finished || state == .failed) && time != Self.none ? time : nil }

        func record(specID: Int64) -> UnitRecord {
            var record = UnitRecord(
                id: id, specID: specID, key: Identifier(octets: key.array, isText: keyIsText),
                data: StoredValue(uncheckedCanonicalBytes: data.array), priority: priority,
                notBefore: notBefore == Self.none ? nil : notBefore, state: state, leaseDeadline: leaseDeadline,
                completionTime: completionTime, latestAttemptID: latestAttemptID == 0 ? nil : latestAttemptID,
                attemptCount: Int64(attemptCount), retryCountBase: Int64(retryCountBase))
            record.originalData = originalData
            return record
        }
    }

    struct KeyEntry: Comparable {
        let box: UnitBox
        static func == (a: KeyEntry, b: KeyEntry) -> Bool { a.box === b.box }
        static func < (a: KeyEntry, b: KeyEntry) -> Bool { a.box.key.precedes(b.box.key) }
    }

    /// The ready order (``UnitOrder/priority``).
    struct PriorityEntry: Comparable {
        let priority: Double
        let box: UnitBox
        static func == (a: PriorityEntry, b: PriorityEntry) -> Bool { a.priority == b.priority && a.box === b.box }
        static func < (a: PriorityEntry, b: PriorityEntry) -> Bool {
            UnitOrder.readyPrecedes(a.priority, b.priority) { a.box.key.precedes(b.box.key) }
        }
    }

    /// Completion time ascending, then key ascending.
    struct CompletionEntry: Comparable {
        let time: Timestamp
        let box: UnitBox
        static func == (a: CompletionEntry, b: CompletionEntry) -> Bool { a.time == b.time && a.box === b.box }
        static func < (a: CompletionEntry, b: CompletionEntry) -> Bool {
            if a.time != b.time { return a.time < b.time }
            return a.box.key.precedes(b.box.key)
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

        /// The box most recently looked up: an operation typically reads a unit and then updates it and its
        /// attempts, so this turns repeated binary searches into one comparison.
        var lastBox: UnitBox?

        func box(for key: Identifier) -> UnitBox? {
            let probe = SmallBytes(key.octets)
            if let cached = lastBox, !cached.deleted, cached.key == probe { return cached }
            var found: UnitBox?
            byKey.forEach(from: { $0.box.key.precedes(probe) }) { entry in
                if entry.box.key == probe { found = entry.box }
                return false
            }
            if found != nil { lastBox = found }
            return found
        }
    }

    struct DeadlineEntry: Comparable {
        let time: Timestamp
        let sequence: Int64
        let specID: Int64
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
            octetsPrecede(a.record.pathKey, b.record.pathKey)
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
            return octetsPrecede(a.pathKey, b.pathKey)
        }
    }

    private var namespacesByName: [Identifier: NamespaceRecord] = [:]
    private var specsByID: [Int64: SpecState] = [:]
    private var specIDsByName: [Int64: [Identifier: Int64]] = [:]
    /// Each namespace's specs in name order, rebuilt after a change (get_work reads it on every call).
    private var sortedSpecs: [Int64: [SpecRecord]] = [:]
    private var generations: [Int64: UInt64] = [:]
    private var workers: [Int64: [Identifier: WorkerRecord]] = [:]
    private var locks: [Int64: SortedChunks<LockEntry>] = [:]
    private var attemptsByID: [Int64: UnitBox] = [:]
    private var attemptIDsByWorker: [Int64: [Identifier: [Int64]]] = [:]

    private var leaseQueue = Heap<DeadlineEntry>()
    private var delayQueue = Heap<DeadlineEntry>()
    private var lockQueue = Heap<LockDeadline>()

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
        while let top = leaseQueue.min, Expiry.leaseIsDue(deadline: top.time, at: now) {
            leaseQueue.removeMin()
            let box = top.box
            guard !box.deleted, box.state == .pending, box.time == top.time, let spec = specsByID[top.specID] else {
                continue
            }
            expireLease(box, in: spec)
            expired[top.specID, default: 0] += 1
        }
        while let top = delayQueue.min, Expiry.delayIsDue(notBefore: top.time, at: now) {
            delayQueue.removeMin()
            let box = top.box
            guard !box.deleted, box.bucket == .delayed, box.notBefore == top.time else { continue }
            guard let spec = specsByID[top.specID] else { continue }
            move(box, in: spec, to: .ready)
        }
        while let top = lockQueue.min, Expiry.lockHasLapsed(deadline: top.time, at: now) {
            lockQueue.removeMin()
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

    /// A lease passed (``Expiry``).
    private func expireLease(_ box: UnitBox, in spec: SpecState) {
        var record = box.record(specID: spec.record.id)
        var attempt = box.attempts.last
        if Expiry.expire(&record, attempt: &attempt), let attempt { box.attempts[box.attempts.count - 1] = attempt }
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
        sortedSpecs[namespace.id] = nil
        attemptIDsByWorker[namespace.id] = nil
        if !keepRecord { namespacesByName[namespace.name] = nil }
    }

    // MARK: - Specs

    func specGeneration(namespace: Int64) throws -> UInt64 { generations[namespace, default: 0] }

    func specs(namespace: Int64) throws -> [SpecRecord] {
        if let cached = sortedSpecs[namespace] { return cached }
        guard let names = specIDsByName[namespace] else { return [] }
        let sorted = names.values.compactMap { specsByID[$0]?.record }.sorted { $0.name < $1.name }
        sortedSpecs[namespace] = sorted
        return sorted
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
        sortedSpecs[record.namespaceID] = nil
        generations[record.namespaceID, default: 0] &+= 1
        return record
    }

    func updateSpec(_ spec: SpecRecord) throws {
        guard let state = specsByID[spec.id] else { throw StorageError.corrupt("no spec \(spec.id)") }
        state.record = spec
        // The stored name keeps the kind of the latest data's `name`; the dictionary key compares octets only.
        specIDsByName[spec.namespaceID]?[spec.name] = spec.id
        generations[spec.namespaceID, default: 0] &+= 1
        if var cached = sortedSpecs[spec.namespaceID], let index = cached.firstIndex(where: { $0.id == spec.id }) {
            sortedSpecs[spec.namespaceID] = nil
            cached[index] = spec
            sortedSpecs[spec.namespaceID] = cached
        }
    }

    func deleteSpec(_ spec: SpecRecord) throws {
        guard let state = specsByID.removeValue(forKey: spec.id) else { return }
        specIDsByName[spec.namespaceID]?[spec.name] = nil
        sortedSpecs[spec.namespaceID] = nil
        generations[spec.namespaceID, default: 0] &+= 1
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
        specsByID[spec]?.box(for: key)?.record(specID: spec)
    }

    func unit(of attempt: AttemptRecord) throws -> UnitRecord? {
        guard let box = attemptsByID[attempt.id], !box.deleted else { return nil }
        return box.record(specID: attempt.specID)
    }

    func insertUnit(_ unit: UnitRecord) throws -> UnitRecord {
        guard let spec = specsByID[unit.specID] else { throw StorageError.corrupt("no spec \(unit.specID)") }
        var record = unit
        record.id = nextUnitID
        nextUnitID += 1
        let bucket = record.bucket(at: materializedAt)
        let box = UnitBox(record, bucket: bucket)
        spec.byKey.insert(KeyEntry(box: box))
        index(box, in: spec)
        return record
    }

    func updateUnit(_ unit: UnitRecord) throws {
        guard let spec = specsByID[unit.specID], let box = spec.box(for: unit.key) else {
            throw StorageError.corrupt("no unit \(unit.key) in spec \(unit.specID)")
        }
        apply(unit, to: box, in: spec)
    }

    /// Replaces a box's record and re-files it under its new bucket and sort keys.
    private func apply(_ record: UnitRecord, to box: UnitBox, in spec: SpecState) {
        let newBucket = record.bucket(at: materializedAt)
        let reindex =
            newBucket != box.bucket || box.priority != record.priority || box.completionTime != record.completionTime
            || (box.notBefore == UnitBox.none ? nil : box.notBefore) != record.notBefore
            || box.leaseDeadline != record.leaseDeadline
        if reindex { unindex(box, in: spec) }
        box.assign(record)
        box.bucket = newBucket
        if reindex { index(box, in: spec) }
    }

    private func move(_ box: UnitBox, in spec: SpecState, to bucket: UnitBucket) {
        unindex(box, in: spec)
        box.bucket = bucket
        index(box, in: spec)
    }

    private func index(_ box: UnitBox, in spec: SpecState) {
        spec.byPriority[Int(box.bucket.rawValue)].insert(PriorityEntry(priority: box.priority, box: box))
        spec.counts[box.bucket] += 1
        switch box.bucket {
        case .pending:
            queueSequence += 1
            leaseQueue.insert(DeadlineEntry(time: box.time, sequence: queueSequence, specID: spec.record.id, box: box))
        case .delayed:
            queueSequence += 1
            delayQueue.insert(
                DeadlineEntry(time: box.notBefore, sequence: queueSequence, specID: spec.record.id, box: box))
        case .finished:
            spec.finishedByTime.insert(CompletionEntry(time: box.time, box: box))
        case .failed:
            spec.failedByTime.insert(CompletionEntry(time: box.time, box: box))
        case .ready:
            break
        }
    }

    private func unindex(_ box: UnitBox, in spec: SpecState) {
        spec.byPriority[Int(box.bucket.rawValue)].remove(PriorityEntry(priority: box.priority, box: box))
        spec.counts[box.bucket] -= 1
        switch box.bucket {
        case .finished:
            spec.finishedByTime.remove(CompletionEntry(time: box.time, box: box))
        case .failed:
            spec.failedByTime.remove(CompletionEntry(time: box.time, box: box))
        default:
            // Deadline queue entries are invalidated lazily: the popped entry no longer matches the unit.
            break
        }
    }

    func deleteUnit(_ unit: UnitRecord) throws {
        guard let spec = specsByID[unit.specID], let box = spec.box(for: unit.key) else { return }
        unindex(box, in: spec)
        spec.byKey.remove(KeyEntry(box: box))
        forget(box)
    }

    func unitCounts(spec: Int64) throws -> UnitCounts { specsByID[spec]?.counts ?? UnitCounts() }

    func readyUnits(spec: Int64, limit: Int) throws -> [UnitRecord] {
        guard let state = specsByID[spec] else { return [] }
        return state.byPriority[Int(UnitBucket.ready.rawValue)].prefix(limit).map { $0.box.record(specID: spec) }
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
            state.byKey.forEach(from: { entry in startKey.map { entry.box.key.precedes($0.octets) } ?? false }) {
                entry in
                if buckets == nil || buckets!.contains(entry.box.bucket) {
                    result.append(entry.box.record(specID: spec))
                }
                return result.count < limit
            }
        case .priority:
            // Merge the per-bucket priority indexes.
            let selected = (buckets ?? Set(UnitBucket.allCases)).sorted()
            var iterators: [[PriorityEntry]] = []
            for bucket in selected {
                var entries: [PriorityEntry] = []
                state.byPriority[Int(bucket.rawValue)].forEach { entry in
                    if let startKey, entry.box.key.precedes(startKey.octets) { return true }
                    entries.append(entry)
                    return entries.count < limit
                }
                iterators.append(entries)
            }
            var merged = iterators.flatMap { $0 }
            merged.sort()
            result = merged.prefix(limit).map { $0.box.record(specID: spec) }
        }
        return result
    }

    func completedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        guard let state = specsByID[spec] else { return [] }
        switch bucket {
        case .finished: return state.finishedByTime.prefix(limit).map { $0.box.record(specID: spec) }
        case .failed: return state.failedByTime.prefix(limit).map { $0.box.record(specID: spec) }
        default: return []
        }
    }

    func newestCompletedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        guard let state = specsByID[spec] else { return [] }
        switch bucket {
        case .finished: return state.finishedByTime.suffixReversed(limit).map { $0.box.record(specID: spec) }
        case .failed: return state.failedByTime.suffixReversed(limit).map { $0.box.record(specID: spec) }
        default: return []
        }
    }

    func deleteUnits(spec: Int64, buckets: Set<UnitBucket>?) throws -> Int {
        guard let state = specsByID[spec] else { return 0 }
        var doomed: [UnitRecord] = []
        if let buckets {
            for bucket in buckets {
                state.byPriority[Int(bucket.rawValue)].forEach { entry in
                    doomed.append(entry.box.record(specID: spec))
                    return true
                }
            }
        } else {
            state.byKey.forEach { entry in
                doomed.append(entry.box.record(specID: spec))
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

    func attemptIDWasIssued(_ id: Int64) throws -> Bool { id > 0 && id < nextAttemptID }

    func latestAttempt(of unit: UnitRecord) throws -> AttemptRecord? {
        guard let id = unit.latestAttemptID, let last = specsByID[unit.specID]?.box(for: unit.key)?.attempts.last,
            last.id == id
        else { return nil }
        return last
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
        // Fast path: the attempt being updated is almost always the latest attempt of the unit just looked up.
        if let box = specsByID[attempt.specID]?.lastBox, let last = box.attempts.indices.last,
            box.attempts[last].id == attempt.id
        {
            box.attempts[last] = attempt
            return
        }
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

    func deleteWorker(namespace: Int64, id: Identifier, ifLastHeartbeat: Timestamp?) throws -> Bool {
        if let ifLastHeartbeat, workers[namespace]?[id]?.lastHeartbeat != ifLastHeartbeat { return false }
        workers[namespace]?[id] = nil
        return true
    }

    func workers(namespace: Int64) throws -> [WorkerRecord] {
        (workers[namespace]?.values.map { $0 } ?? []).sorted { $0.id < $1.id }
    }

    // MARK: - Locks

    func conflictingLocks(namespace: Int64, pathKey: [UInt8]) throws -> [LockRecord] {
        guard let chunks = locks[namespace] else { return [] }
        var result: [LockRecord] = []
        // Ancestors (and the path itself): every prefix ending at a label terminator.
        for end in LockPath.labelBoundaries(of: pathKey) {
            let prefix = Array(pathKey[..<end])
            chunks.forEach(from: { octetsPrecede($0.record.pathKey, prefix) }) { entry in
                if entry.record.pathKey == prefix { result.append(entry.record) }
                return false
            }
        }
        // Descendants: keys that extend the path.
        chunks.forEach(from: { octetsPrecede($0.record.pathKey, pathKey) }) { entry in
            guard entry.record.pathKey.starts(with: pathKey) else { return false }
            if entry.record.pathKey != pathKey { result.append(entry.record) }
            return true
        }
        return result
    }

    func lock(namespace: Int64, pathKey: [UInt8]) throws -> LockRecord? {
        var found: LockRecord?
        locks[namespace]?.forEach(from: { octetsPrecede($0.record.pathKey, pathKey) }) { entry in
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
        lockQueue.insert(LockDeadline(time: lock.deadline, namespaceID: lock.namespaceID, pathKey: lock.pathKey))
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
        locks[namespace]?.forEach(from: { octetsPrecede($0.record.pathKey, prefix) }) { entry in
            guard entry.record.pathKey.starts(with: prefix) else { return false }
            result.append(entry.record)
            return true
        }
        return result
    }
}
