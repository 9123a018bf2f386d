import CBOR
import CoordinateEngine
import CoordinateSQLite
import Foundation
import Logging
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs a shell command (as root in the test environment) and returns its exit status.
@discardableResult
func shell(_ command: String) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try? process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

/// Whether this environment lets the tests mount a small tmpfs (root in a privileged container or VM).
let canMount: Bool = {
    let probe = NSTemporaryDirectory() + "coordinate-mount-probe-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: probe) }
    guard shell("mount -t tmpfs -o size=64k tmpfs \(probe)") == 0 else { return false }
    shell("umount \(probe)")
    return true
}()

func storageError(_ response: CBORMap) -> String? { response.errorMessage }

/// Storage failures must give clear errors and unavailability, never a crash loop or corruption
/// (storage.md §6; FAIL-3, FAIL-4, FAIL-5, MIG-1; the lock-file rule of §3.2).
@Suite("SQLite failure handling", .serialized)
struct FailureTests {
    @Test("a second daemon on the same data directory refuses to start")
    func secondDaemonRefused() throws {
        let directory = temporaryDataDirectory()
        let first = try startSQLiteDaemon(directory)
        defer { first.stop() }
        let result = try runExecutable(
            "coordinated",
            [
                "--storage", "sqlite", "--data-dir", directory, "--port", String(DaemonProcess.freePort()),
                "--http-port", "0",
            ])
        #expect(result.status == 2)
        #expect(
            result.stderr.hasSuffix(
                "coordinated: database \(directory)/coordinate.sqlite3 is in use by another coordinated\n"))
        // The first daemon is unaffected.
        let connection = try RawConnection(port: first.port)
        #expect(try connection.result("list_work_specs", [cbormap([])]) == .tuple([[], .null]))
    }

    @Test("a corrupt database file: the daemon stays up, unavailable, and leaves the file byte-identical")
    func corruptFile() throws {
        let directory = temporaryDataDirectory()
        let path = directory + "/coordinate.sqlite3"
        var garbage = [UInt8](repeating: 0, count: 8192)
        for index in garbage.indices { garbage[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(garbage)))
        let httpPort = DaemonProcess.freePort()
        let daemon = try DaemonProcess(
            arguments: ["--storage", "sqlite", "--data-dir", directory, "--http-port", String(httpPort)])
        defer { daemon.stop() }
        let connection = try RawConnection(port: daemon.port)
        var message: String?
        for _ in 0..<100 {
            message = try connection.call("list_work_specs", [cbormap([])]).errorMessage
            if message?.hasPrefix("storage unavailable: initialising") != true { break }
            usleep(20_000)
        }
        #expect(message?.hasPrefix("storage unavailable: cannot open database \(path):") == true, "\(message ?? "nil")")
        #expect(daemon.process.isRunning)
        // /healthz reports the same, and REST answers 503 instead of touching the file.
        let health = try HTTPTestClient(port: httpPort).request("GET", "/healthz")
        #expect(health.status == 503)
        #expect(health.text.hasPrefix(#"{"status":"unavailable","storage":"sqlite","error":"cannot open database"#))
        let rest = try HTTPTestClient(port: httpPort).request("GET", "/namespace/-/work_spec")
        #expect(rest.status == 503)
        #expect(rest.text.contains("ErrStorageUnavailable"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(garbage))
    }

    @Test("a read-only data directory gives clear errors, not a crash loop")
    func readOnlyDirectory() throws {
        let directory = temporaryDataDirectory()
        #expect(shell("chattr +i \(directory)") == 0, "chattr must work for this test (the tests run as root)")
        defer { shell("chattr -i \(directory)") }
        let daemon = try DaemonProcess(arguments: ["--storage", "sqlite", "--data-dir", directory])
        defer { daemon.stop() }
        let connection = try RawConnection(port: daemon.port)
        var message: String?
        for _ in 0..<100 {
            message = try connection.call("set_work_spec", [cbormap([("name", "s")])]).errorMessage
            if message?.hasPrefix("storage unavailable: initialising") != true { break }
            usleep(20_000)
        }
        #expect(message?.hasPrefix("storage unavailable: cannot open database") == true, "\(message ?? "nil")")
        usleep(500_000)
        #expect(daemon.process.isRunning)
    }

    @Test("the database file removed while running: unavailable within 5 s, not recreated")
    func fileRemoved() async throws {
        let directory = temporaryDataDirectory()
        let daemon = try startSQLiteDaemon(directory)
        defer { daemon.stop() }
        let connection = try RawConnection(port: daemon.port)
        _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
        let path = directory + "/coordinate.sqlite3"
        try FileManager.default.removeItem(atPath: path)
        var message: String?
        for _ in 0..<80 {
            message = try await connection.call("add_work_units", ["s", ["u"]]).errorMessage
            if message != nil { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(message == "storage unavailable: database file removed or replaced")
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(daemon.process.isRunning)
    }

    @Test("disk full: writes fail with storage unavailable, reads work, writes recover once space is freed")
    func diskFull() async throws {
        let directory = temporaryDataDirectory()
        var environment: [String: String] = [:]
        var filler: String?
        if canMount {
            #expect(shell("mount -t tmpfs -o size=2m tmpfs \(directory)") == 0)
            filler = directory + "/filler"
        } else {
            // Where mounting is not permitted: cap the database size instead (SQLITE_FULL either way).
            environment = ["COORDINATE_TESTING": "1", "COORDINATE_TEST_SQLITE_MAX_PAGE_COUNT": "120"]
        }
        defer { if canMount { shell("umount -l \(directory)") } }
        let daemon = try startSQLiteDaemon(directory, environment: environment)
        defer { daemon.stop() }
        let connection = try RawConnection(port: daemon.port)
        _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
        _ = try await connection.result("add_work_units", ["s", ["before"]])
        if let filler {
            // Fill the filesystem to the last byte.
            shell("dd if=/dev/zero of=\(filler) bs=4k 2>/dev/null")
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
        #expect(daemon.process.isRunning)
        // Concurrent writers while the disk is full: every failing group fails all its operations, and the
        // engine stays at the last committed state (its counters agree with what is stored).
        let port = daemon.port
        let outcomes = try await runOnThreads(16) { writer -> [(String, Bool)] in
            let client = try RawConnection(port: port)
            return try (0..<10).map { index in
                let key = "full-\(writer)-\(index)"
                let big = CBORValue.bytes([UInt8](repeating: 7, count: 4096))
                let response = try client.call("add_work_units", ["s", [[.bytes(key), big]]])
                return (key, response.errorMessage == nil)
            }
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
            (listing.listElements?.first?.listElements ?? []).compactMap { $0.listElements?[0].stringOctets }.map {
                String(decoding: $0, as: UTF8.self)
            })
        #expect(acknowledged.isSubset(of: stored))
        #expect(refused.isDisjoint(with: stored))
        let counted = try await connection.result("count_work_units", ["s"]).listElements?.first?.mapValue?.pairs
            .reduce(0) {
                $0 + Int($1.value.int64Value ?? 0)
            }
        #expect(counted == stored.count)
    }

    @Test("a schema newer than supported: exit 2 and the database untouched")
    func newerSchema() throws {
        let directory = temporaryDataDirectory()
        let daemon = try startSQLiteDaemon(directory)
        let connection = try RawConnection(port: daemon.port)
        _ = try connection.result("set_work_spec", [cbormap([("name", "s")])])
        daemon.stop()
        let path = directory + "/coordinate.sqlite3"
        #expect(shell("sqlite3 \(path) \"INSERT INTO schema_version (version, applied_at) VALUES (99, 0)\"") == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let result = try runExecutable(
            "coordinated",
            [
                "--storage", "sqlite", "--data-dir", directory, "--port", String(DaemonProcess.freePort()),
                "--http-port", "0",
            ])
        #expect(result.status == 2)
        #expect(result.stderr.hasSuffix("coordinated: database schema version 99 is newer than supported version 1\n"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    }

    @Test("an online backup taken with sqlite3 .backup restores into a working daemon")
    func onlineBackup() throws {
        let directory = temporaryDataDirectory()
        let daemon = try startSQLiteDaemon(directory)
        let connection = try RawConnection(port: daemon.port)
        _ = try connection.result("set_work_spec", [cbormap([("name", "s"), ("weight", 3)])])
        _ = try connection.result("add_work_units", ["s", ["a", "b", "c"]])
        _ = try connection.result("update_work_unit", ["s", "a", cbormap([("status", 4)])])
        let backupDirectory = temporaryDataDirectory()
        // The daemon keeps running and writing while the copy is taken.
        #expect(shell("sqlite3 \(directory)/coordinate.sqlite3 \".backup \(backupDirectory)/coordinate.sqlite3\"") == 0)
        _ = try connection.result("add_work_units", ["s", ["after-backup"]])
        daemon.stop()
        let restored = try startSQLiteDaemon(backupDirectory)
        defer { restored.stop() }
        let check = try RawConnection(port: restored.port)
        #expect(try check.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 2), (4, 1)]), .null]))
        #expect(try check.result("get_work_spec", ["s"]) == cbormap([("name", "s"), ("weight", 3)]))
    }
}

/// Attempt ids keep increasing across restarts of the SQLite backend (DUR-3), at the engine level.
@Suite("SQLite attempt ids across restarts")
struct AttemptIDTests {
    @Test("attempt ids keep increasing after the database is reopened")
    func attemptIDsIncrease() async throws {
        let path = temporaryDataDirectory() + "/coordinate.sqlite3"
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let namespace = Identifier(text: "")
        let spec = Identifier(bytes: "s")
        func session(_ body: @escaping @Sendable (inout EngineTransaction) throws -> Int64) async throws -> Int64 {
            let backend = SQLiteBackend(path: path, logger: logger)
            try backend.initialize(now: SystemClock().now())
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
                items: .success([
                    UnitItem(key: Identifier(bytes: "a"), data: .emptyMap),
                    UnitItem(key: Identifier(bytes: "b"), data: .emptyMap),
                ]),
                itemCount: 2)
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
