import CBOR
import CoordinateEngine
import CoordinateSQLite
import Foundation
import TestSupport
import Testing

/// Whether this environment lets the tests mount a small tmpfs (root in a privileged container or VM).
func canMount() async throws -> Bool {
    let probe = TestBuild.temporaryDirectory("coordinate-mount-probe")
    defer { try? FileManager.default.removeItem(atPath: probe) }
    guard try await shell("mount -t tmpfs -o size=64k tmpfs \(probe)") == 0 else { return false }
    try await shell("umount \(probe)")
    return true
}

func storageError(_ response: CBORMap) -> String? { response.errorMessage }

/// Storage failures must give clear errors and unavailability, never a crash loop or corruption
/// (storage.md §6; FAIL-3, FAIL-4, FAIL-5, MIG-1; the lock-file rule of §3.2).
@Suite("SQLite failure handling", .serialized)
struct FailureTests {
    @Test("a second daemon on the same data directory refuses to start")
    func secondDaemonRefused() async throws {
        let directory = temporaryDataDirectory()
        try await withDaemons { group in
            let first = try await group.startSQLite(directory)
            let result = try await runExecutable(
                "coordinated", ["--storage", "sqlite", "--data-dir", directory, "--port", "0", "--http-port", "0"])
            #expect(result.status == 2)
            #expect(
                result.stderr.hasSuffix(
                    "coordinated: database \(directory)/coordinate.sqlite3 is in use by another coordinated\n"))
            // The first daemon is unaffected.
            let connection = try await first.connect()
            #expect(try await connection.result("list_work_specs", [cbormap([])]) == .tuple([[], .null]))
        }
    }

    @Test("a corrupt database file: the daemon stays up, unavailable, and leaves the file byte-identical")
    func corruptFile() async throws {
        let directory = temporaryDataDirectory()
        let path = directory + "/coordinate.sqlite3"
        var garbage = [UInt8](repeating: 0, count: 8192)
        for index in garbage.indices { garbage[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(garbage)))
        try await withDaemons { group in
            // Storage "ready" here means it stopped initialising: it gave up on the file.
            let daemon = try await group.startSQLite(directory, http: true)
            let message = try await daemon.connect().call("list_work_specs", [cbormap([])]).errorMessage
            #expect(
                message?.hasPrefix("storage unavailable: cannot open database \(path):") == true, "\(message ?? "nil")")
            #expect(daemon.isRunning)
            // /healthz reports the same, and REST answers 503 instead of touching the file.
            let health = try await daemon.http.request("GET", "/healthz")
            #expect(health.status == 503)
            #expect(health.text.hasPrefix(#"{"status":"unavailable","storage":"sqlite","error":"cannot open database"#))
            let rest = try await daemon.http.request("GET", "/namespace/-/work_spec")
            #expect(rest.status == 503)
            #expect(rest.text.contains("ErrStorageUnavailable"))
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(garbage))
        }
    }

    @Test("a database file truncated to zero bytes, or without an SQLite header, is damage: refused, never recreated")
    func truncatedFile() async throws {
        let directory = temporaryDataDirectory()
        let path = directory + "/coordinate.sqlite3"
        try await withDaemons { group in
            let daemon = try await group.startSQLite(directory)
            _ = try await daemon.connect().result("set_work_spec", [cbormap([("name", "s")])])
            await daemon.stop()
            for damage in [Data(), Data(repeating: 0, count: 4096)] {
                #expect(FileManager.default.createFile(atPath: path, contents: damage))
                let damaged = try await group.startSQLite(directory, http: true)
                let message = try await damaged.connect().call("list_work_specs", [cbormap([])]).errorMessage
                #expect(
                    message?.hasPrefix("storage unavailable: cannot open database \(path): the file ") == true,
                    "\(message ?? "nil")")
                #expect(message?.contains("refusing to start a new database in its place") == true)
                #expect(try await damaged.http.request("GET", "/healthz").status == 503)
                #expect(
                    try await damaged.connect().call("set_work_spec", [cbormap([("name", "t")])]).errorMessage != nil)
                await damaged.stop()
                #expect(FileManager.default.contents(atPath: path) == damage, "the damaged file was written to")
                let log = await damaged.child.result().stderr
                #expect(
                    log.components(separatedBy: "\n").filter { $0.contains("refusing to start") }.count == 1, "\(log)")
            }
        }
    }

    @Test("damaged unit data (bytes overwritten, or not CBOR) is reported per unit, never sent, granted or lost")
    func damagedUnitData() async throws {
        let directory = temporaryDataDirectory()
        let path = directory + "/coordinate.sqlite3"
        let database = DatabaseAccess(
            run: { sql in
                let result = try await runProgram("/usr/bin/env", ["sqlite3", "-bail", path, sql])
                guard result.status == 0 else { throw DaemonFailure(description: "sqlite3: \(result.stderr)") }
                return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            },
            blob: { "X'\(StorageDamageScenario.hex($0))'" }, hex: { "lower(hex(\($0)))" })
        try await withDaemons { group in
            try await StorageDamageScenario.run(
                database: database, backend: "sqlite",
                start: { try await group.start(storage: "sqlite", arguments: ["--data-dir", directory], http: true) },
                // The database is only changed while no daemon has it open.
                restart: { try await group.restart($0, gracefully: true) })
        }
    }

    @Test("MIG-1: a schema-version-1 database (no checksums) is upgraded; its units are served and then checksummed")
    func upgradeFromVersion1() async throws {
        let directory = temporaryDataDirectory()
        let path = directory + "/coordinate.sqlite3"
        func sqlite(_ sql: String) async throws -> String {
            let result = try await runProgram("/usr/bin/env", ["sqlite3", "-bail", path, sql])
            guard result.status == 0 else { throw DaemonFailure(description: "sqlite3: \(result.stderr)") }
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try await withDaemons { group in
            let first = try await group.startSQLite(directory)
            let setup = try await first.connect()
            _ = try await setup.result("set_work_spec", [cbormap([("name", "s")])])
            _ = try await setup.result("add_work_units", ["s", [["a", cbormap([("n", 1)])], "b"]])
            await first.stop()
            // Back to version 1 as an older release left it.
            _ = try await sqlite(
                "ALTER TABLE work_unit DROP COLUMN data_crc; ALTER TABLE work_unit DROP COLUMN original_data; DELETE FROM schema_version WHERE version >= 2"
            )
            let upgraded = try await group.startSQLite(directory)
            #expect(try await sqlite("SELECT group_concat(version) FROM schema_version") == "1,2,3")
            #expect(try await sqlite("SELECT count(*) FROM work_unit WHERE data_crc IS NULL") == "2")
            let connection = try await upgraded.connect()
            #expect(
                try await connection.result("get_work_units", ["s", cbormap([("work_unit_keys", ["a"])])])
                    == .tuple([[.tuple(["a", cbormap([("n", 1)])])], .null]))
            _ = try await connection.result("update_work_unit", ["s", "a", cbormap([("status", 4)])])
            #expect(try await sqlite("SELECT count(*) FROM work_unit WHERE data_crc IS NULL") == "1")
        }
    }

    @Test("a read-only data directory gives clear errors, not a crash loop")
    func readOnlyDirectory() async throws {
        let directory = temporaryDataDirectory()
        #expect(
            try await shell("chattr +i \(directory)") == 0, "chattr must work for this test (the tests run as root)")
        try await withCleanup {
            try await withDaemons { group in
                let daemon = try await group.startSQLite(directory)
                let connection = try await daemon.connect()
                let message = try await connection.call("set_work_spec", [cbormap([("name", "s")])]).errorMessage
                #expect(message?.hasPrefix("storage unavailable: cannot open database") == true, "\(message ?? "nil")")
                // Through a few maintenance passes (one per second) the daemon stays up and keeps answering clearly.
                try await Task.sleep(for: .seconds(2))
                let again = try await connection.call("set_work_spec", [cbormap([("name", "s")])]).errorMessage
                #expect(again?.hasPrefix("storage unavailable: ") == true, "\(again ?? "nil")")
                #expect(daemon.isRunning)
            }
        } cleanup: {
            _ = try? await shell("chattr -i \(directory)")
        }
    }

    @Test("the -shm file made immutable while running: nothing acknowledged is lost; a restart names the file")
    func immutableSharedMemory() async throws {
        let directory = temporaryDataDirectory()
        let path = directory + "/coordinate.sqlite3"
        let shm = path + "-shm"
        try await withCleanup {
            try await withDaemons { group in
                let daemon = try await group.startSQLite(directory, http: true)
                let connection = try await daemon.connect()
                _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
                _ = try await connection.result("add_work_units", ["s", ["before"]])
                #expect(
                    try await shell("chattr +i \(shm)") == 0, "chattr must work for this test (the tests run as root)")
                // Writes go on until the daemon notices (its check runs every second) or the kernel kills it with
                // SIGBUS at SQLite's next write to the mapped file; either way nothing acknowledged may be lost.
                var acknowledged = ["before"]
                var refusal: String?
                for index in 0..<100_000 where refusal == nil {
                    let key = "during-\(index)"
                    guard let response = try? await connection.call("add_work_units", ["s", [.bytes(key)]]) else {
                        break  // the daemon is gone
                    }
                    if let message = response.errorMessage { refusal = message } else { acknowledged.append(key) }
                }
                if let refusal {
                    #expect(refusal.hasPrefix("storage unavailable: cannot write \(shm): "), "\(refusal)")
                }
                // Restarted while the file is immutable: refused, naming the file, without a crash.
                let refused = try await group.restart(daemon)
                let message = try await refused.connect().call("list_work_specs", [cbormap([])]).errorMessage
                #expect(
                    message
                        == "storage unavailable: cannot open database \(path): cannot write \(shm): Operation not "
                        + "permitted (immutable or append-only? see lsattr)", "\(message ?? "nil")")
                #expect(try await refused.http.request("GET", "/healthz").status == 503)
                #expect(await refused.stop() == .exited(0), "\(refused.stderr)")
                // Writable again: every acknowledged unit is there.
                #expect(try await shell("chattr -i \(shm)") == 0)
                let recovered = try await group.restart(refused)
                let listing = try await recovered.connect().result(
                    "get_work_units", ["s", cbormap([("limit", 200_000)])])
                let stored = Set(
                    (listing.listElements?.first?.listElements ?? []).compactMap { $0.listElements?[0].stringOctets }
                        .map { String(decoding: $0, as: UTF8.self) })
                #expect(
                    Set(acknowledged).isSubset(of: stored), "\(acknowledged.count) acknowledged, \(stored.count) stored"
                )
            }
        } cleanup: {
            _ = try? await shell("chattr -i \(shm)")
        }
    }

    @Test("the database file removed while running: unavailable (within 5 s), not recreated")
    func fileRemoved() async throws {
        let directory = temporaryDataDirectory()
        try await withDaemons { group in
            let daemon = try await group.startSQLite(directory)
            let connection = try await daemon.connect()
            _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
            let path = directory + "/coordinate.sqlite3"
            try FileManager.default.removeItem(atPath: path)
            // The daemon checks every 5 s; the deadline here only bounds a failing run.
            var message: String?
            _ = try await eventually(60) {
                message = try await connection.call("add_work_units", ["s", ["u"]]).errorMessage
                return message != nil
            }
            #expect(message == "storage unavailable: database file removed or replaced")
            #expect(!FileManager.default.fileExists(atPath: path))
            #expect(daemon.isRunning)
        }
    }

    @Test("disk full: writes fail with storage unavailable, reads work, writes recover once space is freed")
    func diskFull() async throws {
        let directory = temporaryDataDirectory()
        var environment: [String: String] = [:]
        var filler: String?
        let mounted = try await canMount()
        if mounted {
            #expect(try await shell("mount -t tmpfs -o size=2m tmpfs \(directory)") == 0)
            filler = directory + "/filler"
        } else {
            // Where mounting is not permitted: cap the database size instead (SQLITE_FULL either way).
            environment = ["COORDINATE_TESTING": "1", "COORDINATE_TEST_SQLITE_MAX_PAGE_COUNT": "120"]
        }
        try await withCleanup {
            try await withDaemons { group in
                let daemon = try await group.startSQLite(directory, environment: environment)
                let connection = try await daemon.connect()
                _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
                _ = try await connection.result("add_work_units", ["s", ["before"]])
                if let filler {
                    // Fill the filesystem to the last byte.
                    try await shell("dd if=/dev/zero of=\(filler) bs=4k 2>/dev/null")
                }
                var failed: String?
                for index in 0..<2000 {
                    let big = CBORValue.bytes([UInt8](repeating: UInt8(index % 251), count: 2048))
                    let response = try await connection.call("add_work_units", ["s", [[.bytes("x\(index)"), big]]])
                    if let message = response.errorMessage {
                        failed = message
                        break
                    }
                }
                #expect(failed?.hasPrefix("storage unavailable: ") == true, "\(failed ?? "nil")")
                // Reads keep working while writes fail.
                let counts = try await connection.result("count_work_units", ["s"])
                #expect(counts.listElements?.first?.mapValue != nil)
                #expect(
                    try await connection.result("get_work_units", ["s", cbormap([("limit", 1)])]).listElements?.first?
                        .listElements?
                        .count == 1)
                #expect(daemon.isRunning)
                // Concurrent writers while the disk is full: every failing group fails all its operations, and the
                // engine stays at the last committed state (its counters agree with what is stored).
                let outcomes = try await concurrently(16) { writer -> [(String, Bool)] in
                    let client = try await daemon.connect()
                    var outcomes: [(String, Bool)] = []
                    for index in 0..<10 {
                        let key = "full-\(writer)-\(index)"
                        let big = CBORValue.bytes([UInt8](repeating: 7, count: 4096))
                        let response = try await client.call("add_work_units", ["s", [[.bytes(key), big]]])
                        outcomes.append((key, response.errorMessage == nil))
                    }
                    return outcomes
                }
                let acknowledged = Set(outcomes.flatMap { $0 }.filter(\.1).map(\.0))
                let refused = Set(outcomes.flatMap { $0 }.filter { !$0.1 }.map(\.0))
                #expect(!refused.isEmpty)
                if let filler {
                    try FileManager.default.removeItem(atPath: filler)
                    #expect(try await connection.result("add_work_units", ["s", ["after"]]) == .tuple([true, .null]))
                }
                let listing = try await connection.result("get_work_units", ["s", cbormap([("limit", 10000)])])
                let stored = Set(
                    (listing.listElements?.first?.listElements ?? []).compactMap { $0.listElements?[0].stringOctets }
                        .map {
                            String(decoding: $0, as: UTF8.self)
                        })
                #expect(acknowledged.isSubset(of: stored))
                #expect(refused.isDisjoint(with: stored))
                let counted = try await connection.result("count_work_units", ["s"]).listElements?.first?.mapValue?
                    .pairs
                    .reduce(0) {
                        $0 + Int($1.value.int64Value ?? 0)
                    }
                #expect(counted == stored.count)
            }
        } cleanup: {
            if mounted { _ = try? await shell("umount -l \(directory)") }
        }
    }

    @Test("a schema newer than supported: exit 2 and the database untouched")
    func newerSchema() async throws {
        let directory = temporaryDataDirectory()
        try await withDaemon(storage: "sqlite", arguments: ["--data-dir", directory, "-q"]) { daemon in
            _ = try await daemon.connect().result("set_work_spec", [cbormap([("name", "s")])])
            #expect(await daemon.stop() == .exited(0))
        }
        let path = directory + "/coordinate.sqlite3"
        #expect(
            try await shell("sqlite3 \(path) \"INSERT INTO schema_version (version, applied_at) VALUES (99, 0)\"") == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let result = try await runExecutable(
            "coordinated", ["--storage", "sqlite", "--data-dir", directory, "--port", "0", "--http-port", "0"])
        #expect(result.status == 2)
        #expect(result.stderr.hasSuffix("coordinated: database schema version 99 is newer than supported version 3\n"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    }

    @Test("an online backup taken with sqlite3 .backup restores into a working daemon")
    func onlineBackup() async throws {
        let directory = temporaryDataDirectory()
        let backupDirectory = temporaryDataDirectory()
        try await withDaemons { group in
            let daemon = try await group.startSQLite(directory)
            let connection = try await daemon.connect()
            _ = try await connection.result("set_work_spec", [cbormap([("name", "s"), ("weight", 3)])])
            _ = try await connection.result("add_work_units", ["s", ["a", "b", "c"]])
            _ = try await connection.result("update_work_unit", ["s", "a", cbormap([("status", 4)])])
            // The daemon keeps running and writing while the copy is taken.
            #expect(
                try await shell(
                    "sqlite3 \(directory)/coordinate.sqlite3 \".backup \(backupDirectory)/coordinate.sqlite3\"") == 0)
            _ = try await connection.result("add_work_units", ["s", ["after-backup"]])
            await daemon.stop()
            let restored = try await group.startSQLite(backupDirectory)
            let check = try await restored.connect()
            #expect(try await check.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 2), (4, 1)]), .null]))
            #expect(try await check.result("get_work_spec", ["s"]) == cbormap([("name", "s"), ("weight", 3)]))
        }
    }
}

/// Attempt ids keep increasing across restarts of the SQLite backend (DUR-3), at the engine level.
@Suite("SQLite attempt ids across restarts")
struct AttemptIDTests {
    @Test("attempt ids keep increasing after the database is reopened")
    func attemptIDsIncrease() async throws {
        let path = temporaryDataDirectory() + "/coordinate.sqlite3"
        let namespace = Identifier(text: "")
        let spec = Identifier(bytes: "s")
        func session(_ body: @escaping @Sendable (inout EngineTransaction) throws -> Int64) async throws -> Int64 {
            let backend = try await openSQLiteBackend(at: path)
            let engine = Engine(backend: backend)
            let result = try await engine.perform(.write, body)
            await backend.close()
            return result
        }
        @Sendable func grantAndFinish(_ tx: inout EngineTransaction) throws -> Int64 {
            let granted = try tx.getWork(
                namespace: namespace,
                WorkRequest(worker: Identifier(bytes: "w"), count: 1, lease: 60_000_000, filter: .init(runtimes: [[]])))
            guard let first = granted.first else { return -1 }
            _ = try tx.updateWorkUnit(namespace: namespace, spec: spec, key: first.unit.key, UnitUpdate(status: 4))
            return first.attemptID
        }
        let first = try await session { tx in
            try tx.setWorkSpec(namespace: namespace, data: CBORMap([("name", "s")]))
            _ = try tx.addWorkUnits(
                namespace: namespace, spec: spec,
                UnitItemBatch([
                    UnitItem(key: Identifier(bytes: "a"), data: .emptyMap),
                    UnitItem(key: Identifier(bytes: "b"), data: .emptyMap),
                ]))
            return try grantAndFinish(&tx)
        }
        // Deleting the unit (and its attempts) must not let the id be reused.
        _ = try await session { tx in
            _ = try tx.deleteWorkUnits(
                namespace: namespace, spec: spec, all: false, keys: [Identifier(bytes: "a")], state: nil)
            return 0
        }
        let second = try await session { tx in try grantAndFinish(&tx) }
        #expect(first > 0)
        #expect(second > first)
    }
}
