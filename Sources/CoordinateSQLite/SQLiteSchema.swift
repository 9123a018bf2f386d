import CoordinateEngine
import GRDB

/// The SQLite schema and its forward migrations (storage.md §3.4, §5). Each release knows the versions it can run
/// on; a database with a newer version is left untouched.
enum SQLiteSchema {
    /// The newest schema version this build understands.
    static let currentVersion = 3

    /// Migrations by target version, applied in order, each in its own transaction.
    static let migrations: [(version: Int, sql: String)] = [
        (
            1,
            """
            CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY,
                applied_at INTEGER NOT NULL
            );
            CREATE TABLE namespace (
                id INTEGER PRIMARY KEY,
                name BLOB NOT NULL UNIQUE,
                name_kind INTEGER NOT NULL
            );
            CREATE TABLE work_spec (
                id INTEGER PRIMARY KEY,
                namespace_id INTEGER NOT NULL REFERENCES namespace(id) ON DELETE CASCADE,
                name BLOB NOT NULL,
                name_kind INTEGER NOT NULL,
                data BLOB NOT NULL,
                overrides BLOB,
                next_continuous INTEGER,
                archived_finished INTEGER NOT NULL DEFAULT 0,
                archived_failed INTEGER NOT NULL DEFAULT 0,
                count_ready INTEGER NOT NULL DEFAULT 0,
                count_delayed INTEGER NOT NULL DEFAULT 0,
                count_pending INTEGER NOT NULL DEFAULT 0,
                count_finished INTEGER NOT NULL DEFAULT 0,
                count_failed INTEGER NOT NULL DEFAULT 0,
                UNIQUE (namespace_id, name)
            );
            CREATE TABLE work_unit (
                id INTEGER PRIMARY KEY,
                spec_id INTEGER NOT NULL REFERENCES work_spec(id) ON DELETE CASCADE,
                key BLOB NOT NULL,
                key_kind INTEGER NOT NULL,
                data BLOB NOT NULL,
                priority REAL NOT NULL,
                not_before INTEGER,
                state INTEGER NOT NULL,
                bucket INTEGER NOT NULL,
                time INTEGER,
                latest_attempt_id INTEGER,
                attempt_count INTEGER NOT NULL,
                retry_count_base INTEGER NOT NULL,
                UNIQUE (spec_id, key)
            );
            CREATE INDEX work_unit_order ON work_unit (spec_id, bucket, \(UnitOrder.priority.sql()));
            CREATE INDEX work_unit_completed ON work_unit (spec_id, bucket, time, key);
            CREATE INDEX work_unit_deadline ON work_unit (bucket, time);
            CREATE TABLE attempt (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                unit_id INTEGER NOT NULL REFERENCES work_unit(id) ON DELETE CASCADE,
                spec_id INTEGER NOT NULL,
                namespace_id INTEGER NOT NULL,
                worker BLOB NOT NULL,
                worker_kind INTEGER NOT NULL,
                start_time INTEGER NOT NULL,
                expiration_time INTEGER NOT NULL,
                end_time INTEGER,
                status INTEGER NOT NULL,
                data BLOB NOT NULL
            );
            CREATE INDEX attempt_unit ON attempt (unit_id, id);
            CREATE INDEX attempt_worker ON attempt (namespace_id, worker, status);
            CREATE TABLE worker (
                namespace_id INTEGER NOT NULL REFERENCES namespace(id) ON DELETE CASCADE,
                name BLOB NOT NULL,
                name_kind INTEGER NOT NULL,
                active INTEGER NOT NULL,
                mode BLOB NOT NULL,
                data BLOB NOT NULL,
                parent BLOB,
                parent_kind INTEGER,
                first_seen INTEGER NOT NULL,
                last_heartbeat INTEGER NOT NULL,
                expiration INTEGER NOT NULL,
                PRIMARY KEY (namespace_id, name)
            );
            CREATE TABLE held_lock (
                namespace_id INTEGER NOT NULL REFERENCES namespace(id) ON DELETE CASCADE,
                path_key BLOB NOT NULL,
                path BLOB NOT NULL,
                owner BLOB NOT NULL,
                owner_kind INTEGER NOT NULL,
                deadline INTEGER NOT NULL,
                PRIMARY KEY (namespace_id, path_key)
            );
            CREATE INDEX held_lock_deadline ON held_lock (deadline);
            """
        ),
        (
            // A CRC-32C of each unit's data (StoredData): bytes overwritten inside a row pass SQLite's own
            // integrity check. Units written before it have none and are checked for well-formed CBOR only.
            2,
            "ALTER TABLE work_unit ADD COLUMN data_crc INTEGER"
        ),
        (
            // A unit's own data while an attempt's data stands in for it (UnitRecord.originalData); NULL for
            // every unit written before.
            3,
            "ALTER TABLE work_unit ADD COLUMN original_data BLOB"
        ),
    ]

    enum MigrationError: Error, CustomStringConvertible {
        case newerThanSupported(found: Int, supported: Int)

        var description: String {
            switch self {
            case .newerThanSupported(let found, let supported):
                return "database schema version \(found) is newer than supported version \(supported)"
            }
        }
    }

    /// The schema version recorded in the database (0 for an empty database).
    static func version(of database: Database) throws -> Int {
        let exists = try Bool.fetchOne(
            database, sql: "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        guard exists == true else { return 0 }
        return try Int.fetchOne(database, sql: "SELECT max(version) FROM schema_version") ?? 0
    }

    /// Applies every missing migration in order, each in its own transaction. Refuses a newer schema without
    /// touching it. Returns whether the database was created from scratch.
    @discardableResult
    static func migrate(_ database: Database, now: Int64) throws -> Bool {
        let found = try version(of: database)
        if found > currentVersion { throw MigrationError.newerThanSupported(found: found, supported: currentVersion) }
        for migration in migrations where migration.version > found {
            try database.inTransaction(.immediate) {
                try database.execute(sql: migration.sql)
                try database.execute(
                    sql: "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    arguments: [migration.version, now])
                return .commit
            }
        }
        return found == 0
    }
}
