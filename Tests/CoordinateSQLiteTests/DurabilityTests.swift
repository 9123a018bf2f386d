import CBOR
import CoordinateEngine
import CoordinateSQLite
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

func cbormap(_ pairs: [(CBORValue, CBORValue)]) -> CBORValue { .map(CBORMap(pairs)) }

/// A fresh data directory for one daemon.
func temporaryDataDirectory() -> String { TestBuild.temporaryDirectory("coordinate-sqlite") }

/// An in-process SQLite backend on the database file `path`, initialised off the cooperative pool (opening
/// creates and syncs files), logging only what is critical.
func openSQLiteBackend(at path: String) async throws -> SQLiteBackend {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let backend = SQLiteBackend(path: path, logger: logger)
    try await offCooperativePool { try backend.initialize(now: SystemClock().now()) }
    return backend
}

extension DaemonGroup {
    /// A daemon on SQLite in `directory`, its storage ready.
    func startSQLite(
        _ directory: String, extra: [String] = [], environment: [String: String] = [:], http: Bool = false
    ) async throws -> DaemonProcess {
        try await start(
            storage: "sqlite", arguments: ["--data-dir", directory, "-q"] + extra, environment: environment, http: http)
    }
}

/// Crash-safety of the SQLite backend with a real process killed with SIGKILL (storage.md §7.3 DUR-1, DUR-2).
@Suite("SQLite durability across kill -9", .serialized)
struct DurabilityTests {
    @Test("SOAK-1: a worker fleet while the daemon is killed -9 and restarted every 2-5 s")
    func soakWithKills() async throws {
        try await withDaemons { group in
            let current = Mutex(try await group.startSQLite(temporaryDataDirectory()))
            let (kills, report) = try await SoakFleet().run(units: 20_000, port: { current.withLock { $0.port } }) {
                _ in
                let killed = current.withLock { $0 }
                let restarted = try await group.restart(killed, waitForStorage: false)
                current.withLock { $0 = restarted }
            }
            print("SOAK-1 sqlite: \(kills) kills survived; \(report)")
            #expect(report.problems == [], "\(report)")
        }
    }

    @Test("every acknowledged change survives kill -9, nothing is half-applied (20 kills)")
    func killNineLoop() async throws {
        let directory = temporaryDataDirectory()
        var ledger = DurabilityLedger()
        try await withDaemons { group in
            for round in 0..<20 {
                let daemon = try await group.startSQLite(directory)
                let setup = try await daemon.connect()
                _ = try await setup.result("set_work_spec", [cbormap([("name", "s")])])
                // Everything acknowledged in earlier rounds is present.
                #expect(try await ledger.problems(port: daemon.port) == [])
                // Killed once the clients have stored 45 more units, plus a delay that varies with the round so
                // that kills land at different points of a call.
                let observer = ledger
                let killer = Task { try await observer.kill(daemon, delay: .milliseconds((round % 5) * 7)) }
                try await ledger.run(round: round, clients: 4, port: daemon.port)
                try await killer.value
            }
            let daemon = try await group.startSQLite(directory)
            #expect(try await ledger.problems(port: daemon.port) == [])
            #expect(ledger.acknowledgedAdds.count > 100, "the workload did run (≥ 45 stored per round)")
        }
    }

    @Test("a lease survives a restart with its worker and deadline, and expires on time afterwards")
    func leasesSurviveRestart() async throws {
        try await withDaemons { group in
            let first = try await group.startSQLite(temporaryDataDirectory())
            let connection = try await first.connect()
            _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
            _ = try await connection.result("add_work_units", ["s", ["u"]])
            _ = try await connection.result("get_work", ["w1", cbormap([("lease_time", 600)])])
            let before = try await connection.result("get_work_unit_status", ["s", ["u"]])
            let second = try await group.restart(first)
            let after = try await second.connect().result("get_work_unit_status", ["s", ["u"]])
            #expect(after == before)
            #expect(after.listElements?.first?.listElements?.first?.mapValue?["status"] == 3)
            // The same database read by a daemon whose clock is past the deadline: the lease has run out.
            let later = try await group.restart(
                second, extra: ["--debug-local-clock-offset", "601"], environment: ["COORDINATE_TESTING": "1"])
            let expired = try await later.connect().result("count_work_units", ["s"])
            #expect(expired == .tuple([cbormap([(1, 1)]), .null]))
        }
    }

    @Test("64 concurrent writers: all answered, all durable after kill -9")
    func concurrentWriters() async throws {
        try await withDaemons { group in
            let daemon = try await group.startSQLite(temporaryDataDirectory())
            let setup = try await daemon.connect()
            _ = try await setup.result("set_work_spec", [cbormap([("name", "s")])])
            let acknowledged = try await concurrently(64) { writer -> Int in
                let connection = try await daemon.connect()
                for index in 0..<25 {
                    let result = try await connection.result("add_work_units", ["s", [.bytes("w\(writer)-\(index)")]])
                    #expect(result == .tuple([true, .null]))
                }
                return 25
            }
            #expect(acknowledged.reduce(0, +) == 1600)
            let restarted = try await group.restart(daemon)
            let connection = try await restarted.connect()
            #expect(try await connection.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 1600)]), .null]))
        }
    }
}
