import CBOR
import CoordinateEngine
import Foundation
import NIOCore
import PostgresWire

/// One transaction's view of the PostgreSQL store (storage.md §4). Only namespace and spec rows outlive a
/// transaction (``CatalogCache``), checked against the database at its start, so a change committed by any
/// daemon is seen by the next operation of every daemon (MD6). One session may serve several operations of a
/// batch in turn (``PostgresBackend``); ``materialize(now:)`` starts each. Units live in physical
/// buckets (ready, delayed, pending, finished, failed) that each operation first brings up to date for its
/// instant; per-spec unit counters live on the spec rows and are moved by this transaction's deltas, written
/// back just before commit.
final class PostgresSession: StorageSession {
    let channel: SQLChannel
    /// `clock_timestamp()` at the start of the transaction, in microseconds: the operation's `now` (§4.4); nil
    /// when the engine's own clock is used (tests with a manual clock).
    let transactionTime: Int64?
    private var materializedAt: Int64 = .min
    private var knownBuckets: [Int64: UnitBucket] = [:]
    /// Damaged stored data found since the engine last asked (``takeDamage()``).
    private var damage = DamageFindings()
    /// Spec rows read by this transaction, with their counters as read.
    private var specRows: [Int64: (spec: SpecRecord, counts: UnitCounts)] = [:]
    private var namespaceSpecs: [Int64: [Int64]] = [:]
    /// Spec ids by namespace and name, as read by this transaction (a record found through it is checked
    /// against its name, which an update may have changed).
    private var specNames: [Int64: [PrefetchKey: Int64]] = [:]
    private var namespaces: [Identifier: NamespaceRecord] = [:]
    /// Counter changes of this transaction by spec, added to the rows before commit.
    private(set) var deltas: [Int64: UnitCounts] = [:]
    /// Writes this session has made (statements that change rows other than the expiry sweep's), so that a
    /// batch of operations sharing the transaction can tell whether a refusing operation left anything behind.
    private(set) var writeCount = 0

    /// - Parameter sweepRows: the answer of ``sweepWithClockSQL`` run at the start of this transaction (only when
    ///   `transactionTime` is the database's), without its clock row; ``materialize(now:)`` takes it.
    ///   - catalog: namespace and spec rows kept across transactions, or nil to read them every time.
    ///   - readsAhead: reads sent ahead for the operations (``sendReadsAhead(_:catalog:channel:)``).
    ///   - hints: what each operation of the transaction reads first, in order (how many units the grants after
    ///     the current one ask for, ``grantCounts(_:from:)``).
    init(
        channel: SQLChannel, transactionTime: Int64?, sweepRows: [SQLRow]? = nil, catalog: CatalogCache? = nil,
        readsAhead: ReadsAhead = ReadsAhead(), hints: [StorageReadHint?] = []
    ) {
        self.readsAhead = readsAhead.byOperation
        self.speculativeGrant = readsAhead.grant
        self.hints = hints
        self.channel = channel
        self.transactionTime = transactionTime
        self.sweepRows = sweepRows
        self.catalog = catalog
    }

    private let catalog: CatalogCache?
    /// Namespace generations as this transaction found them, by namespace id: from the sweep for the kept
    /// namespaces, from the row for any other it read. A kept row is used only while its generation is the one
    /// found here, and spec rows read under one may be kept. Dropped when the transaction changes the namespace's
    /// specs.
    private var generations: [Int64: Int64] = [:]

    var databaseTime: Timestamp? { transactionTime }

    /// The buckets `work_unit_completed` indexes, as a SQL list. A statement reading through it names its bucket
    /// in its text, since a generic plan cannot prove that a `$n` matches an index's predicate.
    static let completedBuckets = UnitBucket.sqlList([.finished, .failed])

    /// The position of `priority` in ``StoredColumns.unit``.
    static let unitPriorityColumn = 5
    /// A spec row with its counters summed over their shards; callers append `WHERE …` on `s`.
    static let specSelect = "SELECT \(specColumns) \(specSource)"
    static let specColumns = """
        s.id, s.namespace_id, s.name, s.name_kind, s.data, s.overrides, s.next_continuous,
            s.archived_finished, s.archived_failed, coalesce(c.ready, 0)::int8, coalesce(c.delayed, 0)::int8,
            coalesce(c.pending, 0)::int8, coalesce(c.finished, 0)::int8, coalesce(c.failed, 0)::int8
        """
    static let specSource = """
        FROM work_spec s LEFT JOIN LATERAL (
            SELECT sum(ready) AS ready, sum(delayed) AS delayed, sum(pending) AS pending, sum(finished) AS finished,
                sum(failed) AS failed
            FROM spec_count WHERE spec_id = s.id) c ON true
        """
    /// Counter shards per spec: enough that concurrent writers of one spec rarely pick the same row.
    static let counterShards = 32

    // MARK: - Commit support

    /// Adds this transaction's counter deltas to one counter shard of each spec it changed (picked at random, so
    /// concurrent writers of a spec seldom wait for each other; specs in id order, so they never deadlock).
    /// The statements are deferred: they travel with the writes before them, ahead of the COMMIT.
    ///
    /// They are statements of their own, after every other write, never items of a combined statement: the items
    /// of one `WITH` statement run in no promised order, and a counter row taken before a unit row deadlocked.
    /// A grant's `FOR UPDATE SKIP LOCKED` read can keep a lock on a unit another transaction granted just before
    /// (READ COMMITTED locks the newest version, rechecks it, skips it, and keeps the lock); the finish of that
    /// unit then waits for the grant to commit — which, holding the counter row the finish had already taken,
    /// waited for the finish (three deadlocks, each a 1 s stall, per 10 000 cycles at 8×1). Taken last, a counter
    /// row is only ever held by a transaction that waits for nothing but its COMMIT.
    func sendCounts() throws {
        let shard = Int64.random(in: 0..<Int64(Self.counterShards))
        for (spec, delta) in deltas.sorted(by: { $0.key < $1.key }) where delta != UnitCounts() {
            try channel.sendDeferred(
                """
                INSERT INTO spec_count AS c (spec_id, shard, ready, delayed, pending, finished, failed)
                VALUES ($1, $7, $2, $3, $4, $5, $6)
                ON CONFLICT (spec_id, shard) DO UPDATE SET ready = c.ready + EXCLUDED.ready,
                    delayed = c.delayed + EXCLUDED.delayed, pending = c.pending + EXCLUDED.pending,
                    finished = c.finished + EXCLUDED.finished, failed = c.failed + EXCLUDED.failed
                """,
                [
                    .int(spec), .int(Int64(delta.ready)), .int(Int64(delta.delayed)), .int(Int64(delta.pending)),
                    .int(Int64(delta.finished)), .int(Int64(delta.failed)), .int16(Int16(shard)),
                ])
        }
        deltas.removeAll()
    }

    private func adjust(_ spec: Int64, _ bucket: UnitBucket, by delta: Int) {
        deltas[spec, default: UnitCounts()][bucket] += delta
    }

    // MARK: - Time

    /// The sweep of ``materialize(now:)``, ``Expiry`` in SQL: `$1` is the instant, `$2` the ids of the namespaces whose rows the
    /// daemon keeps (``CatalogCache``), whose current generations it answers as rows of kind 4.
    ///
    /// It runs in every transaction and almost always finds nothing, so the update of the expired units' attempts
    /// is gated on there being any (`EXISTS`, a one-time filter evaluated before its join runs). Without the gate
    /// the join ran anyway whenever the cached generic plan was a hash join — the plan PostgreSQL picks for a
    /// connection that first prepared the sweep while `attempt` was small — and a hash join reads its outer side
    /// up to the first row before it looks at the (empty) inner one: a scan of every finished attempt up to the
    /// first active one, in every transaction (half of PostgreSQL's time per cycle at 8×1, growing with the table).
    static let sweepSQL = """
        WITH expired AS (
            SELECT id, spec_id, time, latest_attempt_id FROM work_unit
            WHERE bucket = \(UnitBucket.pending.sql) AND time < $1 ORDER BY time LIMIT 1000 FOR UPDATE SKIP LOCKED
        ), expired_units AS (
            UPDATE work_unit u SET state = \(Expiry.unitState.sql), bucket = \(UnitBucket.ready.sql), time = NULL FROM expired e WHERE u.id = e.id
            RETURNING e.spec_id, e.time, e.latest_attempt_id
        ), expired_attempts AS (
            UPDATE attempt a SET status = \(Expiry.attemptStatus.sql), end_time = greatest(a.start_time, x.time)
            FROM expired_units x WHERE a.id = x.latest_attempt_id AND a.status = \(AttemptStatus.pending.sql) AND EXISTS (SELECT FROM expired_units)
            RETURNING a.id
        ), due AS (
            SELECT id, spec_id FROM work_unit WHERE bucket = \(UnitBucket.delayed.sql) AND time <= $1 LIMIT 1000 FOR UPDATE SKIP LOCKED
        ), promoted AS (
            UPDATE work_unit u SET bucket = \(UnitBucket.ready.sql), time = NULL FROM due d WHERE u.id = d.id RETURNING d.spec_id
        ), dropped_locks AS (
            DELETE FROM held_lock WHERE deadline < $1 RETURNING 1
        )
        SELECT spec_id, 1::bigint AS kind, count(*)::bigint FROM expired_units GROUP BY spec_id
        UNION ALL SELECT spec_id, 2::bigint, count(*)::bigint FROM promoted GROUP BY spec_id
        UNION ALL SELECT 0, 3::bigint, (SELECT count(*) FROM expired_attempts) + (SELECT count(*) FROM dropped_locks)
        UNION ALL SELECT id, \(generationRowKind)::bigint, generation FROM namespace WHERE id = ANY($2)
        """

    /// The kind of the sweep's rows that answer a kept namespace's generation (id, kind, generation).
    static let generationRowKind: Int64 = 4

    /// The transaction's start time on the database clock, in microseconds: every operation's `now` (§4.4).
    static let transactionTimeSQL = "(extract(epoch FROM transaction_timestamp()) * 1000000)::int8"

    /// The same sweep at the transaction's own start time, so that it can be sent together with BEGIN before
    /// that time is known to the daemon, answering that time too: one row of kind ``clockRowKind`` whose first
    /// column is the time.
    /// `$1` is the ids of the kept namespaces.
    static let sweepWithClockSQL =
        sweepSQL.replacingOccurrences(of: "$1", with: transactionTimeSQL).replacingOccurrences(of: "$2", with: "$1")
        + "\nUNION ALL SELECT \(transactionTimeSQL), \(clockRowKind)::bigint, 0::bigint"

    /// The ids of the namespaces the catalog cache keeps, as the sweep's parameter.
    static func keptNamespaces(_ catalog: CatalogCache?) -> SQLValue {
        .array((catalog?.namespaceIDs() ?? []).map { .int($0) }, element: .int(nil))
    }

    /// The kind of the clock row of ``sweepWithClockSQL`` (the sweep's own rows are kinds 1 to 3).
    static let clockRowKind: Int64 = 0

    /// The transaction time and the sweep's own rows of a ``sweepWithClockSQL`` answer.
    static func splitClock(_ rows: [SQLRow]) throws -> (time: Int64, sweep: [SQLRow]) {
        var time: Int64?
        var sweep: [SQLRow] = []
        for row in rows {
            if try row.int64(1) == clockRowKind { time = try row.int64(0) } else { sweep.append(row) }
        }
        guard let time else { throw StorageError.corrupt("no transaction time") }
        return (time, sweep)
    }

    /// A read sent with the start of the transaction for one operation (``StorageReadHint``), by the ids it was
    /// sent for.
    struct ReadAhead {
        enum Target: Equatable {
            case specs(Int64)
            case unit(Int64, [UInt8])
            case worker(Int64, [UInt8])
        }
        let target: Target
        let answer: SQLChannel.Pending
        /// For a spec list: the spec whose best ready priority it leaves out (``namespaceSpecsSQL``), 0 for none.
        var topLeftOut: Int64 = 0
    }

    /// The grant lock and ready units of the spec a batch's first grant most likely picks (the one the latest
    /// grant in its namespace picked, ``CatalogCache/lastGrant(namespace:generation:)``), sent with BEGIN: when
    /// the scheduler does pick it, a lone `get_work` needs no round trip between BEGIN and COMMIT.
    struct SpeculativeGrant {
        let spec: Int64
        let lock: SQLChannel.Pending
        let ready: SQLChannel.Pending
        /// How many units the read asked for.
        let asked: Int
    }

    /// Everything sent ahead for a transaction's operations.
    struct ReadsAhead {
        var byOperation: [Int: ReadAhead] = [:]
        var grant: SpeculativeGrant?

        var count: Int { byOperation.count + (grant == nil ? 0 : 1) }
    }

    /// Sends the reads `hints` name (one per operation of the transaction, in order), for ids as the catalog cache
    /// knows them, right behind BEGIN and the sweep: they share their round trip, and see what the sweep changed
    /// (they run after it, in the same transaction). A hint the cache cannot resolve sends nothing (its operation
    /// reads as usual). The ids may be out of date (the sweep has not validated them yet): a read is used only if
    /// its operation asks for the same ids. Only the first operation's spec list is read ahead: the operations
    /// before a later one change it; a later operation's unit is used only if no operation before it wrote it
    /// (see ``takeReadAhead(_:)``).
    static func sendReadsAhead(
        _ hints: [StorageReadHint?], catalog: CatalogCache, channel: SQLChannel
    )
        -> ReadsAhead
    {
        var reads = ReadsAhead()
        // Only the batch's first grant is sent ahead: the later ones take from the units it reads for all.
        let firstGrant = hints.firstIndex { if case .grant = $0 { true } else { false } }
        for (index, hint) in hints.enumerated() {
            switch hint {
            case nil:
                continue
            case .grant(let name, let count):
                guard let (namespace, generation) = catalog.namespace(named: name) else { continue }
                if index == firstGrant, let spec = catalog.lastGrant(namespace: namespace.id, generation: generation),
                    !grantNeedsExclusiveLock(spec)
                {
                    // The lock and the read go first: the spec list after them then sees the units taken.
                    let asked = reserveSize(grantLimit(spec, count), grants: grantCounts(hints, from: index + 1))
                    reads.grant = SpeculativeGrant(
                        spec: spec.id,
                        lock: channel.send("\(specSelect) WHERE s.id = $1 FOR SHARE OF s", [.int(spec.id)]),
                        ready: channel.send(readyUnitsSQL(limit: asked), [.int(spec.id)]), asked: asked)
                }
                guard index == firstGrant else { continue }
                // The grant's read answers its spec's best ready priority: the list need not look for it. For a
                // grant after other operations of the batch, ``specs(namespace:)`` uses what they cannot have
                // changed.
                let leftOut = reads.grant?.spec ?? 0
                reads.byOperation[index] = ReadAhead(
                    target: .specs(namespace.id),
                    answer: channel.send(namespaceSpecsSQL, [.int(namespace.id), .int(leftOut)]), topLeftOut: leftOut)
            case .unit(let namespaceName, let specName, let key):
                guard let (namespace, generation) = catalog.namespace(named: namespaceName),
                    let spec = catalog.spec(namespace: namespace.id, named: specName, generation: generation)
                else { continue }
                reads.byOperation[index] = ReadAhead(
                    target: .unit(spec.id, key.octets),
                    answer: channel.send(unitWithLatestAttemptSQL, [.int(spec.id), .bytes(key.octets)]))
            case .worker(let namespaceName, let id):
                guard let (namespace, _) = catalog.namespace(named: namespaceName) else { continue }
                reads.byOperation[index] = ReadAhead(
                    target: .worker(namespace.id, id.octets),
                    answer: channel.send(workerSQL, [.int(namespace.id), .bytes(id.octets)]))
            }
        }
        return reads
    }

    /// Reads sent ahead, by the index of the operation they are for, until it makes them or the next one starts.
    private var readsAhead: [Int: ReadAhead]
    /// The speculative grant sent ahead, until the transaction's first grant takes it or picks another spec.
    private var speculativeGrant: SpeculativeGrant?
    /// How many reads sent ahead an operation used.
    private(set) var readsAheadUsed = 0
    /// Operations begun in this session (``materialize(now:)``).
    private var operationsStarted = 0

    /// What this transaction's operations wrote, by which a unit read ahead for a later operation is known to
    /// be out of date: units updated or deleted or whose attempts were written, keys inserted, and whether units
    /// were written wholesale (a spec's or namespace's deletion, a sweep after the first).
    private var unitsWritten: Set<Int64> = []
    private var keysInserted: Set<UnitKeyRef> = []
    private var unitsWrittenWholesale = false

    private struct UnitKeyRef: Hashable {
        let spec: Int64
        let key: [UInt8]
    }

    /// Hands the reads sent ahead for operations up to `index` and never made to the channel, which checks their
    /// answers with the other deferred statements.
    func dropReadsAhead(before index: Int = .max) {
        for (operation, unused) in readsAhead where operation < index {
            readsAhead[operation] = nil
            channel.finishLater(unused.answer)
        }
        if index == .max { dropSpeculativeGrant() }
    }

    private func dropSpeculativeGrant() {
        guard let unused = speculativeGrant else { return }
        speculativeGrant = nil
        channel.finishLater(unused.lock)
        channel.finishLater(unused.ready)
    }

    /// Makes the speculative grant's lock and units this transaction's, if it was sent for `spec` and nothing
    /// this transaction wrote since could have changed which units come first: then the spec's row is held
    /// shared and its units are the spec's ``GrantReserve`` (as after a grant's own lock and read). Otherwise
    /// they go unused and the grant reads as usual.
    private func takeSpeculativeGrant(for spec: Int64) throws {
        guard let speculative = speculativeGrant else { return }
        guard speculative.spec == spec else { return dropSpeculativeGrant() }
        speculativeGrant = nil
        let lockRows = try channel.finish(speculative.lock)
        let readyRows = try channel.finish(speculative.ready)
        guard let row = lockRows.first, !unitsWrittenWholesale, !specsGivenReadyUnits.contains(spec) else { return }
        let units = try readyUnits(from: readyRows)
        guard !units.contains(where: { unitsWritten.contains($0.id) }) else { return }
        // A row this transaction read after the lock is at least as new.
        if specRows[spec] == nil { specRows[spec] = try readSpec(row) }
        specsSharedForGrants.insert(spec)
        grantReserves[spec] = GrantReserve(units: units[...], complete: units.count < speculative.asked)
        readsAheadUsed += 1
    }

    /// The rows of the read sent ahead for the current operation when it is `target`, and still what a read now
    /// would answer; nil otherwise (the caller then reads). Offered to the operation's first read of that kind only.
    private func takeReadAhead(_ target: ReadAhead.Target) throws -> [SQLRow]? {
        let operation = operationsStarted - 1
        guard let ahead = readsAhead[operation], ahead.target == target else { return nil }
        readsAhead[operation] = nil
        let rows = try channel.finish(ahead.answer)
        if case .specs(let namespace) = target, namespacesWithSpecsChanged.contains(namespace) { return nil }
        if case .worker(let namespace, let id) = target,
            workersWrittenWholesale || workersWritten.contains(WorkerKey(namespace: namespace, id: id))
        {
            return nil
        }
        if case .unit(let spec, let key) = target {
            if unitsWrittenWholesale { return nil }
            if let row = rows.first {
                if unitsWritten.contains(try row.int64(0)) { return nil }
            } else if keysInserted.contains(UnitKeyRef(spec: spec, key: key)) {
                return nil
            }
        }
        readsAheadUsed += 1
        return rows
    }

    /// The sweep's answer at the transaction time, until ``materialize(now:)`` takes it.
    private var sweepRows: [SQLRow]?

    /// Expires passed leases, promotes delayed units whose time has come, and drops expired locks, in one
    /// statement. Rows another transaction holds are skipped (`SKIP LOCKED`): status is always derived from the
    /// stored deadlines too, so a skipped row is still observed correctly.
    ///
    /// Every operation starts here, so this is also where the session forgets what an earlier operation of the
    /// same transaction (a batch, see ``PostgresBackend``) read that writes since may have changed: units read
    /// ahead and the units' buckets. Spec and namespace rows stay known, and so does a namespace's spec list
    /// with its generation and its specs' best ready priorities: this transaction's own writes update them or
    /// drop what they change (a spec created, changed or deleted; a unit made ready or taken from ready), and
    /// counters are the rows as read plus this transaction's deltas. A batch of grants thus reads the spec list
    /// once; what other daemons commit meanwhile is seen by the next transaction, as for reads sent ahead.
    func materialize(now: Timestamp) throws -> [Int64: Int] {
        // Reads sent for earlier operations, which did not make them, are not this one's.
        dropReadsAhead(before: operationsStarted)
        operationsStarted += 1
        materializedAt = max(materializedAt, now)
        knownBuckets.removeAll(keepingCapacity: true)
        latestAttempts.removeAll()
        var rows: [SQLRow] = []
        if let answered = sweepRows {
            sweepRows = nil
            rows = answered
        }
        if now != transactionTime {
            unitsWrittenWholesale = true
            dropGrantReserves()
            readyTops.removeAll()
            rows += try channel.query(Self.sweepSQL, [.int(now), Self.keptNamespaces(catalog)])
        }
        var expired: [Int64: Int] = [:]
        for row in rows {
            let spec = try row.int64(0)
            let count = try row.int(2)
            switch try row.int64(1) {
            case 1:
                adjust(spec, .pending, by: -count)
                adjust(spec, .ready, by: count)
                expired[spec, default: 0] += count
            case 2:
                adjust(spec, .delayed, by: -count)
                adjust(spec, .ready, by: count)
            case Self.generationRowKind:
                generations[spec] = Int64(count)
            default:
                break
            }
        }
        return expired
    }

    // MARK: - Namespaces

    func namespace(named name: Identifier) throws -> NamespaceRecord? {
        if let known = namespaces[name] { return known }
        if let (record, generation) = catalog?.namespace(named: name), generations[record.id] == generation {
            catalog?.used()
            namespaces[name] = record
            return record
        }
        let rows = try channel.query(
            "SELECT id, name, name_kind, generation FROM namespace WHERE name = $1", [.bytes(name.octets)])
        guard let row = rows.first else { return nil }
        let record = NamespaceRecord(id: try row.int64(0), name: try row.identifier(1, kind: 2))
        let generation = try row.int64(3)
        namespaces[name] = record
        generations[record.id] = generation
        catalog?.remember(record, generation: generation)
        return record
    }

    func createNamespace(named name: Identifier) throws -> NamespaceRecord {
        writeCount += 1
        if let existing = try namespace(named: name) { return existing }
        // A concurrent creation by another daemon makes this insert a no-op; the select then finds its row.
        try channel.query(
            "INSERT INTO namespace (name, name_kind) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            [.bytes(name.octets), .bool(name.isText)])
        guard let record = try namespace(named: name) else { throw StorageError.contention }
        return record
    }

    func allNamespaces() throws -> [NamespaceRecord] {
        try channel.query("SELECT id, name, name_kind FROM namespace ORDER BY name").map {
            NamespaceRecord(id: try $0.int64(0), name: try $0.identifier(1, kind: 2))
        }
    }

    func deleteNamespace(_ namespace: NamespaceRecord, keepRecord: Bool) throws {
        namespacesWithSpecsChanged.insert(namespace.id)
        unitsWrittenWholesale = true
        workersWrittenWholesale = true
        dropGrantReserves()
        writeCount += 1
        latestAttempts.removeAll()
        catalog?.forget(namespace: namespace.id)
        generations[namespace.id] = nil
        // The specs go first and say which they were: counter changes this transaction made to them (an earlier
        // operation of the batch, the expiry sweep) must not be written back to rows that no longer exist.
        let goneSpecs = try channel.query(
            "DELETE FROM work_spec WHERE namespace_id = $1 RETURNING id", [.int(namespace.id)])
        var goneIDs: [SQLValue] = []
        for row in goneSpecs {
            let id = try row.int64(0)
            goneIDs.append(.int(id))
            specRows[id] = nil
            deltas[id] = nil
            specInsertLocks[id] = nil
        }
        // As in ``deleteSpec(_:)``: the units in a statement of their own, after the spec rows.
        if !goneIDs.isEmpty {
            try channel.sendDeferred(
                "DELETE FROM work_unit WHERE spec_id = ANY($1)", [.array(goneIDs, element: .int(nil))])
        }
        if keepRecord {
            try channel.query("DELETE FROM worker WHERE namespace_id = $1", [.int(namespace.id)])
            try channel.query("DELETE FROM held_lock WHERE namespace_id = $1", [.int(namespace.id)])
            try bumpGeneration(namespace.id)
        } else {
            try channel.query("DELETE FROM namespace WHERE id = $1", [.int(namespace.id)])
            namespaces[namespace.name] = nil
        }
        namespaceSpecs[namespace.id] = nil
        specNames[namespace.id] = nil
    }

    // MARK: - Specs

    private func readSpec(_ row: SQLRow) throws -> (SpecRecord, UnitCounts) {
        let id = try row.int64(0)
        let data = damage.specData(try row.bytes(4), spec: id)
        let derived = (try? SpecDerivation.fields(of: data.decoded().mapValue ?? CBORMap())) ?? SpecFields()
        var record = SpecRecord(
            id: id, namespaceID: try row.int64(1), name: try row.identifier(2, kind: 3), data: data,
            derived: derived, nextContinuous: try row.optionalInt64(6), archivedFinished: try row.int64(7),
            archivedFailed: try row.int64(8))
        if let overrides = try row.optionalBytes(5) { SpecOverrides.decode(overrides, into: &record) }
        var counts = UnitCounts()
        counts.ready = try row.int(9)
        counts.delayed = try row.int(10)
        counts.pending = try row.int(11)
        counts.finished = try row.int(12)
        counts.failed = try row.int(13)
        return (record, counts)
    }

    /// The namespace's specs with, in the same round trip, each spec's best ready priority and the namespace's
    /// generation: `get_work` asks for both right after the specs (``topReadyPriority(spec:)``,
    /// ``specGeneration(namespace:)``), one query per spec before.
    static let namespaceSpecsSQL = """
        SELECT \(specColumns),
            CASE WHEN s.id = $2 THEN NULL ELSE (SELECT u.priority FROM work_unit u WHERE u.spec_id = s.id
                AND u.bucket = \(UnitBucket.ready.sql) ORDER BY \(UnitOrder.priority.sql("u")) LIMIT 1) END,
            (SELECT n.generation FROM namespace n WHERE n.id = s.namespace_id)
        \(specSource) WHERE s.namespace_id = $1 ORDER BY s.name
        """

    /// Best ready priority by spec (nil: no ready unit), as read with the namespace's specs; dropped by any unit
    /// write of this transaction.
    private var readyTops: [Int64: Double?] = [:]
    /// Specs whose ready units this transaction changed (a unit added, made ready, taken from ready or deleted),
    /// and namespaces whose specs it changed: what a spec list read with BEGIN cannot know.
    private var specsWithReadyUnitsChanged: Set<Int64> = []
    private var namespacesWithSpecsChanged: Set<Int64> = []

    /// A write that may change which of `spec`'s ready units comes first.
    private func readyUnitsChanged(in spec: Int64) {
        readyTops[spec] = nil
        specsWithReadyUnitsChanged.insert(spec)
    }
    /// Namespace generations as read with the namespace's specs; each answers one ``specGeneration(namespace:)``.
    private var readGenerations: [Int64: UInt64] = [:]

    func specs(namespace: Int64) throws -> [SpecRecord] {
        if let ids = namespaceSpecs[namespace] { return ids.compactMap { specRows[$0]?.spec } }
        var leftOut: Int64 = 0
        var readAhead = false
        let rows: [SQLRow]
        if let ahead = readsAhead[operationsStarted - 1], let read = try takeReadAhead(.specs(namespace)) {
            (rows, leftOut, readAhead) = (read, ahead.topLeftOut, true)
        } else {
            rows = try channel.query(Self.namespaceSpecsSQL, [.int(namespace), .int(0)])
        }
        var ids: [Int64] = []
        for row in rows {
            let (spec, counts) = try readSpec(row)
            // Read with BEGIN, a row is older than one an earlier operation of the batch read since; either plus
            // this transaction's deltas gives its counts.
            if !readAhead || specRows[spec.id] == nil { specRows[spec.id] = (spec, counts) }
            specNames[namespace, default: [:]][PrefetchKey(spec.name)] = spec.id
            ids.append(spec.id)
            // A best ready priority read with BEGIN holds unless an earlier operation changed the spec's ready
            // units.
            let topHolds = !readAhead || !(unitsWrittenWholesale || specsWithReadyUnitsChanged.contains(spec.id))
            if spec.id != leftOut, topHolds { readyTops[spec.id] = .some(try row.optionalDouble(14)) }
            let generation = try row.int64(15)
            readGenerations[namespace] = UInt64(bitPattern: generation)
            if generations[namespace] == generation { catalog?.remember(spec, generation: generation) }
        }
        namespaceSpecs[namespace] = ids
        return ids.compactMap { specRows[$0]?.spec }
    }

    func specGeneration(namespace: Int64) throws -> UInt64 {
        if let generation = readGenerations[namespace] { return generation }
        let rows = try channel.query("SELECT generation FROM namespace WHERE id = $1", [.int(namespace)])
        return UInt64(bitPattern: try rows.first?.int64(0) ?? 0)
    }

    private func bumpGeneration(_ namespace: Int64) throws {
        namespacesWithSpecsChanged.insert(namespace)
        writeCount += 1
        catalog?.forget(namespace: namespace)
        generations[namespace] = nil
        readGenerations[namespace] = nil
        try channel.query("UPDATE namespace SET generation = generation + 1 WHERE id = $1", [.int(namespace)])
    }

    func spec(namespace: Int64, named name: Identifier) throws -> SpecRecord? {
        if let ids = namespaceSpecs[namespace] {
            return ids.lazy.compactMap { self.specRows[$0]?.spec }.first { $0.name == name }
        }
        if let id = specNames[namespace]?[PrefetchKey(name)], let known = specRows[id]?.spec, known.name == name {
            return known
        }
        let generation = generations[namespace]
        if let generation, let cached = catalog?.spec(namespace: namespace, named: name, generation: generation) {
            return cached
        }
        let rows = try channel.query(
            "\(Self.specSelect) WHERE s.namespace_id = $1 AND s.name = $2",
            [.int(namespace), .bytes(name.octets)])
        guard let row = rows.first else { return nil }
        let (spec, counts) = try readSpec(row)
        specRows[spec.id] = (spec, counts)
        specNames[namespace, default: [:]][PrefetchKey(name)] = spec.id
        if let generation { catalog?.remember(spec, generation: generation) }
        return spec
    }

    func spec(id: Int64) throws -> SpecRecord? {
        if let known = specRows[id] { return known.spec }
        let rows = try channel.query("\(Self.specSelect) WHERE s.id = $1", [.int(id)])
        guard let row = rows.first else { return nil }
        let (spec, counts) = try readSpec(row)
        specRows[spec.id] = (spec, counts)
        return spec
    }

    /// Locks the spec row for a grant and returns it fresh with its counters, so `max_running`, `max_getwork`,
    /// pauses and continuous intervals are judged on the latest committed state by whichever daemon grants (MD2,
    /// MD3). Grants that count running units or mint (`max_running`, continuous specs) take the row exclusively
    /// and so run one at a time per spec; the others share it — `SKIP LOCKED` on the units already keeps them
    /// from granting a unit twice — and still exclude a concurrent change of the spec (pause, re-set, delete).
    ///
    /// The shared lock travels with the read of the ready units the grant will take (`count`, capped by
    /// `max_getwork`), which ``readyUnits(spec:limit:)`` then answers: lock and units in one wait.
    ///
    /// A later operation of the same transaction granting from a spec whose row it already holds shared, with
    /// enough units left in its ``GrantReserve``, needs no round trip at all: nobody else can have changed the
    /// row since.
    func lockSpecForGrant(_ spec: SpecRecord, expecting count: Int) throws -> (SpecRecord, UnitCounts)? {
        try takeSpeculativeGrant(for: spec.id)
        var exclusive = Self.grantNeedsExclusiveLock(spec)
        if specsSharedForGrants.contains(spec.id), let held = specRows[spec.id]?.spec,
            !Self.grantNeedsExclusiveLock(held), grantReserves[spec.id]?.covers(Self.grantLimit(held, count)) == true
        {
            grantsFromReserve += 1
            return (held, try unitCounts(spec: spec.id))
        }
        if !exclusive {
            // One round trip: the counters this reads may predate the lock, which is fine because a spec without
            // `max_running` is not limited by them.
            let lock = channel.send("\(Self.specSelect) WHERE s.id = $1 FOR SHARE OF s", [.int(spec.id)])
            let limit = Self.grantLimit(spec, count)
            let ready = limit > 0 ? sendReserveRead(spec: spec.id, limit: limit) : nil
            // The units' answer comes after the lock's: waiting for it first is one wake-up for both.
            let readyRows = ready.map { ready in Result { try channel.finish(ready.answer) } }
            let rows = try channel.finishAfterDeferred(lock)
            if let ready, let readyRows { try keepReserve(spec: spec.id, asked: ready.asked, rows: readyRows.get()) }
            guard let row = rows.first else { return nil }
            let (fresh, counts) = try readSpec(row)
            specRows[fresh.id] = (fresh, counts)
            if !Self.grantNeedsExclusiveLock(fresh) {
                specsSharedForGrants.insert(fresh.id)
                if let generation = generations[fresh.namespaceID] {
                    catalog?.rememberGrant(from: fresh, generation: generation)
                }
                return (fresh, try unitCounts(spec: fresh.id))
            }
            exclusive = true
        }
        while true {
            let locked = try channel.query(
                "SELECT 1 FROM work_spec WHERE id = $1 FOR \(exclusive ? "UPDATE" : "SHARE")", [.int(spec.id)])
            guard !locked.isEmpty else { return nil }
            // Read after the lock is held: in READ COMMITTED each statement sees everything committed before it.
            specRows[spec.id] = nil
            guard let fresh = try self.spec(id: spec.id) else { return nil }
            if exclusive || !Self.grantNeedsExclusiveLock(fresh) { return (fresh, try unitCounts(spec: fresh.id)) }
            exclusive = true  // The spec gained a limit meanwhile: take the row exclusively and read again.
        }
    }

    static func grantNeedsExclusiveLock(_ spec: SpecRecord) -> Bool {
        let fields = spec.effective
        return fields.maxRunning != nil || fields.continuous
    }

    /// How many units a grant of `count` may take from `spec` at most, as far as the spec row alone says.
    static func grantLimit(_ spec: SpecRecord, _ count: Int) -> Int {
        guard let maxGetwork = spec.effective.maxGetwork else { return count }
        return min(count, Int(clamping: maxGetwork))
    }

    // MARK: - Grant reserves

    /// Ready units a grant read and locked for itself and for the grants of the operations after it in the same
    /// transaction (a write batch), in grant order. A batch of `get_work`s on one spec reads its units once:
    /// each grant after the first takes the next ones without a round trip (``lockSpecForGrant(_:expecting:)``).
    ///
    /// The order is the one the read found, as if every grant of the batch had read at the first one's moment
    /// (milliseconds earlier); a unit another daemon makes ready meanwhile waits for the next read, as it would
    /// for a grant that started a moment sooner. What this transaction itself does to the spec's ready units is
    /// never missed: any write that could put a unit before the reserve's next one (a unit inserted, made
    /// ready, or one of the reserve's own units changed, units deleted wholesale, a second sweep) drops the
    /// spec's reserve (``reserveMayBeStale(_:)``), and the next grant reads again.
    private struct GrantReserve {
        var units: ArraySlice<UnitRecord>
        /// The read found fewer units than it asked for: no other unit was ready.
        let complete: Bool

        func covers(_ limit: Int) -> Bool { complete || units.count >= limit }
    }

    private var grantReserves: [Int64: GrantReserve] = [:]
    /// Specs whose row this transaction holds a share lock on, taken for a grant.
    private var specsSharedForGrants: Set<Int64> = []
    /// What each operation of the transaction said it reads first, in order.
    private let hints: [StorageReadHint?]
    /// Specs into which this transaction inserted units or made one ready.
    private var specsGivenReadyUnits: Set<Int64> = []
    /// Grants of this transaction that took their lock and units from what an earlier grant had read.
    private(set) var grantsFromReserve = 0

    /// The most units one reserve read asks for, whatever the batch.
    static let maxReserve = 256

    /// Sends the read of `limit` ready units of `spec` for the current grant and, for each grant after it in
    /// this transaction, as many as it asks for.
    private func sendReserveRead(spec: Int64, limit: Int) -> (answer: SQLChannel.Pending, asked: Int) {
        let current = max(operationsStarted - 1, 0)
        let asked = Self.reserveSize(limit, grants: Self.grantCounts(hints, from: current + 1))
        return (channel.send(Self.readyUnitsSQL(limit: asked), [.int(spec)]), asked)
    }

    /// The unit counts the grants of `hints` from `index` on ask for.
    static func grantCounts(_ hints: [StorageReadHint?], from index: Int) -> [Int] {
        hints.dropFirst(index).compactMap { if case .grant(_, let count) = $0 { count } else { nil } }
    }

    /// How many units to read for a grant of `limit` followed by grants of `grants` units each: rounded up to a
    /// power of two, because the limit is part of the statement's text (``readyUnitsSQL(limit:)``) and each
    /// distinct text is a statement the connection prepares.
    static func reserveSize(_ limit: Int, grants: [Int]) -> Int {
        guard !grants.isEmpty else { return limit }
        let total = grants.reduce(limit, +)
        return max(limit, min(total.roundedUpToPowerOfTwo, maxReserve))
    }

    private func keepReserve(spec: Int64, asked: Int, rows: [SQLRow]) throws {
        let units = try readyUnits(from: rows)
        grantReserves[spec] = GrantReserve(units: units[...], complete: units.count < asked)
    }

    /// A write of `unit` (moved to `bucket`, or deleted when nil) that may change which ready units of its spec
    /// come first drops the spec's reserve.
    private func reserveMayBeStale(_ unit: UnitRecord, movedTo bucket: UnitBucket?) {
        if bucket == .ready { specsGivenReadyUnits.insert(unit.specID) }
        guard let reserve = grantReserves[unit.specID] else { return }
        if bucket == .ready || reserve.units.contains(where: { $0.id == unit.id }) {
            grantReserves[unit.specID] = nil
        }
    }

    private func dropGrantReserves() {
        grantReserves.removeAll()
    }

    /// Units inserted into `spec` may come before any it had ready: what this transaction knows of its ready
    /// units (reserve, best priority, a speculative grant's read) no longer holds.
    private func unitsInserted(into spec: Int64) {
        grantReserves[spec] = nil
        specsGivenReadyUnits.insert(spec)
        readyUnitsChanged(in: spec)
    }

    func insertSpec(_ spec: SpecRecord) throws -> SpecRecord {
        writeCount += 1
        let rows = try channel.query(
            """
            INSERT INTO work_spec (namespace_id, name, name_kind, data, overrides, next_continuous, archived_finished,
                archived_failed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
            """,
            [
                .int(spec.namespaceID), .bytes(spec.name.octets), .bool(spec.name.isText), .bytes(spec.data.bytes),
                .bytes(SpecOverrides.encode(spec)), .int(spec.nextContinuous), .int(spec.archivedFinished),
                .int(spec.archivedFailed),
            ])
        var record = spec
        record.id = try rows.first?.int64(0) ?? 0
        specRows[record.id] = (record, UnitCounts())
        namespaceSpecs[spec.namespaceID] = nil
        try bumpGeneration(spec.namespaceID)
        return record
    }

    func updateSpec(_ spec: SpecRecord) throws {
        writeCount += 1
        try channel.query(
            """
            UPDATE work_spec SET name = $2, name_kind = $3, data = $4, overrides = $5, next_continuous = $6,
                archived_finished = $7, archived_failed = $8 WHERE id = $1
            """,
            [
                .int(spec.id), .bytes(spec.name.octets), .bool(spec.name.isText), .bytes(spec.data.bytes),
                .bytes(SpecOverrides.encode(spec)), .int(spec.nextContinuous), .int(spec.archivedFinished),
                .int(spec.archivedFailed),
            ])
        if let known = specRows[spec.id] { specRows[spec.id] = (spec, known.counts) }
        try bumpGeneration(spec.namespaceID)
    }

    func deleteSpec(_ spec: SpecRecord) throws {
        unitsWrittenWholesale = true
        dropGrantReserves()
        writeCount += 1
        latestAttempts.removeAll()
        // The spec row first: its lock waits for every transaction inserting units into it
        // (``lockSpecForInserts(_:)``), whose units the next statement's snapshot then sees.
        try channel.query("DELETE FROM work_spec WHERE id = $1", [.int(spec.id)])
        try channel.sendDeferred("DELETE FROM work_unit WHERE spec_id = $1", [.int(spec.id)])
        specInsertLocks[spec.id] = nil
        specRows[spec.id] = nil
        deltas[spec.id] = nil
        namespaceSpecs[spec.namespaceID] = nil
        try bumpGeneration(spec.namespaceID)
    }

    // MARK: - Units

    func takeDamage() -> [StoredDamage] { damage.take() }

    /// Starts one read of a snapshot (``PostgresSnapshot``), which never materializes: forgets the previous
    /// read's per-operation state.
    func beginSnapshotRead() {
        knownBuckets.removeAll(keepingCapacity: true)
    }

    private func readUnit(_ row: SQLRow) throws -> UnitRecord {
        let state = UnitState(rawValue: UInt8(try row.int16(7))) ?? .available
        let time = try row.optionalInt64(9)
        let id = try row.int64(0)
        let (data, damaged) = damage.unitData(try row.bytes(4), checksum: try row.optionalInt64(13), unit: id)
        var unit = UnitRecord(
            id: id, specID: try row.int64(1), key: try row.identifier(2, kind: 3),
            data: data, priority: try row.double(Self.unitPriorityColumn),
            notBefore: try row.optionalInt64(6), state: state, leaseDeadline: state == .pending ? time : nil,
            completionTime: state == .finished || state == .failed ? time : nil,
            latestAttemptID: try row.optionalInt64(10), attemptCount: try row.int64(11),
            retryCountBase: try row.int64(12))
        unit.originalData = damage.originalUnitData(try row.optionalBytes(14), unit: id)
        unit.damage = damaged
        knownBuckets[unit.id] = UnitBucket(rawValue: UInt8(try row.int16(8))) ?? .ready
        return unit
    }

    private func units(_ sql: String, _ values: [SQLValue]) throws -> [UnitRecord] {
        try channel.query(sql, values).map(readUnit)
    }

    func unit(spec: Int64, key: Identifier) throws -> UnitRecord? {
        let rows =
            try takeReadAhead(.unit(spec, key.octets))
            ?? channel.query(Self.unitWithLatestAttemptSQL, [.int(spec), .bytes(key.octets)])
        guard let row = rows.first else { return nil }
        let unit = try readUnit(row)
        if let attemptID = unit.latestAttemptID, try row.optionalInt64(Self.unitColumnCount) != nil {
            latestAttempts[attemptID] = try readAttempt(row, from: Self.unitColumnCount)
        }
        return unit
    }

    /// A unit by spec and key with its latest attempt: almost every operation on one unit (finish, fail, renew)
    /// reads both, and one statement is one round trip less.
    static let unitWithLatestAttemptSQL = """
        SELECT \(StoredColumns.qualified(StoredColumns.unit, by: "u")),
            \(StoredColumns.qualified(StoredColumns.attempt, by: "a"))
        FROM work_unit u LEFT JOIN attempt a ON a.id = u.latest_attempt_id WHERE u.spec_id = $1 AND u.key = $2
        """
    static let unitColumnCount = StoredColumns.count(StoredColumns.unit)

    /// Latest attempts read with their units in this operation (``unit(spec:key:)``), by id; kept up to date by
    /// this session's attempt writes and forgotten when units are deleted.
    private var latestAttempts: [Int64: AttemptRecord] = [:]

    /// Inserts the units, of one spec, and returns those whose keys were taken.
    ///
    /// Many units go in with COPY first, betting that no key is taken (a bulk add of new units): COPY costs the
    /// server about half of an `INSERT` of the same rows, which also checks each key for a conflict, unpacks the
    /// arrays it gets the rows in and answers the keys it inserted. COPY cannot skip a taken key; one fails it,
    /// a savepoint undoes it, and the units then go the statement way (``insertUnitsSkippingTaken(_:spec:)``).
    func insertUnitsIfAbsent(_ units: [UnitRecord]) throws -> [UnitRecord] {
        guard let spec = units.first?.specID else { return [] }
        for unit in units { keysInserted.insert(UnitKeyRef(spec: unit.specID, key: unit.key.octets)) }
        unitsInserted(into: spec)
        writeCount += 1
        let specLock = lockSpecForInserts(spec)
        let existing: [UnitRecord]
        if units.count >= Self.copyThreshold, try copyNewUnits(units, spec: spec) {
            existing = []
        } else {
            existing = try insertUnitsSkippingTaken(units, spec: spec)
        }
        try checkSpecLock(specLock, spec: spec)
        return existing
    }

    /// Units from which an insert goes through COPY: below it, the savepoint and the COPY cost more round trips
    /// and statements than one `INSERT … ON CONFLICT` saves.
    static let copyThreshold = 64
    /// Rows per COPY statement: each goes out as soon as it is built, so the server copies one while the next is
    /// built.
    static let copyRowsPerStatement = 4_096

    /// Copies `units` into `spec` under a savepoint; false (and nothing inserted) if a key was taken.
    private func copyNewUnits(_ units: [UnitRecord], spec: Int64) throws -> Bool {
        try channel.sendDeferred("SAVEPOINT insert_units")
        var added = UnitCounts()
        var sent: [SQLChannel.Pending] = []
        for start in stride(from: 0, to: units.count, by: Self.copyRowsPerStatement) {
            var rows = SQLCopyRows()
            for unit in units[start..<min(start + Self.copyRowsPerStatement, units.count)] {
                let (bucket, time) = placement(unit)
                added[bucket] += 1
                rows.append(Self.insertValues(unit, bucket: bucket, time: time))
            }
            sent.append(channel.sendCopy(Self.copyUnitsSQL, rows))
            channel.flush()
        }
        var failure: (any Error)?
        for (index, pending) in sent.enumerated() {
            do {
                _ = index == 0 ? try channel.finishAfterDeferred(pending) : try channel.finish(pending)
            } catch {
                if failure == nil { failure = error }
            }
        }
        if let failure {
            // The copy's own failure only: a statement skipped for an earlier failure means no savepoint to go
            // back to.
            guard (failure as? WireServerError)?.sqlState == Self.uniqueViolation else { throw failure }
            try channel.query("ROLLBACK TO SAVEPOINT insert_units")
            try channel.sendDeferred("RELEASE SAVEPOINT insert_units")
            return false
        }
        try channel.sendDeferred("RELEASE SAVEPOINT insert_units")
        for bucket in UnitBucket.allCases where added[bucket] != 0 { adjust(spec, bucket, by: added[bucket]) }
        unitsCopied += units.count
        return true
    }

    /// Units this session inserted by COPY (``BatchStatistics/unitsCopied``).
    private(set) var unitsCopied = 0

    static let uniqueViolation = "23505"

    static let copyUnitsSQL = "COPY \(unitInsertColumns) FROM STDIN (FORMAT binary)"

    /// Inserts the units in statements of up to ``SQLChannel/maxRowsPerStatement`` rows that skip taken keys and
    /// answer the keys they inserted; the others are then read in statements of as many keys. Each statement
    /// goes out as soon as it is built, so the server works on one while the next is built.
    ///
    /// Inserting first and reading only the keys that were taken is what makes an add of new units one pass over
    /// the index instead of two: reading every key first cost as much as the insert itself.
    private func insertUnitsSkippingTaken(_ units: [UnitRecord], spec: Int64) throws -> [UnitRecord] {
        var buckets: [[UInt8]: UnitBucket] = [:]
        buckets.reserveCapacity(units.count)
        var sent: [SQLChannel.Pending] = []
        let chunk = SQLChannel.maxRowsPerStatement
        for start in stride(from: 0, to: units.count, by: chunk) {
            let rows = units[start..<min(start + chunk, units.count)].map { unit -> [SQLValue] in
                let (bucket, time) = placement(unit)
                buckets[unit.key.octets] = bucket
                return Self.insertValues(unit, bucket: bucket, time: time)
            }
            sent.append(
                channel.send(Self.insertUnitsIfAbsentSQL, rows[0].indices.map { SQLValue.column($0, of: rows) }))
            channel.flush()
        }
        var taken = Set(buckets.keys)
        for (index, pending) in sent.enumerated() {
            let rows = index == 0 ? try channel.finishAfterDeferred(pending) : try channel.finish(pending)
            for row in rows {
                let key = try row.bytes(0)
                taken.remove(key)
                adjust(spec, buckets[key] ?? .ready, by: 1)
            }
        }
        guard !taken.isEmpty else { return [] }
        let keys = Array(taken)
        var existing: [UnitRecord] = []
        for start in stride(from: 0, to: keys.count, by: chunk) {
            let slice = keys[start..<min(start + chunk, keys.count)]
            existing += try self.units(
                Self.unitsByKeySQL, [.int(spec), .array(slice.map { .bytes($0) }, element: .bytes(nil))])
        }
        return existing
    }

    /// Specs this transaction has locked against deletion before inserting units into them, with the answer of
    /// the lock (``lockSpecForInserts(_:)``).
    private var specInsertLocks: [Int64: SQLChannel.Pending] = [:]

    /// Locks `spec`'s row against deletion until this transaction ends, once per transaction, before units are
    /// inserted into it: this is what keeps a unit from outliving its spec (`work_unit.spec_id` has no foreign
    /// key, whose check costs the server a query per inserted row). A deletion of the spec locks the row first
    /// and deletes its units after, in a statement of their own whose snapshot sees the units of every inserter
    /// that held the lock (``deleteSpec(_:)``). The lock goes out with the insert, whose answer comes after it:
    /// ``checkSpecLock(_:spec:)`` then reads it without waiting.
    private func lockSpecForInserts(_ spec: Int64) -> SQLChannel.Pending? {
        guard specInsertLocks[spec] == nil else { return nil }
        let pending = channel.send("SELECT 1 FROM work_spec WHERE id = $1 FOR KEY SHARE", [.int(spec)])
        specInsertLocks[spec] = pending
        return pending
    }

    /// Fails the transaction, as a conflict another try resolves, if `spec` was gone when it was locked for
    /// inserts (deleted by another transaction since this one read it). A deletion through a daemon moved the
    /// namespace's generation, so the next try reads the specs again; one by other means did not, so the kept
    /// rows are dropped here.
    private func checkSpecLock(_ lock: SQLChannel.Pending?, spec: Int64) throws {
        guard let lock, try channel.finish(lock).isEmpty else { return }
        catalog?.forget(specID: spec)
        throw PostgresConflict.specDeleted(spec)
    }

    /// The units of a spec with the keys in the array `$2`, one unique-index lookup per key.
    ///
    /// Written as a lateral join so that no plan can do anything else: `key IN ($2, …)` let a plan cached while
    /// the spec was nearly empty (a generic plan lives as long as the connection, until ANALYZE invalidates it)
    /// read every unit of the spec and compare it with each of the 1 000 keys. Bulk adds into a fresh spec
    /// slowed down with every call — 0.2 s for the first 10 000 units, 4.3 s for the third — and this plan
    /// answers the same chunk in ~1.4 ms instead of ~600 ms.
    static let unitsByKeySQL = """
        SELECT u.* FROM unnest($2) AS k(key)
        CROSS JOIN LATERAL (SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = $1 AND key = k.key) u
        """

    static let unitInsertColumns = """
        work_unit (\(StoredColumns.unitValues))
        """
    /// A unit's values in ``unitInsertColumns`` order, placed in `bucket` with its `time`.
    static func insertValues(_ unit: UnitRecord, bucket: UnitBucket, time: Int64?) -> [SQLValue] {
        [
            .int(unit.specID), .bytes(unit.key.octets), .bool(unit.key.isText), .bytes(unit.data.bytes),
            .double(unit.priority), .int(unit.notBefore), .int16(Int16(unit.state.rawValue)),
            .int16(Int16(bucket.rawValue)), .int(time), .int(unit.latestAttemptID), .int(unit.attemptCount),
            .int(unit.retryCountBase), .int(StoredData.checksumColumn(unit.data.bytes)),
            .bytes(unit.originalData?.bytes),
        ]
    }

    static let insertUnitSQL = """
        INSERT INTO \(unitInsertColumns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id
        """
    /// ``insertUnitSQL`` for many rows (each parameter is the array of one column) that skips the keys already
    /// taken and answers those it inserted.
    static let insertUnitsIfAbsentSQL = """
        INSERT INTO \(unitInsertColumns) SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (spec_id, key) DO NOTHING RETURNING key
        """

    func unit(of attempt: AttemptRecord) throws -> UnitRecord? {
        try units("SELECT \(StoredColumns.unit) FROM work_unit WHERE id = $1", [.int(attempt.unitID)]).first
    }

    private func placement(_ unit: UnitRecord) -> (bucket: UnitBucket, time: Int64?) {
        unit.placement(at: materializedAt)
    }

    func insertUnit(_ unit: UnitRecord) throws -> UnitRecord {
        keysInserted.insert(UnitKeyRef(spec: unit.specID, key: unit.key.octets))
        unitsInserted(into: unit.specID)
        writeCount += 1
        let (bucket, time) = placement(unit)
        let specLock = lockSpecForInserts(unit.specID)
        let rows = try channel.query(Self.insertUnitSQL, Self.insertValues(unit, bucket: bucket, time: time))
        try checkSpecLock(specLock, spec: unit.specID)
        var record = unit
        record.id = try rows.first?.int64(0) ?? 0
        adjust(unit.specID, bucket, by: 1)
        knownBuckets[record.id] = bucket
        return record
    }

    private func currentBucket(of unit: UnitRecord) throws -> UnitBucket {
        if let known = knownBuckets[unit.id] { return known }
        let rows = try channel.query("SELECT bucket FROM work_unit WHERE id = $1", [.int(unit.id)])
        guard let row = rows.first else { throw StorageError.corrupt("no unit \(unit.id)") }
        return UnitBucket(rawValue: UInt8(try row.int16(0))) ?? .ready
    }

    func updateUnit(_ unit: UnitRecord) throws {
        unitsWritten.insert(unit.id)
        writeCount += 1
        let old = try currentBucket(of: unit)
        let (bucket, time) = placement(unit)
        reserveMayBeStale(unit, movedTo: bucket)
        // Only a unit entering or leaving the ready bucket can change the spec's best ready priority.
        if old == .ready || bucket == .ready { readyUnitsChanged(in: unit.specID) }
        let data = StoredData.bytesToWrite(for: unit)
        // Nothing waits for the update: the next statement travels behind it (and reports its failure).
        try channel.sendDeferred(
            """
            UPDATE work_unit SET key_kind = $2, data = coalesce($3, data), priority = $4, not_before = $5,
                state = $6, bucket = $7, time = $8, latest_attempt_id = $9, attempt_count = $10,
                retry_count_base = $11, data_crc = CASE WHEN $3 IS NULL THEN data_crc ELSE $12 END,
                original_data = $13 WHERE id = $1
            """,
            [
                .int(unit.id), .bool(unit.key.isText), .bytes(data?.bytes), .double(unit.priority),
                .int(unit.notBefore), .int16(Int16(unit.state.rawValue)), .int16(Int16(bucket.rawValue)), .int(time),
                .int(unit.latestAttemptID), .int(unit.attemptCount), .int(unit.retryCountBase),
                .int(data?.checksum), .bytes(unit.originalData?.bytes),
            ], touching: .init(table: .unit, id: unit.id))
        if old != bucket {
            adjust(unit.specID, old, by: -1)
            adjust(unit.specID, bucket, by: 1)
        }
        knownBuckets[unit.id] = bucket
    }

    func deleteUnit(_ unit: UnitRecord) throws {
        unitsWritten.insert(unit.id)
        reserveMayBeStale(unit, movedTo: nil)
        writeCount += 1
        latestAttempts.removeAll()
        readyUnitsChanged(in: unit.specID)
        let rows = try channel.query("DELETE FROM work_unit WHERE id = $1 RETURNING bucket", [.int(unit.id)])
        if let row = rows.first { adjust(unit.specID, UnitBucket(rawValue: UInt8(try row.int16(0))) ?? .ready, by: -1) }
        knownBuckets[unit.id] = nil
    }

    func unitCounts(spec: Int64) throws -> UnitCounts {
        if specRows[spec] == nil { _ = try self.spec(id: spec) }
        var counts = specRows[spec]?.counts ?? UnitCounts()
        if let delta = deltas[spec] {
            for bucket in UnitBucket.allCases { counts[bucket] += delta[bucket] }
        }
        return counts
    }

    func readyUnits(spec: Int64, limit: Int) throws -> [UnitRecord] {
        if var reserve = grantReserves[spec] {
            grantReserves[spec] = nil
            if reserve.covers(limit) {
                let taken = reserve.units.prefix(limit)
                reserve.units = reserve.units.dropFirst(taken.count)
                grantReserves[spec] = reserve
                // Still ready: locked by this transaction since the read, and none of its writes touched them.
                for unit in taken { knownBuckets[unit.id] = .ready }
                return Array(taken)
            }
        }
        // Rows a concurrent grant holds are skipped rather than waited for: they are about to be granted. The
        // limit is written into the statement: a generic plan assumes a `LIMIT $n` keeps a tenth of the rows, and
        // for a spec holding most of the table it then chose a sequential scan and a sort over an index walk.
        // (One prepared statement per distinct batch size; workers use a few.)
        //
        // Each row also reserves the id of the attempt that will grant it, so that the attempt's insert need not
        // wait for an answer (``insertAttempt(_:for:)``): a grant waits once less. A reserved id that is
        // not used (the unit is not granted after all) leaves a gap; ids only ever need to increase.
        let read = sendReserveRead(spec: spec, limit: limit)
        try keepReserve(spec: spec, asked: read.asked, rows: channel.finishAfterDeferred(read.answer))
        return try readyUnits(spec: spec, limit: limit)
    }

    /// The best `limit` ready units of spec `$1`, locked, each with the id reserved for the attempt that will
    /// grant it.
    static func readyUnitsSQL(limit: Int) -> String {
        """
        SELECT \(StoredColumns.unit), nextval('attempt_id_seq') FROM work_unit WHERE spec_id = $1 AND bucket = \(UnitBucket.ready.sql)
        ORDER BY \(UnitOrder.priority.sql()) LIMIT \(limit) FOR UPDATE SKIP LOCKED
        """
    }

    private func readyUnits(from rows: [SQLRow]) throws -> [UnitRecord] {
        try rows.map { row in
            let unit = try readUnit(row)
            reservedAttemptIDs[unit.id] = try row.int64(Self.unitColumnCount)
            return unit
        }
    }

    /// Attempt ids reserved by ``readyUnits(spec:limit:)`` for the units it returned, by unit id.
    private var reservedAttemptIDs: [Int64: Int64] = [:]

    func topReadyPriority(spec: Int64) throws -> Double? {
        // A reserve's next unit is the best ready one (writes that could put another before it drop the reserve).
        if let reserve = grantReserves[spec] {
            if let next = reserve.units.first { return next.priority }
            if reserve.complete { return nil }
        }
        if let known = readyTops[spec] { return known }
        // The ready units read with BEGIN for the grant answer it, unless this transaction has since written to
        // the spec's units or to those units.
        if let speculative = speculativeGrant, speculative.spec == spec, !unitsWrittenWholesale,
            !specsGivenReadyUnits.contains(spec)
        {
            let ready = try channel.finish(speculative.ready)
            if try !ready.contains(where: { unitsWritten.contains(try $0.int64(0)) }) {
                return try ready.first?.double(Self.unitPriorityColumn)
            }
        }
        let rows = try channel.query(
            "SELECT priority FROM work_unit WHERE spec_id = $1 AND bucket = \(UnitBucket.ready.sql) ORDER BY \(UnitOrder.priority.sql()) LIMIT 1",
            [.int(spec)])
        return try rows.first?.double(0)
    }

    func units(
        spec: Int64, buckets: Set<UnitBucket>?, startKey: Identifier?, order: UnitOrder, limit: Int
    ) throws
        -> [UnitRecord]
    {
        guard limit > 0 else { return [] }
        var sql = "SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = $1"
        var values: [SQLValue] = [.int(spec)]
        if let buckets {
            guard !buckets.isEmpty else { return [] }
            sql += " AND bucket IN (\(UnitBucket.sqlList(buckets)))"
        }
        if let startKey {
            values.append(.bytes(startKey.octets))
            sql += " AND key >= $\(values.count)"
        }
        sql += " ORDER BY \(order.sql())"
        // A literal limit, as in `readyUnits`.
        if limit < Int.max { sql += " LIMIT \(limit)" }
        return try units(sql, values)
    }

    func completedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        try units(
            Self.completedUnitsSQL(bucket, newestFirst: false), [.int(spec), .int(Int64(min(limit, Int(Int64.max))))])
    }

    func newestCompletedUnits(spec: Int64, bucket: UnitBucket, limit: Int) throws -> [UnitRecord] {
        try units(
            Self.completedUnitsSQL(bucket, newestFirst: true), [.int(spec), .int(Int64(min(limit, Int(Int64.max))))])
    }

    /// Up to `$2` units of spec `$1` in a completed `bucket`, by completion time. The bucket is written into the
    /// text: `work_unit_completed` indexes only the completed buckets (``completedBuckets``).
    static func completedUnitsSQL(_ bucket: UnitBucket, newestFirst: Bool) -> String {
        """
        SELECT \(StoredColumns.unit) FROM work_unit WHERE spec_id = $1 AND bucket = \(bucket.sql)
        ORDER BY \(newestFirst ? "time DESC, key DESC" : "time, key") LIMIT $2
        """
    }

    func deleteUnits(spec: Int64, buckets: Set<UnitBucket>?) throws -> Int {
        unitsWrittenWholesale = true
        dropGrantReserves()
        writeCount += 1
        latestAttempts.removeAll()
        readyTops.removeAll()
        let selected = buckets ?? Set(UnitBucket.allCases)
        guard !selected.isEmpty else { return 0 }
        let list = UnitBucket.sqlList(selected)
        let rows = try channel.query(
            """
            WITH gone AS (DELETE FROM work_unit WHERE spec_id = $1 AND bucket IN (\(list)) RETURNING bucket)
            SELECT bucket, count(*)::bigint FROM gone GROUP BY bucket
            """, [.int(spec)])
        var total = 0
        for row in rows {
            let count = try row.int(1)
            adjust(spec, UnitBucket(rawValue: UInt8(try row.int16(0))) ?? .ready, by: -count)
            total += count
        }
        knownBuckets.removeAll()
        return total
    }

    // MARK: - Attempts

    /// The attempt whose columns (``StoredColumns.attempt``) start at column `first` of `row`.
    private func readAttempt(_ row: SQLRow, from first: Int = 0) throws -> AttemptRecord {
        let id = try row.int64(first)
        return AttemptRecord(
            id: id, unitID: try row.int64(first + 1), specID: try row.int64(first + 2),
            namespaceID: try row.int64(first + 3), worker: try row.identifier(first + 4, kind: first + 5),
            startTime: try row.int64(first + 6), expirationTime: try row.int64(first + 7),
            endTime: try row.optionalInt64(first + 8),
            status: AttemptStatus(rawValue: UInt8(try row.int16(first + 9))) ?? .pending,
            data: damage.attemptData(try row.bytes(first + 10), attempt: id))
    }

    func attempt(id: Int64) throws -> AttemptRecord? {
        try channel.query("SELECT \(StoredColumns.attempt) FROM attempt WHERE id = $1", [.int(id)]).first.map {
            try readAttempt($0)
        }
    }

    func attemptIDWasIssued(_ id: Int64) throws -> Bool {
        // The id sequence never goes back; ids reserved ahead for grants count as issued.
        guard let row = try channel.query("SELECT last_value, is_called FROM attempt_id_seq").first else {
            return false
        }
        let last = try row.int64(0)
        let lastWasUsed = try row.bool(1)
        return id > 0 && (lastWasUsed ? id <= last : id < last)
    }

    func latestAttempt(of unit: UnitRecord) throws -> AttemptRecord? {
        guard let id = unit.latestAttemptID else { return nil }
        if let known = latestAttempts[id] { return known }
        return try attempt(id: id)
    }

    func attempts(of unit: UnitRecord) throws -> [AttemptRecord] {
        try channel.query(
            "SELECT \(StoredColumns.attempt) FROM attempt WHERE unit_id = $1 ORDER BY id", [.int(unit.id)]
        )
        .map { try readAttempt($0) }
    }

    func insertAttempt(_ attempt: AttemptRecord, for unit: UnitRecord) throws -> AttemptRecord {
        unitsWritten.insert(unit.id)
        writeCount += 1
        let values: [SQLValue] = [
            .int(unit.id), .int(attempt.specID), .int(attempt.namespaceID), .bytes(attempt.worker.octets),
            .bool(attempt.worker.isText), .int(attempt.startTime), .int(attempt.expirationTime),
            .int(attempt.endTime), .int16(Int16(attempt.status.rawValue)), .bytes(attempt.data.bytes),
        ]
        var record = attempt
        record.unitID = unit.id
        if let reserved = reservedAttemptIDs.removeValue(forKey: unit.id) {
            // Nothing waits: the id is known, and the next statement travels behind the insert.
            try channel.sendDeferred(
                "INSERT INTO attempt (\(StoredColumns.attempt)) VALUES ($11, \(Self.attemptValueList))",
                values + [.int(reserved)], touching: .init(table: .attempt, id: reserved))
            record.id = reserved
            return record
        }
        let rows = try channel.query(
            "INSERT INTO attempt (\(StoredColumns.attemptValues)) VALUES (\(Self.attemptValueList)) RETURNING id",
            values)
        record.id = try rows.first?.int64(0) ?? 0
        return record
    }

    /// The placeholders of an attempt row after its id, in ``StoredColumns.attempt`` order.
    static let attemptValueList = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10"

    func updateAttempt(_ attempt: AttemptRecord) throws {
        unitsWritten.insert(attempt.unitID)
        writeCount += 1
        if latestAttempts[attempt.id] != nil { latestAttempts[attempt.id] = attempt }
        try channel.sendDeferred(
            "UPDATE attempt SET expiration_time = $2, end_time = $3, status = $4, data = $5 WHERE id = $1",
            [
                .int(attempt.id), .int(attempt.expirationTime), .int(attempt.endTime),
                .int16(Int16(attempt.status.rawValue)), .bytes(attempt.data.bytes),
            ], touching: .init(table: .attempt, id: attempt.id))
    }

    func attempts(namespace: Int64, worker: Identifier, statuses: Set<AttemptStatus>?) throws -> [AttemptRecord] {
        var sql = "SELECT \(StoredColumns.attempt) FROM attempt WHERE namespace_id = $1 AND worker = $2"
        if let statuses {
            guard !statuses.isEmpty else { return [] }
            sql += " AND status IN (\(AttemptStatus.sqlList(statuses)))"
        }
        sql += " ORDER BY id"
        return try channel.query(sql, [.int(namespace), .bytes(worker.octets)]).map { try readAttempt($0) }
    }

    // MARK: - Workers

    private func readWorker(_ row: SQLRow) throws -> WorkerRecord {
        let name = try row.identifier(1, kind: 2)
        return WorkerRecord(
            namespaceID: try row.int64(0), id: name, active: try row.bool(3),
            mode: damage.workerMode(try row.bytes(4), worker: name),
            data: damage.workerData(try row.bytes(5), worker: name),
            parent: try row.optionalIdentifier(6, kind: 7), firstSeen: try row.int64(8),
            lastHeartbeat: try row.int64(9), expiration: try row.int64(10))
    }

    func worker(namespace: Int64, id: Identifier) throws -> WorkerRecord? {
        let rows =
            try takeReadAhead(.worker(namespace, id.octets))
            ?? channel.query(Self.workerSQL, [.int(namespace), .bytes(id.octets)])
        return try rows.first.map(readWorker)
    }

    static let workerSQL = "SELECT \(StoredColumns.worker) FROM worker WHERE namespace_id = $1 AND name = $2"

    /// Workers this transaction wrote, and whether it deleted workers wholesale: a worker read ahead for a later
    /// operation of the batch is then read again.
    private var workersWritten: Set<WorkerKey> = []
    private var workersWrittenWholesale = false

    private struct WorkerKey: Hashable {
        let namespace: Int64
        let id: [UInt8]
    }

    // Worker writes are deferred: nothing needs their answer, and a failure fails the transaction at its next
    // round trip or COMMIT, as for unit writes.
    func saveWorker(_ worker: WorkerRecord) throws {
        writeCount += 1
        workersWritten.insert(WorkerKey(namespace: worker.namespaceID, id: worker.id.octets))
        try channel.sendDeferred(
            """
            INSERT INTO worker (\(StoredColumns.worker)) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (namespace_id, name) DO UPDATE SET name_kind = EXCLUDED.name_kind, active = EXCLUDED.active,
                mode = EXCLUDED.mode, data = EXCLUDED.data, parent = EXCLUDED.parent,
                parent_kind = EXCLUDED.parent_kind, first_seen = EXCLUDED.first_seen,
                last_heartbeat = EXCLUDED.last_heartbeat, expiration = EXCLUDED.expiration
            """,
            [
                .int(worker.namespaceID), .bytes(worker.id.octets), .bool(worker.id.isText), .bool(worker.active),
                .bytes(worker.mode.bytes), .bytes(worker.data.bytes), .bytes(worker.parent?.octets),
                .bool(worker.parent?.isText), .int(worker.firstSeen), .int(worker.lastHeartbeat),
                .int(worker.expiration),
            ])
    }

    func deleteWorker(namespace: Int64, id: Identifier, ifLastHeartbeat: Timestamp?) throws -> Bool {
        writeCount += 1
        workersWritten.insert(WorkerKey(namespace: namespace, id: id.octets))
        guard let ifLastHeartbeat else {
            try channel.sendDeferred(
                "DELETE FROM worker WHERE namespace_id = $1 AND name = $2", [.int(namespace), .bytes(id.octets)])
            return true
        }
        // Under READ COMMITTED the condition is re-checked on the row as a concurrent heartbeat left it.
        return try !channel.query(
            "DELETE FROM worker WHERE namespace_id = $1 AND name = $2 AND last_heartbeat = $3 RETURNING 1",
            [.int(namespace), .bytes(id.octets), .int(ifLastHeartbeat)]
        ).isEmpty
    }

    func workers(namespace: Int64) throws -> [WorkerRecord] {
        try channel.query(
            "SELECT \(StoredColumns.worker) FROM worker WHERE namespace_id = $1 ORDER BY name", [.int(namespace)]
        ).map(readWorker)
    }

    // MARK: - Locks

    private func readLock(_ row: SQLRow) throws -> LockRecord {
        LockRecord(
            namespaceID: try row.int64(0), pathKey: try row.bytes(1),
            path: damage.lockPath(try row.bytes(2)), owner: try row.identifier(3, kind: 4),
            deadline: try row.int64(5))
    }

    /// Every lock-service operation of a namespace holds this advisory lock until its transaction ends, so
    /// conflicting locks taken through different daemons are decided one at a time (MD5).
    func serializeLockService(namespace: Int64) throws {
        try channel.query(
            "SELECT pg_advisory_xact_lock($1)", [.int(Self.lockServiceKey | (namespace & 0xffff_ffff))])
    }

    /// High half of the lock-service advisory keys ("coor").
    static let lockServiceKey: Int64 = 0x636f_6f72 << 32

    func conflictingLocks(namespace: Int64, pathKey: [UInt8]) throws -> [LockRecord] {
        var result: [LockRecord] = []
        for end in LockPath.labelBoundaries(of: pathKey) {
            if let lock = try lock(namespace: namespace, pathKey: Array(pathKey[..<end])) { result.append(lock) }
        }
        result += try channel.query(
            "SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = $1 AND path_key > $2 AND path_key < $3",
            [.int(namespace), .bytes(pathKey), .bytes(LockPath.successor(of: pathKey))]
        ).map(readLock)
        return result
    }

    func lock(namespace: Int64, pathKey: [UInt8]) throws -> LockRecord? {
        try channel.query(
            "SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = $1 AND path_key = $2",
            [.int(namespace), .bytes(pathKey)]
        ).first.map(readLock)
    }

    func saveLock(_ lock: LockRecord) throws {
        writeCount += 1
        try channel.query(
            """
            INSERT INTO held_lock (\(StoredColumns.lock)) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (namespace_id, path_key) DO UPDATE SET path = EXCLUDED.path, owner = EXCLUDED.owner,
                owner_kind = EXCLUDED.owner_kind, deadline = EXCLUDED.deadline
            """,
            [
                .int(lock.namespaceID), .bytes(lock.pathKey), .bytes(lock.path.bytes), .bytes(lock.owner.octets),
                .bool(lock.owner.isText), .int(lock.deadline),
            ])
    }

    func deleteLock(namespace: Int64, pathKey: [UInt8]) throws {
        writeCount += 1
        try channel.query(
            "DELETE FROM held_lock WHERE namespace_id = $1 AND path_key = $2", [.int(namespace), .bytes(pathKey)])
    }

    func locks(namespace: Int64, pathKeyPrefix: [UInt8]?) throws -> [LockRecord] {
        if let prefix = pathKeyPrefix {
            return try channel.query(
                """
                SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = $1 AND path_key >= $2 AND path_key < $3
                ORDER BY path_key
                """, [.int(namespace), .bytes(prefix), .bytes(LockPath.successor(of: prefix))]
            ).map(readLock)
        }
        return try channel.query(
            "SELECT \(StoredColumns.lock) FROM held_lock WHERE namespace_id = $1 ORDER BY path_key", [.int(namespace)]
        ).map(readLock)
    }
}

/// A unit key as stored: its octets (keys are unique by octets within a spec, whatever their string kind).
struct PrefetchKey: Hashable {
    let octets: [UInt8]
    init(_ key: Identifier) { octets = key.octets }
}

extension Int {
    fileprivate var roundedUpToPowerOfTwo: Int {
        self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount)
    }
}
