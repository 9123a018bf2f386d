import CoordinateEngine
import Foundation

/// The PostgreSQL schema and its forward migrations (storage.md §4–§5). Migrations run under a session advisory
/// lock so that daemons starting together migrate exactly once.
enum PostgresSchema {
    static let currentVersion = 5

    /// Advisory lock key of migrations ("coordmig" as a number).
    static let migrationLockKey: Int64 = 0x636f_6f72_646d_6967

    static let migrations: [(version: Int, sql: String)] = [
        (
            1,
            """
            CREATE TABLE namespace (
                id BIGSERIAL PRIMARY KEY,
                name BYTEA NOT NULL UNIQUE,
                name_kind BOOLEAN NOT NULL,
                generation BIGINT NOT NULL DEFAULT 0
            );
            CREATE TABLE work_spec (
                id BIGSERIAL PRIMARY KEY,
                namespace_id BIGINT NOT NULL REFERENCES namespace(id) ON DELETE CASCADE,
                name BYTEA NOT NULL,
                name_kind BOOLEAN NOT NULL,
                data BYTEA NOT NULL,
                overrides BYTEA,
                next_continuous BIGINT,
                archived_finished BIGINT NOT NULL DEFAULT 0,
                archived_failed BIGINT NOT NULL DEFAULT 0,
                count_ready BIGINT NOT NULL DEFAULT 0,
                count_delayed BIGINT NOT NULL DEFAULT 0,
                count_pending BIGINT NOT NULL DEFAULT 0,
                count_finished BIGINT NOT NULL DEFAULT 0,
                count_failed BIGINT NOT NULL DEFAULT 0,
                UNIQUE (namespace_id, name)
            );
            CREATE TABLE work_unit (
                id BIGSERIAL PRIMARY KEY,
                spec_id BIGINT NOT NULL REFERENCES work_spec(id) ON DELETE CASCADE,
                key BYTEA NOT NULL,
                key_kind BOOLEAN NOT NULL,
                data BYTEA NOT NULL,
                priority DOUBLE PRECISION NOT NULL,
                not_before BIGINT,
                state SMALLINT NOT NULL,
                bucket SMALLINT NOT NULL,
                time BIGINT,
                latest_attempt_id BIGINT,
                attempt_count BIGINT NOT NULL,
                retry_count_base BIGINT NOT NULL,
                UNIQUE (spec_id, key)
            );
            CREATE INDEX work_unit_order ON work_unit (spec_id, bucket, \(UnitOrder.priority.sql()));
            CREATE INDEX work_unit_completed ON work_unit (spec_id, bucket, time, key);
            CREATE INDEX work_unit_deadline ON work_unit (bucket, time) WHERE bucket IN (\(UnitBucket.sqlList([.delayed, .pending])));
            CREATE TABLE attempt (
                id BIGSERIAL PRIMARY KEY,
                unit_id BIGINT NOT NULL REFERENCES work_unit(id) ON DELETE CASCADE,
                spec_id BIGINT NOT NULL,
                namespace_id BIGINT NOT NULL,
                worker BYTEA NOT NULL,
                worker_kind BOOLEAN NOT NULL,
                start_time BIGINT NOT NULL,
                expiration_time BIGINT NOT NULL,
                end_time BIGINT,
                status SMALLINT NOT NULL,
                data BYTEA NOT NULL
            );
            CREATE INDEX attempt_unit ON attempt (unit_id, id);
            CREATE INDEX attempt_worker ON attempt (namespace_id, worker, status);
            CREATE TABLE worker (
                namespace_id BIGINT NOT NULL REFERENCES namespace(id) ON DELETE CASCADE,
                name BYTEA NOT NULL,
                name_kind BOOLEAN NOT NULL,
                active BOOLEAN NOT NULL,
                mode BYTEA NOT NULL,
                data BYTEA NOT NULL,
                parent BYTEA,
                parent_kind BOOLEAN,
                first_seen BIGINT NOT NULL,
                last_heartbeat BIGINT NOT NULL,
                expiration BIGINT NOT NULL,
                PRIMARY KEY (namespace_id, name)
            );
            CREATE TABLE held_lock (
                namespace_id BIGINT NOT NULL REFERENCES namespace(id) ON DELETE CASCADE,
                path_key BYTEA NOT NULL,
                path BYTEA NOT NULL,
                owner BYTEA NOT NULL,
                owner_kind BOOLEAN NOT NULL,
                deadline BIGINT NOT NULL,
                PRIMARY KEY (namespace_id, path_key)
            );
            CREATE INDEX held_lock_deadline ON held_lock (deadline);
            """
        ),
        (
            // Unit counters move off the spec rows into sharded rows: every finish and grant used to update the
            // one spec row, so all writers of a spec queued behind each other's commit. Each transaction now adds
            // its deltas to one of 32 rows per spec picked at random; readers sum them.
            2,
            """
            CREATE TABLE spec_count (
                spec_id BIGINT NOT NULL REFERENCES work_spec(id) ON DELETE CASCADE,
                shard SMALLINT NOT NULL,
                ready BIGINT NOT NULL DEFAULT 0,
                delayed BIGINT NOT NULL DEFAULT 0,
                pending BIGINT NOT NULL DEFAULT 0,
                finished BIGINT NOT NULL DEFAULT 0,
                failed BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (spec_id, shard)
            );
            INSERT INTO spec_count (spec_id, shard, ready, delayed, pending, finished, failed)
                SELECT id, 0, count_ready, count_delayed, count_pending, count_finished, count_failed FROM work_spec;
            ALTER TABLE work_spec DROP COLUMN count_ready, DROP COLUMN count_delayed, DROP COLUMN count_pending,
                DROP COLUMN count_finished, DROP COLUMN count_failed
            """
        ),
        (
            // A CRC-32C of each unit's data (StoredData). Units written before it have none and are checked for
            // well-formed CBOR only. Adding a nullable column rewrites nothing.
            3,
            "ALTER TABLE work_unit ADD COLUMN data_crc BIGINT"
        ),
        (
            // Cheaper unit inserts and moves. The foreign key of `work_unit.spec_id` checked every inserted unit
            // with a query of its own (a quarter of the server's time in a bulk add); an inserting transaction
            // now locks the spec row once, and a spec's deletion deletes its units itself
            // (PostgresSession.lockSpecForInserts). `work_unit_completed` serves only the completed buckets, so
            // adding, granting or expiring a unit no longer writes an entry there.
            4,
            """
            ALTER TABLE work_unit DROP CONSTRAINT work_unit_spec_id_fkey;
            DROP INDEX work_unit_completed;
            CREATE INDEX work_unit_completed ON work_unit (spec_id, bucket, time, key)
                WHERE bucket IN (\(PostgresSession.completedBuckets))
            """
        ),
        (
            // A unit's own data while an attempt's data stands in for it (UnitRecord.originalData); NULL for
            // every unit written before. Adding a nullable column rewrites nothing.
            5,
            "ALTER TABLE work_unit ADD COLUMN original_data bytea"
        ),
    ]

    enum MigrationError: Error, CustomStringConvertible, Equatable {
        case newerThanSupported(found: Int, supported: Int)

        var description: String {
            switch self {
            case .newerThanSupported(let found, let supported):
                return "database schema version \(found) is newer than supported version \(supported)"
            }
        }
    }

    /// A SQL identifier, double-quoted.
    static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// The schema version found in `schema` (0 when the schema or its version table does not exist yet).
    static func version(_ channel: SQLChannel, schema: String) throws -> Int {
        let exists = try channel.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'schema_version'",
            [.text(schema)])
        guard try exists.first?.int64(0) ?? 0 > 0 else { return 0 }
        let rows = try channel.query("SELECT coalesce(max(version), 0)::bigint FROM schema_version")
        return Int(try rows.first?.int64(0) ?? 0)
    }

    /// Applies every missing migration under the migration advisory lock, each in its own transaction.
    static func migrate(_ channel: SQLChannel, schema: String, now: Int64) throws {
        try channel.query("SELECT pg_advisory_lock($1)", [.int(migrationLockKey)])
        defer { _ = try? channel.query("SELECT pg_advisory_unlock($1)", [.int(migrationLockKey)]) }
        try channel.simple("CREATE SCHEMA IF NOT EXISTS \(quoted(schema))")
        let found = try version(channel, schema: schema)
        if found > currentVersion { throw MigrationError.newerThanSupported(found: found, supported: currentVersion) }
        for migration in migrations where migration.version > found {
            try channel.simple("BEGIN")
            do {
                try channel.simple(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
                )
                // One statement per query: the extended protocol takes no batches.
                for statement in migration.sql.split(separator: ";") {
                    let text = statement.trimmingCharacters(in: .whitespacesAndNewlines)
                    if !text.isEmpty { try channel.simple(text) }
                }
                try channel.query(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    [.int(Int64(migration.version)), .int(now)])
                try channel.simple("COMMIT")
            } catch {
                _ = try? channel.simple("ROLLBACK")
                throw error
            }
        }
    }
}
