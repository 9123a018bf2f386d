import CBOR
import CoordinateEngine
import Foundation
import GRDB
import GRDBSQLite

/// What the SQLite store keeps in memory: small, per-spec state read on every request, rolled back together
/// with the transaction that changed it. Units, attempts, workers and locks live only in the database.
struct SQLiteCache {
    var namespacesByName: [Identifier: NamespaceRecord] = [:]
    var specs: [Int64: SpecRecord] = [:]
    var specIDsByName: [Int64: [Identifier: Int64]] = [:]
    var sortedSpecs: [Int64: [SpecRecord]] = [:]
    var generations: [Int64: UInt64] = [:]
    /// Live unit counts by spec, maintained on every unit change and written back to the spec rows before
    /// each commit (startup reads them instead of scanning units).
    var counts: [Int64: UnitCounts] = [:]
    var dirtyCounts: Set<Int64> = []
    /// Earliest instant at which a lease may expire, a delayed unit may become ready, a lock may expire; nil when
    /// unknown (queried from the deadline index).
    var nextLeaseExpiry: Int64?
    var nextDelayEnd: Int64?
    var nextLockExpiry: Int64?
}

/// The `sqlite` backend's implementation of the engine's storage boundary, over one connection. Used only on
/// the backend's writer queue, inside a transaction the backend manages.
final class SQLiteStore: StorageSession, @unchecked Sendable {
    // @unchecked Sendable: the backend keeps a reference to hand to its database queue, and every use of the
    // store happens on that one serial queue (GRDB's writer), never concurrently.
    let database: Database
    var cache = SQLiteCache()
    /// The instant of the current operation's materialization: buckets are judged at it.
    private var materializedAt: Int64 = .min
    /// Buckets of units read during the current operation, so updates know which counter to move.
    private var knownBuckets: [Int64: UnitBucket] = [:]
    /// Damaged stored data found since the engine last asked (``takeDamage()``).
    private var damage = DamageFindings()

    init(database: Database) {
        self.database = database
    }

    func statement(_ sql: String) throws -> SQLStatement { try SQLStatement(database, sql) }

    // MARK: - Loading

    /// Reads namespaces and specs (with their unit counters) into the cache; never touches units.
    func loadCache() throws {
        var fresh = SQLiteCache()
        let namespaces = try statement("SELECT id, name, name_kind FROM namespace")
        while try namespaces.next() {
            let record = NamespaceRecord(id: namespaces.int64(0), name: namespaces.identifier(1, kind: 2))
            fresh.namespacesByName[record.name] = record
        }
        let specs = try statement(
            """
            SELECT id, namespace_id, name, name_kind, data, overrides, next_continuous, archived_finished,
                   archived_failed, count_ready, count_delayed, count_pending, count_finished, count_failed
            FROM work_spec
            """)
        while try specs.next() {
            let data = damage.specData(specs.bytes(4), spec: specs.int64(0))
            let derived = (try? SpecDerivation.fields(of: data.decoded().mapValue ?? CBORMap())) ?? SpecFields()
            var record = SpecRecord(
                id: specs.int64(0), namespaceID: specs.int64(1), name: specs.identifier(2, kind: 3), data: data,
                derived: derived, nextContinuous: specs.optionalInt64(6), archivedFinished: specs.int64(7),
                archivedFailed: specs.int64(8))
            if let overrides = specs.optionalBytes(5) { SpecOverrides.decode(overrides, into: &record) }
            var counts = UnitCounts()
            counts.ready = specs.int(9)
            counts.delayed = specs.int(10)
            counts.pending = specs.int(11)
            counts.finished = specs.int(12)
            counts.failed = specs.int(13)
            fresh.specs[record.id] = record
            fresh.specIDsByName[record.namespaceID, default: [:]][record.name] = record.id
            fresh.counts[record.id] = counts
        }
        cache = fresh
    }

    // MARK: - Commit support

    /// Writes changed unit counters back to their spec rows (called just before each commit).
    func flushCounts() throws {
        guard !cache.dirtyCounts.isEmpty else { return }
        let update = try statement(
            """
            UPDATE work_spec SET count_ready = ?, count_delayed = ?, count_pending = ?, count_finished = ?,
                count_failed = ? WHERE id = ?
            """)
        for specID in cache.dirtyCounts {
            guard let counts = cache.counts[specID], cache.specs[specID] != nil else { continue }
            update.reset()
            try update.bind(1, counts.ready)
            try update.bind(2, counts.delayed)
            try update.bind(3, counts.pending)
            try update.bind(4, counts.finished)
            try update.bind(5, counts.failed)
            try update.bind(6, specID)
            try update.run()
        }
        cache.dirtyCounts.removeAll()
    }

    private func adjustCount(spec: Int64, _ bucket: UnitBucket, by delta: Int) {
        cache.counts[spec, default: UnitCounts()][bucket] += delta
        cache.dirtyCounts.insert(spec)
    }

    // MARK: - Time

    func materialize(now: Timestamp) throws -> [Int64: Int] {
        materializedAt = max(materializedAt, now)
        knownBuckets.removeAll(keepingCapacity: true)
        var expired: [Int64: Int] = [:]
        if cache.nextLeaseExpiry == nil || cache.nextLeaseExpiry! < now {
            let select = try statement(
                "SELECT id, spec_id, time, latest_attempt_id FROM work_unit WHERE bucket = \(UnitBucket.pending.sql) AND time < ? ORDER BY time LIMIT 512"
            )
            while true {
                select.reset()
                try select.bind(1, now)
                var rows: [(id: Int64, spec: Int64, deadline: Int64, attempt: Int64?)] = []
                while try select.next() {
                    rows.append((select.int64(0), select.int64(1), select.int64(2), select.optionalInt64(3)))
                }
                select.reset()
                for row in rows {
                    try expire(unit: row.id, spec: row.spec, deadline: row.deadline, attempt: row.attempt)
                    expired[row.spec, default: 0] += 1
                }
                if rows.count < 512 { break }
            }
            cache.nextLeaseExpiry = try minimumTime(bucket: .pending) ?? .max
        }
        if cache.nextDelayEnd == nil || cache.nextDelayEnd! <= now {
            let select = try statement(
                "SELECT id, spec_id FROM work_unit WHERE bucket = \(UnitBucket.delayed.sql) AND time <= ? LIMIT 512")
            let promote = try statement(
                "UPDATE work_unit SET bucket = \(UnitBucket.ready.sql), time = NULL WHERE id = ?")
            while true {
                select.reset()
                try select.bind(1, now)
                var rows: [(Int64, Int64)] = []
                while try select.next() { rows.append((select.int64(0), select.int64(1))) }
                select.reset()
                for (id, spec) in rows {
                    promote.reset()
                    try promote.bind(1, id)
                    try promote.run()
                    adjustCount(spec: spec, .delayed, by: -1)
                    adjustCount(spec: spec, .ready, by: 1)
                }
                if rows.count < 512 { break }
            }
            cache.nextDelayEnd = try minimumTime(bucket: .delayed) ?? .max
        }
        if cache.nextLockExpiry == nil || cache.nextLockExpiry! < now {
            let delete = try statement("DELETE FROM held_lock WHERE deadline < ?")
            try delete.bind(1, now)
            try delete.run()
            let next = try statement("SELECT min(deadline) FROM held_lock")
            cache.nextLockExpiry = try next.next() ? next.optionalInt64(0) ?? .max : .max
            next.reset()
        }
        return expired
    }

    private func minimumTime(bucket: UnitBucket) throws -> Int64? {
        let query = try statement("SELECT min(time) FROM work_unit WHERE bucket = ?")
        try query.bind(1, Int(bucket.rawValue))
        defer { query.reset() }
        return try query.next() ? query.optionalInt64(0) : nil
    }

    /// A lease passed: ``Expiry/expire(_:attempt:)`` in SQL.
    private func expire(unit id: Int64, spec: Int64, deadline: Int64, attempt: Int64?) throws {
        if let attempt {
            let update = try statement(
                "UPDATE attempt SET status = \(Expiry.attemptStatus.sql), end_time = max(start_time, ?) WHERE id = ? AND status = \(AttemptStatus.pending.sql)"
            )
            try update.bind(1, deadline)
            try update.bind(2, attempt)
            try update.run()
        }
        let update = try statement(
            "UPDATE work_unit SET state = \(Expiry.unitState.sql), bucket = \(UnitBucket.ready.sql), time = NULL WHERE id = ?"
        )
        try update.bind(1, id)
        try update.run()
        adjustCount(spec: spec, .pending, by: -1)
        adjustCount(spec: spec, .ready, by: 1)
    }

    // MARK: - Namespaces

    func namespace(named name: Identifier) throws -> NamespaceRecord? { cache.namespacesByName[name] }

    func createNamespace(named name: Identifier) throws -> NamespaceRecord {
        if let existing = cache.namespacesByName[name] { return existing }
        let insert = try statement("INSERT INTO namespace (name, name_kind) VALUES (?, ?)")
        try insert.bind(1, name.octets)
        try insert.bind(2, name.isText)
        try insert.run()
        let record = NamespaceRecord(id: sqlite3_last_insert_rowid(database.sqliteConnection!), name: name)
        cache.namespacesByName[name] = record
        return record
    }

    func allNamespaces() throws -> [NamespaceRecord] { cache.namespacesByName.values.sorted { $0.name < $1.name } }

    func deleteNamespace(_ namespace: NamespaceRecord, keepRecord: Bool) throws {
        for spec in try specs(namespace: namespace.id) { try deleteSpec(spec) }
        for table in ["worker", "held_lock"] {
            let delete = try statement("DELETE FROM \(table) WHERE namespace_id = ?")
            try delete.bind(1, namespace.id)
            try delete.run()
        }
        if !keepRecord {
            let delete = try statement("DELETE FROM namespace WHERE id = ?")
            try delete.bind(1, namespace.id)
            try delete.run()
            cache.namespacesByName[namespace.name] = nil
        }
        cache.sortedSpecs[namespace.id] = nil
    }

    // MARK: - Specs

    func specs(namespace: Int64) throws -> [SpecRecord] {
        if let cached = cache.sortedSpecs[namespace] { return cached }
        let sorted = (cache.specIDsByName[namespace]?.values.compactMap { cache.specs[$0] } ?? []).sorted {
            $0.name < $1.name
        }
        cache.sortedSpecs[namespace] = sorted
        return sorted
    }

    func specGeneration(namespace: Int64) throws -> UInt64 { cache.generations[namespace, default: 0] }

    func spec(namespace: Int64, named name: Identifier) throws -> SpecRecord? {
        cache.specIDsByName[namespace]?[name].flatMap { cache.specs[$0] }
    }

    func spec(id: Int64) throws -> SpecRecord? { cache.specs[id] }

    func insertSpec(_ spec: SpecRecord) throws -> SpecRecord {
        let insert = try statement(
            """
            INSERT INTO work_spec (namespace_id, name, name_kind, data, overrides, next_continuous, archived_finished,
                archived_failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        try insert.bind(1, spec.namespaceID)
        try insert.bind(2, spec.name.octets)
        try insert.bind(3, spec.name.isText)
        try insert.bind(4, spec.data.bytes)
        try insert.bind(5, SpecOverrides.encode(spec))
        try insert.bind(6, spec.nextContinuous)
        try insert.bind(7, spec.archivedFinished)
        try insert.bind(8, spec.archivedFailed)
        try insert.run()
        var record = spec
        record.id = sqlite3_last_insert_rowid(database.sqliteConnection!)
        cache.specs[record.id] = record
        cache.specIDsByName[record.namespaceID, default: [:]][record.name] = record.id
        cache.counts[record.id] = UnitCounts()
        cache.sortedSpecs[record.namespaceID] = nil
        cache.generations[record.namespaceID, default: 0] &+= 1
        return record
    }

    func updateSpec(_ spec: SpecRecord) throws {
        let update = try statement(
            """
            UPDATE work_spec SET name = ?, name_kind = ?, data = ?, overrides = ?, next_continuous = ?,
                archived_finished = ?, archived_failed = ? WHERE id = ?
            """)
        try update.bind(1, spec.name.octets)
        try update.bind(2, spec.name.isText)
        try update.bind(3, spec.data.bytes)
        try update.bind(4, SpecOverrides.encode(spec))
        try update.bind(5, spec.nextContinuous)
        try update.bind(6, spec.archivedFinished)
        try update.bind(7, spec.archivedFailed)
        try update.bind(8, spec.id)
        try update.run()
        cache.specs[spec.id] = spec
        cache.specIDsByName[spec.namespaceID]?[spec.name] = spec.id
        cache.sortedSpecs[spec.namespaceID] = nil
        cache.generations[spec.namespaceID, default: 0] &+= 1
    }

    func deleteSpec(_ spec: SpecRecord) throws {
        // Attempts go with their units (ON DELETE CASCADE), units with their spec.
        let delete = try statement("DELETE FROM work_spec WHERE id = ?")
        try delete.bind(1, spec.id)
        try delete.run()
        cache.specs[spec.id] = nil
        cache.specIDsByName[spec.namespaceID]?[spec.name] = nil
        cache.counts[spec.id] = nil
        cache.dirtyCounts.remove(spec.id)
        cache.sortedSpecs[spec.namespaceID] = nil
        cache.generations[spec.namespaceID, default: 0] &+= 1
    }

    // MARK: - Units

    func takeDamage() -> [StoredDamage] { damage.take() }

    /// Starts one read of a snapshot (``SQLiteSnapshot``), which never materializes: forgets the previous
    /// read's per-operation state.
    func beginSnapshotRead() {
        knownBuckets.removeAll(keepingCapacity: true)
    }

    private func readUnit(_ row: SQLStatement) -> UnitRecord {
        let state = UnitState(rawValue: UInt8(row.int64(7))) ?? .available
        let time = row.optionalInt64(9)
        let id = row.int64(0)
        let (data, damaged) = damage.unitData(row.bytes(4), checksum: row.optionalInt64(13), unit: id)
        var unit = UnitRecord(
            id: id, specID: row.int64(1), key: row.identifier(2, kind: 3),
            data: data, priority: row.double(5),
            notBefore: row.optionalInt64(6), state: state, leaseDeadline: state == .pending ? time : nil,
            completionTime: state == .finished || state == .failed ? time : nil,
            latestAttemptID: row.optionalInt64(10), attemptCount: row.int64(11), retryCountBase: row.int64(12))
        unit.originalData = damage.originalUnitData(row.optionalBytes(14), unit: id)
        unit.damage = damaged
        knownBuckets[unit.id] = UnitBucket(rawValue: UInt8(row.int64(8))) ?? .ready
        return unit
    }

    private func readUnits(_ row: SQLStatement) throws -> [UnitRecord] {
        var units: [UnitRecord] = []
        while try row.next() { units.append(readUnit(row)) }
        row.reset()
        return units
    }

    func unit(spec: Int64, key: Identifier) throws -> UnitRecord? {
        let query = try statement("SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = ? AND key = ?")
        try query.bind(1, spec)
        try query.bind(2, key.octets)
        return try readUnits(query).first
    }

    func unit(of attempt: AttemptRecord) throws -> UnitRecord? {
        let query = try statement("SELECT \(StoredColumns.unit) FROM work_unit WHERE id = ?")
        try query.bind(1, attempt.unitID)
        return try readUnits(query).first
    }

    /// The physical bucket and time column of a record at the current instant.
    private func placement(_ unit: UnitRecord) -> (bucket: UnitBucket, time: Int64?) {
        unit.placement(at: materializedAt)
    }

    private func noteDeadline(_ bucket: UnitBucket, _ time: Int64?) {
        guard let time else { return }
        switch bucket {
        case .pending: if let next = cache.nextLeaseExpiry, time < next { cache.nextLeaseExpiry = time }
        case .delayed: if let next = cache.nextDelayEnd, time < next { cache.nextDelayEnd = time }
        default: break
        }
    }

    func insertUnit(_ unit: UnitRecord) throws -> UnitRecord {
        let (bucket, time) = placement(unit)
        let insert = try statement(
            """
            INSERT INTO work_unit (\(StoredColumns.unitValues)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        let data = unit.data.bytes
        try insert.bind(1, unit.specID)
        try insert.bind(2, unit.key.octets)
        try insert.bind(3, unit.key.isText)
        try insert.bind(4, data)
        try insert.bind(5, unit.priority)
        try insert.bind(6, unit.notBefore)
        try insert.bind(7, Int64(unit.state.rawValue))
        try insert.bind(8, Int64(bucket.rawValue))
        try insert.bind(9, time)
        try insert.bind(10, unit.latestAttemptID)
        try insert.bind(11, unit.attemptCount)
        try insert.bind(12, unit.retryCountBase)
        try insert.bind(13, StoredData.checksumColumn(data))
        try insert.bind(14, unit.originalData?.bytes)
        try insert.run()
        var record = unit
        record.id = sqlite3_last_insert_rowid(database.sqliteConnection!)
        adjustCount(spec: unit.specID, bucket, by: 1)
        knownBuckets[record.id] = bucket
        noteDeadline(bucket, time)
        return record
    }

    private func currentBucket(of unit: UnitRecord) throws -> UnitBucket {
        if let known = knownBuckets[unit.id] { return known }
        let query = try statement("SELECT bucket FROM work_unit WHERE id = ?")
        try query.bind(1, unit.id)
        defer { query.reset() }
        guard try query.next() else { throw StorageError.corrupt("no unit \(unit.id)") }
        return UnitBucket(rawValue: UInt8(query.int64(0))) ?? .ready
    }

    func updateUnit(_ unit: UnitRecord) throws {
        let old = try currentBucket(of: unit)
        let (bucket, time) = placement(unit)
        let update = try statement(
            """
            UPDATE work_unit SET key_kind = ?, data = coalesce(?, data), priority = ?, not_before = ?, state = ?,
                bucket = ?, time = ?, latest_attempt_id = ?, attempt_count = ?, retry_count_base = ?,
                data_crc = CASE WHEN ?2 IS NULL THEN data_crc ELSE ? END, original_data = ? WHERE id = ?
            """)
        let data = StoredData.bytesToWrite(for: unit)
        try update.bind(1, unit.key.isText)
        try update.bind(2, data?.bytes)
        try update.bind(3, unit.priority)
        try update.bind(4, unit.notBefore)
        try update.bind(5, Int64(unit.state.rawValue))
        try update.bind(6, Int64(bucket.rawValue))
        try update.bind(7, time)
        try update.bind(8, unit.latestAttemptID)
        try update.bind(9, unit.attemptCount)
        try update.bind(10, unit.retryCountBase)
        try update.bind(11, data?.checksum)
        try update.bind(12, unit.originalData?.bytes)
        try update.bind(13, unit.id)
        try update.run()
        if old != bucket {
            adjustCount(spec: unit.specID, old, by: -1)
            adjustCount(spec: unit.specID, bucket, by: 1)
        }
        knownBuckets[unit.id] = bucket
        noteDeadline(bucket, time)
    }

    func deleteUnit(_ unit: UnitRecord) throws {
        let bucket = try currentBucket(of: unit)
        let delete = try statement("DELETE FROM work_unit WHERE id = ?")
        try delete.bind(1, unit.id)
        try delete.run()
        adjustCount(spec: unit.specID, bucket, by: -1)
        knownBuckets[unit.id] = nil
    }

    func unitCounts(spec: Int64) throws -> UnitCounts { cache.counts[spec] ?? UnitCounts() }

    func readyUnits(spec: Int64, limit: Int) throws -> [UnitRecord] {
        let query = try statement(
            "SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = ? AND bucket = \(UnitBucket.ready.sql) ORDER BY \(UnitOrder.priority.sql()) LIMIT ?"
        )
        try query.bind(1, spec)
        try query.bind(2, limit)
        return try readUnits(query)
    }

    func topReadyPriority(spec: Int64) throws -> Double? {
        let query = try statement(
            "SELECT priority FROM work_unit WHERE spec_id = ? AND bucket = \(UnitBucket.ready.sql) ORDER BY \(UnitOrder.priority.sql()) LIMIT 1"
        )
        try query.bind(1, spec)
        defer { query.reset() }
        return try query.next() ? query.double(0) : nil
    }

    func units(
        spec: Int64, buckets: Set<UnitBucket>?, startKey: Identifier?, order: UnitOrder, limit: Int
    ) throws
        -> [UnitRecord]
    {
        guard limit > 0 else { return [] }
        var sql = "SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = ?"
        if let buckets {
            guard !buckets.isEmpty else { return [] }
            sql += " AND bucket IN (\(UnitBucket.sqlList(buckets)))"
        }
        if startKey != nil { sql += " AND key >= ?" }
        sql += " ORDER BY \(order.sql())"
        sql += " LIMIT ?"
        let query = try statement(sql)
        var index: Int32 = 1
        try query.bind(index, spec)
        index += 1
        if let startKey {
            try query.bind(index, startKey.octets)
            index += 1
        }
        try query.bind(index, limit)
        return try readUnits(query)
    }

    func completedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        let query = try statement(
            "SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = ? AND bucket = ? ORDER BY time, key LIMIT ?")
        try query.bind(1, spec)
        try query.bind(2, Int64(bucket.rawValue))
        try query.bind(3, limit)
        return try readUnits(query)
    }

    func newestCompletedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        let query = try statement(
            "SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = ? AND bucket = ? ORDER BY time DESC, key DESC LIMIT ?"
        )
        try query.bind(1, spec)
        try query.bind(2, Int64(bucket.rawValue))
        try query.bind(3, limit)
        return try readUnits(query)
    }

    func deleteUnits(spec: Int64, buckets: Set<UnitBucket>?) throws -> Int {
        let selected = buckets ?? Set(UnitBucket.allCases)
        guard !selected.isEmpty else { return 0 }
        let list = UnitBucket.sqlList(selected)
        let delete = try statement("DELETE FROM work_unit WHERE spec_id = ? AND bucket IN (\(list))")
        try delete.bind(1, spec)
        try delete.run()
        var total = 0
        for bucket in selected {
            let count = cache.counts[spec]?[bucket] ?? 0
            total += count
            if count != 0 { adjustCount(spec: spec, bucket, by: -count) }
        }
        knownBuckets.removeAll()
        return total
    }

    // MARK: - Attempts

    private func readAttempt(_ row: SQLStatement) -> AttemptRecord {
        let id = row.int64(0)
        return AttemptRecord(
            id: id, unitID: row.int64(1), specID: row.int64(2), namespaceID: row.int64(3),
            worker: row.identifier(4, kind: 5), startTime: row.int64(6), expirationTime: row.int64(7),
            endTime: row.optionalInt64(8), status: AttemptStatus(rawValue: UInt8(row.int64(9))) ?? .pending,
            data: damage.attemptData(row.bytes(10), attempt: id))
    }

    private func readAttempts(_ row: SQLStatement) throws -> [AttemptRecord] {
        var attempts: [AttemptRecord] = []
        while try row.next() { attempts.append(readAttempt(row)) }
        row.reset()
        return attempts
    }

    func attempt(id: Int64) throws -> AttemptRecord? {
        let query = try statement("SELECT \(StoredColumns.attempt) FROM attempt WHERE id = ?")
        try query.bind(1, id)
        return try readAttempts(query).first
    }

    func attemptIDWasIssued(_ id: Int64) throws -> Bool {
        // AUTOINCREMENT keeps the highest id ever used in sqlite_sequence, deleted rows included.
        let query = try statement("SELECT seq FROM sqlite_sequence WHERE name = 'attempt'")
        guard try query.next() else { return false }
        return id > 0 && id <= query.int64(0)
    }

    func latestAttempt(of unit: UnitRecord) throws -> AttemptRecord? {
        guard let id = unit.latestAttemptID else { return nil }
        return try attempt(id: id)
    }

    func attempts(of unit: UnitRecord) throws -> [AttemptRecord] {
        let query = try statement("SELECT \(StoredColumns.attempt) FROM attempt WHERE unit_id = ? ORDER BY id")
        try query.bind(1, unit.id)
        return try readAttempts(query)
    }

    func insertAttempt(_ attempt: AttemptRecord, for unit: UnitRecord) throws -> AttemptRecord {
        let insert = try statement(
            """
            INSERT INTO attempt (\(StoredColumns.attemptValues)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        try insert.bind(1, unit.id)
        try insert.bind(2, attempt.specID)
        try insert.bind(3, attempt.namespaceID)
        try insert.bind(4, attempt.worker.octets)
        try insert.bind(5, attempt.worker.isText)
        try insert.bind(6, attempt.startTime)
        try insert.bind(7, attempt.expirationTime)
        try insert.bind(8, attempt.endTime)
        try insert.bind(9, Int64(attempt.status.rawValue))
        try insert.bind(10, attempt.data.bytes)
        try insert.run()
        var record = attempt
        record.id = sqlite3_last_insert_rowid(database.sqliteConnection!)
        record.unitID = unit.id
        return record
    }

    func updateAttempt(_ attempt: AttemptRecord) throws {
        let update = try statement(
            "UPDATE attempt SET expiration_time = ?, end_time = ?, status = ?, data = ? WHERE id = ?")
        try update.bind(1, attempt.expirationTime)
        try update.bind(2, attempt.endTime)
        try update.bind(3, Int64(attempt.status.rawValue))
        try update.bind(4, attempt.data.bytes)
        try update.bind(5, attempt.id)
        try update.run()
    }

    func attempts(namespace: Int64, worker: Identifier, statuses: Set<AttemptStatus>?) throws -> [AttemptRecord] {
        var sql = "SELECT \(StoredColumns.attempt) FROM attempt WHERE namespace_id = ? AND worker = ?"
        if let statuses {
            guard !statuses.isEmpty else { return [] }
            sql += " AND status IN (\(AttemptStatus.sqlList(statuses)))"
        }
        sql += " ORDER BY id"
        let query = try statement(sql)
        try query.bind(1, namespace)
        try query.bind(2, worker.octets)
        return try readAttempts(query)
    }

    // MARK: - Workers

    private func readWorker(_ row: SQLStatement) -> WorkerRecord {
        let name = row.identifier(1, kind: 2)
        return WorkerRecord(
            namespaceID: row.int64(0), id: name, active: row.bool(3),
            mode: damage.workerMode(row.bytes(4), worker: name),
            data: damage.workerData(row.bytes(5), worker: name),
            parent: row.optionalIdentifier(6, kind: 7), firstSeen: row.int64(8), lastHeartbeat: row.int64(9),
            expiration: row.int64(10))
    }

    func worker(namespace: Int64, id: Identifier) throws -> WorkerRecord? {
        let query = try statement("SELECT \(StoredColumns.worker) FROM worker WHERE namespace_id = ? AND name = ?")
        try query.bind(1, namespace)
        try query.bind(2, id.octets)
        defer { query.reset() }
        return try query.next() ? readWorker(query) : nil
    }

    func saveWorker(_ worker: WorkerRecord) throws {
        let upsert = try statement(
            """
            INSERT OR REPLACE INTO worker (\(StoredColumns.worker)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        try upsert.bind(1, worker.namespaceID)
        try upsert.bind(2, worker.id.octets)
        try upsert.bind(3, worker.id.isText)
        try upsert.bind(4, worker.active)
        try upsert.bind(5, worker.mode.bytes)
        try upsert.bind(6, worker.data.bytes)
        try upsert.bind(7, worker.parent?.octets)
        try upsert.bind(8, worker.parent.map { Int64($0.isText ? 1 : 0) })
        try upsert.bind(9, worker.firstSeen)
        try upsert.bind(10, worker.lastHeartbeat)
        try upsert.bind(11, worker.expiration)
        try upsert.run()
    }

    func deleteWorker(namespace: Int64, id: Identifier, ifLastHeartbeat: Timestamp?) throws -> Bool {
        let delete = try statement(
            "DELETE FROM worker WHERE namespace_id = ? AND name = ? AND (?3 IS NULL OR last_heartbeat = ?3)")
        try delete.bind(1, namespace)
        try delete.bind(2, id.octets)
        try delete.bind(3, ifLastHeartbeat)
        try delete.run()
        return ifLastHeartbeat == nil || sqlite3_changes(database.sqliteConnection!) > 0
    }

    func workers(namespace: Int64) throws -> [WorkerRecord] {
        let query = try statement("SELECT \(StoredColumns.worker) FROM worker WHERE namespace_id = ? ORDER BY name")
        try query.bind(1, namespace)
        var workers: [WorkerRecord] = []
        while try query.next() { workers.append(readWorker(query)) }
        query.reset()
        return workers
    }

    // MARK: - Locks

    private func readLock(_ row: SQLStatement) -> LockRecord {
        LockRecord(
            namespaceID: row.int64(0), pathKey: row.bytes(1), path: damage.lockPath(row.bytes(2)),
            owner: row.identifier(3, kind: 4), deadline: row.int64(5))
    }

    func conflictingLocks(namespace: Int64, pathKey: [UInt8]) throws -> [LockRecord] {
        var result: [LockRecord] = []
        for end in LockPath.labelBoundaries(of: pathKey) {
            if let lock = try lock(namespace: namespace, pathKey: Array(pathKey[..<end])) { result.append(lock) }
        }
        let descendants = try statement(
            "SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = ? AND path_key > ? AND path_key < ?")
        try descendants.bind(1, namespace)
        try descendants.bind(2, pathKey)
        try descendants.bind(3, LockPath.successor(of: pathKey))
        while try descendants.next() { result.append(readLock(descendants)) }
        descendants.reset()
        return result
    }

    func lock(namespace: Int64, pathKey: [UInt8]) throws -> LockRecord? {
        let query = try statement("SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = ? AND path_key = ?")
        try query.bind(1, namespace)
        try query.bind(2, pathKey)
        defer { query.reset() }
        return try query.next() ? readLock(query) : nil
    }

    func saveLock(_ lock: LockRecord) throws {
        let upsert = try statement("INSERT OR REPLACE INTO held_lock (\(StoredColumns.lock)) VALUES (?, ?, ?, ?, ?, ?)")
        try upsert.bind(1, lock.namespaceID)
        try upsert.bind(2, lock.pathKey)
        try upsert.bind(3, lock.path.bytes)
        try upsert.bind(4, lock.owner.octets)
        try upsert.bind(5, lock.owner.isText)
        try upsert.bind(6, lock.deadline)
        try upsert.run()
        if let next = cache.nextLockExpiry, lock.deadline < next { cache.nextLockExpiry = lock.deadline }
    }

    func deleteLock(namespace: Int64, pathKey: [UInt8]) throws {
        let delete = try statement("DELETE FROM held_lock WHERE namespace_id = ? AND path_key = ?")
        try delete.bind(1, namespace)
        try delete.bind(2, pathKey)
        try delete.run()
    }

    func locks(namespace: Int64, pathKeyPrefix: [UInt8]?) throws -> [LockRecord] {
        let query: SQLStatement
        if let prefix = pathKeyPrefix {
            query = try statement(
                "SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = ? AND path_key >= ? AND path_key < ? ORDER BY path_key"
            )
            try query.bind(1, namespace)
            try query.bind(2, prefix)
            try query.bind(3, LockPath.successor(of: prefix))
        } else {
            query = try statement(
                "SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = ? ORDER BY path_key")
            try query.bind(1, namespace)
        }
        var locks: [LockRecord] = []
        while try query.next() { locks.append(readLock(query)) }
        query.reset()
        return locks
    }
}
