import CBOR
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

func cbormap(_ pairs: [(CBORValue, CBORValue)]) -> CBORValue { .map(CBORMap(pairs)) }

/// A private PostgreSQL cluster that a case may stop and restart without disturbing the shared one.
final class PrivateCluster: Sendable {
    let name: String
    let url: String

    init() throws {
        name = "pg-private-" + UUID().uuidString.prefix(8).lowercased()
        url = try PostgresTools.cluster(name, "start")
    }

    func pause(_ mode: String = "fast") throws { try PostgresTools.cluster(name, "pause", mode) }
    func resume() throws { try PostgresTools.cluster(name, "resume") }
    func restart(_ mode: String = "immediate") throws { try PostgresTools.cluster(name, "restart", mode) }
    deinit { _ = try? PostgresTools.cluster(name, "destroy") }
}

/// PostgreSQL outages, newer schemas and crashes (storage.md §5–§6, §7.3 FAIL-1, FAIL-2, FAIL-7, DUR-1…3).
@Suite("PostgreSQL failure handling and durability", .serialized, .enabled(if: TestPostgres.available))
struct PostgresFailureTests {
    @Test("FAIL-1/FAIL-7: database down at startup: listeners answer at once, storage unavailable, then recovery")
    func databaseDownAtStartup() async throws {
        let cluster = try PrivateCluster()
        try cluster.pause()
        var fleet = try PostgresFleet(url: cluster.url)
        defer { fleet.stopAll() }
        let httpPort = DaemonProcess.freePort()
        let started = Date()
        let daemon = try fleet.start(extra: ["--http-port", String(httpPort)], waitForStorage: false)
        #expect(Date().timeIntervalSince(started) < 2, "listener took \(Date().timeIntervalSince(started)) s")
        let connection = try RawConnection(port: daemon.port)
        #expect(
            try await connection.call("list_work_specs", [cbormap([])]).errorMessage
                == "storage unavailable: initialising")
        // On PostgreSQL even `now` comes from the database (storage.md §4.4).
        #expect(try await connection.call("now").errorMessage == "storage unavailable: initialising")
        // Both listeners accept within 2 s of the start (the HTTP one opens just after CBOR-RPC's).
        let http = HTTPTestClient(port: httpPort)
        var health = try? http.request("GET", "/healthz")
        while health == nil && Date().timeIntervalSince(started) < 2 {
            try await Task.sleep(for: .milliseconds(20))
            health = try? http.request("GET", "/healthz")
        }
        #expect(health?.status == 503, "no HTTP answer within 2 s of the start")
        let rest = try http.request("GET", "/namespace/-/work_spec")
        #expect(rest.status == 503 && rest.text.contains("ErrStorageUnavailable"), "\(rest.status) \(rest.text)")
        try await Task.sleep(for: .seconds(1))
        #expect(daemon.process.isRunning)
        try cluster.resume()
        // The backoff between attempts is at most a few seconds this early.
        try PostgresFleet.waitForStorage(port: daemon.port, timeout: 40)
        #expect(try http.request("GET", "/healthz").status == 200)
        #expect(try await connection.result("set_work_spec", [cbormap([("name", "s")])]) == .tuple([true, .null]))
    }

    @Test("SOAK-1: a worker fleet while PostgreSQL is restarted every 2-5 s")
    func soakWithDatabaseRestarts() async throws {
        let cluster = try PrivateCluster()
        var fleet = try PostgresFleet(url: cluster.url)
        defer { fleet.stopAll() }
        let daemon = try fleet.start()
        let (restarts, report) = try await SoakFleet().run(units: 5_000, port: daemon.port) { ordinal in
            try cluster.restart(ordinal % 2 == 0 ? "immediate" : "fast")
        }
        print("SOAK-1 postgres: \(restarts) restarts survived; \(report)")
        #expect(daemon.process.isRunning, "the daemon survived every restart")
        #expect(restarts >= 3)
        #expect(report.problems == [], "\(report)")
    }

    @Test("FAIL-2: PostgreSQL restarted under load: clear errors meanwhile, no acknowledged change lost, no crash")
    func databaseRestartedUnderLoad() async throws {
        let cluster = try PrivateCluster()
        var fleet = try PostgresFleet(url: cluster.url)
        defer { fleet.stopAll() }
        let daemon = try fleet.start()
        let setup = try RawConnection(port: daemon.port)
        _ = try await setup.result("set_work_spec", [cbormap([("name", "s")])])
        let port = daemon.port
        let stop = Flag()
        let outcomes = try await withThrowingTaskGroup(of: ([String], [String]).self) { group in
            for client in 0..<4 {
                group.addTask {
                    try await offCooperativePool {
                        let connection = try RawConnection(port: port, receiveTimeout: 30)
                        var acknowledged: [String] = []
                        var errors: [String] = []
                        var index = 0
                        while !stop.isSet {
                            let key = "c\(client)-\(index)"
                            index += 1
                            let response = try connection.call("add_work_units", ["s", [.bytes(key)]])
                            if let message = response.errorMessage {
                                errors.append(message)
                            } else {
                                acknowledged.append(key)
                            }
                        }
                        return (acknowledged, errors)
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(1))
                try cluster.restart("immediate")
                try await Task.sleep(for: .seconds(1))
                try cluster.restart("fast")
                try await Task.sleep(for: .seconds(4))
                stop.set()
                return ([], [])
            }
            var all: [([String], [String])] = []
            for try await outcome in group { all.append(outcome) }
            return all
        }
        let acknowledged = outcomes.flatMap(\.0)
        let errors = outcomes.flatMap(\.1)
        #expect(daemon.process.isRunning)
        #expect(!errors.isEmpty, "the restarts were noticed")
        for message in Set(errors) {
            #expect(message.hasPrefix("storage unavailable: "), "unclear error: \(message)")
        }
        // Service came back without a daemon restart, and every acknowledged add is there.
        try PostgresFleet.waitForStorage(port: daemon.port)
        let check = try RawConnection(port: daemon.port)
        let status = try await check.result("get_work_unit_status", ["s", .array(acknowledged.map { .bytes($0) })])
        let entries = status.listElements?.first?.listElements ?? []
        #expect(entries.count == acknowledged.count)
        #expect(entries.allSatisfy { $0.mapValue?["status"] == 1 }, "an acknowledged add is missing")
        #expect(acknowledged.count > 50, "the load did run")
    }

    @Test("FAIL-7: a newer schema at the first connection: exit 2 and the database untouched")
    func newerSchemaAtStartup() async throws {
        var fleet = try PostgresFleet()
        defer { fleet.stopAll() }
        let first = try fleet.start()
        _ = try await RawConnection(port: first.port).result("set_work_spec", [cbormap([("name", "s")])])
        first.stop()
        try _ = fleet.psql("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
        let before = try fleet.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version")
        let result = try runExecutable(
            "coordinated",
            [
                "--storage", "postgres", "--config", fleet.configFile, "--port", String(DaemonProcess.freePort()),
                "--http-port", "0",
            ])
        #expect(result.status == 2)
        #expect(
            result.stderr.contains("database schema version 99 is newer than supported version"), "\(result.stderr)")
        #expect(try fleet.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version") == before)
        #expect(try fleet.psql("SELECT count(*) FROM work_spec") == "1")
    }

    @Test("FAIL-7: a newer schema written by another daemon while this one runs: unavailable within 5 s, still up")
    func newerSchemaWhileRunning() async throws {
        var fleet = try PostgresFleet()
        defer { fleet.stopAll() }
        let daemon = try fleet.start()
        let connection = try RawConnection(port: daemon.port)
        _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
        try _ = fleet.psql("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
        let noticed = await eventually(8) {
            let message = (try? await connection.call("list_work_specs", [cbormap([])]))?.errorMessage ?? ""
            return message.hasPrefix("storage unavailable: database schema version 99 is newer than supported version")
        }
        #expect(noticed)
        #expect(daemon.process.isRunning)
    }

    @Test("DUR-1: every acknowledged change survives kill -9 of the daemon (5 kills), nothing half-applied")
    func killNine() async throws {
        var fleet = try PostgresFleet(poolSize: 8)
        defer { fleet.stopAll() }
        var ledger = DurabilityLedger()
        for round in 0..<5 {
            let daemon = try fleet.start()
            _ = try await RawConnection(port: daemon.port).result("set_work_spec", [cbormap([("name", "s")])])
            #expect(try ledger.problems(port: daemon.port) == [])
            let killer = Thread {
                usleep(useconds_t(300_000 + round * 100_000))
                daemon.signal(SIGKILL)
            }
            killer.start()
            try await ledger.run(round: round, clients: 4, port: daemon.port)
            _ = daemon.waitForExit(timeout: 10)
        }
        let daemon = try fleet.start()
        #expect(try ledger.problems(port: daemon.port) == [])
        #expect(ledger.acknowledgedAdds.count > 100, "the workload did run")
    }

    @Test("DUR-2/DUR-3: a lease survives kill -9 with its deadline and expires on time; attempt ids keep increasing")
    func leaseAndAttemptIDsSurviveRestart() async throws {
        var fleet = try PostgresFleet()
        defer { fleet.stopAll() }
        var daemon = try fleet.start()
        var connection = try RawConnection(port: daemon.port)
        _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
        _ = try await connection.result("add_work_units", ["s", ["gone", "u", "later"]])
        _ = try await connection.result("get_work", ["w0", cbormap([("lease_time", 60), ("work_spec_names", ["s"])])])
        _ = try await connection.result("update_work_unit", ["s", "gone", cbormap([("status", 4)])])
        let firstAttempt = Int(try fleet.psql("SELECT max(id) FROM attempt")) ?? 0
        // Deleting the unit deletes its attempts; the sequence must not hand the id out again.
        _ = try await connection.result("del_work_units", ["s", cbormap([("work_unit_keys", ["gone"])])])
        _ = try await connection.result("get_work", ["w1", cbormap([("lease_time", 10), ("work_spec_names", ["s"])])])
        let before = try await connection.result("get_work_unit_status", ["s", ["later", "u"]])
        daemon.signal(SIGKILL)
        _ = daemon.waitForExit()
        daemon = try fleet.start()
        connection = try RawConnection(port: daemon.port)
        let after = try await connection.result("get_work_unit_status", ["s", ["later", "u"]])
        #expect(after == before)
        let leased = after.listElements?.first?.listElements?.first { $0.mapValue?["status"] == 3 }
        let deadline = leased?.mapValue?["expiration"]?.strictNumber ?? 0
        let remaining = deadline - Date().timeIntervalSince1970
        #expect(remaining > 0)
        try await Task.sleep(for: .seconds(max(0, remaining) + 0.3))
        #expect(try await connection.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 2)]), .null]))
        _ = try await connection.result("get_work", ["w2", cbormap([("lease_time", 60), ("work_spec_names", ["s"])])])
        let secondAttempt = Int(try fleet.psql("SELECT max(id) FROM attempt")) ?? 0
        #expect(
            firstAttempt > 0 && secondAttempt > firstAttempt + 1, "attempt ids \(firstAttempt) then \(secondAttempt)")
    }
}

/// A stop signal shared by the threads of one case.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
