import CBOR
import CoordinateClient
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Several daemons over one PostgreSQL database (storage.md §4.2, §7.3 MD-1…MD-6, MIG-2): each case runs real
/// `coordinated` processes on a fresh schema and drives them over TCP with the Swift client.
@Suite("Several daemons over one PostgreSQL database", .serialized, .enabled(if: TestPostgres.available))
struct MultiDaemonTests {
    @Test("MD-1: 3 daemons, 24 workers, 10 000 units: every unit granted once and finished once")
    func everyUnitExactlyOnce() async throws {
        try await withPostgresFleet(poolSize: 8) { fleet in
            for _ in 0..<3 { try await fleet.start() }
            let admin = fleet.client(0)
            try await admin.setWorkSpec(["name": "s"])
            for batch in 0..<10 {
                try await admin.addWorkUnits(
                    "s", (0..<1000).map { WorkUnitSubmission(key: .text(String(format: "u%05d", batch * 1000 + $0))) })
            }
            let grants = try await withThrowingTaskGroup(of: [String].self) { group in
                for worker in 0..<24 {
                    let client = fleet.client(worker % 3)
                    group.addTask {
                        var granted: [String] = []
                        while true {
                            let units = try await client.getWork(
                                workerID: "w\(worker)", specNames: ["s"], maxJobs: 1 + worker % 3, leaseSeconds: 600)
                            if units.isEmpty { break }
                            for unit in units {
                                granted.append(unit.key.stringValue ?? "?")
                                try await unit.finish()
                            }
                        }
                        return granted
                    }
                }
                var all: [String] = []
                for try await granted in group { all += granted }
                return all
            }
            #expect(grants.count == 10_000, "units granted: \(grants.count)")
            #expect(Set(grants).count == grants.count, "a unit was granted twice")
            for index in 0..<3 {
                #expect(try await fleet.client(index).countWorkUnits("s") == [.finished: 10_000])
            }
            // One attempt per unit: nothing was granted, expired and granted again.
            #expect(try await fleet.psql("SELECT count(*) FROM attempt") == "10000")
        }
    }

    @Test("MD-2: max_running 5 holds under concurrent requests to 3 daemons")
    func maxRunningAcrossDaemons() async throws {
        try await withPostgresFleet(poolSize: 8) { fleet in
            for _ in 0..<3 { try await fleet.start() }
            let admin = fleet.client(0)
            try await admin.setWorkSpec(["name": "limited", "max_running": 5])
            try await admin.addWorkUnits("limited", (0..<150).map { WorkUnitSubmission(key: .text("u\($0)")) })
            let held = Tally()
            let mostHeld = Tally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<30 {
                    let client = fleet.client(worker % 3)
                    group.addTask {
                        var idle = 0
                        while idle < 20 {
                            let units = try await client.getWork(
                                workerID: "w\(worker)", specNames: ["limited"], maxJobs: 2, leaseSeconds: 600)
                            if units.isEmpty {
                                // Nothing now: either the limit is reached or the work is done.
                                if try await client.countWorkUnits("limited")[.available] == nil { idle += 1 }
                                try await Task.sleep(for: .milliseconds(5))
                                continue
                            }
                            idle = 0
                            // Counted while the units are still PENDING in the database, so the count can only
                            // understate what the database holds.
                            let now = held.value.add(units.count, ordering: .relaxed).newValue
                            mostHeld.value.max(now, ordering: .relaxed)
                            try await Task.sleep(for: .milliseconds(Int.random(in: 1...15)))
                            held.value.subtract(units.count, ordering: .relaxed)
                            for unit in units { try await unit.finish() }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(
                mostHeld.value.load(ordering: .relaxed) <= 5, "held at once: \(mostHeld.value.load(ordering: .relaxed))"
            )
            #expect(mostHeld.value.load(ordering: .relaxed) >= 2, "the limit was never approached")
            #expect(try await admin.countWorkUnits("limited") == [.finished: 150])
        }
    }

    @Test("MD-3: a continuous spec hammered through 3 daemons mints once per interval, unique keys")
    func continuousMintingAcrossDaemons() async throws {
        // storage.md §7.3 asks for interval 10 s over 60 s (6 or 7 units); the same ratio at 2 s over 12 s keeps
        // the suite short and checks the same rule.
        try await withPostgresFleet(poolSize: 8) { fleet in
            for _ in 0..<3 { try await fleet.start() }
            let admin = fleet.client(0)
            try await admin.setWorkSpec(["name": "tick", "continuous": true, "interval": 2])
            let started = Date()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<12 {
                    let client = fleet.client(worker % 3)
                    group.addTask {
                        while Date().timeIntervalSince(started) < 12 {
                            for unit in try await client.getWork(workerID: "w\(worker)", specNames: ["tick"]) {
                                try await unit.finish()
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let units = try await admin.workUnits("tick")
            let keys = units.map { $0.key }
            #expect(Set(keys).count == keys.count)
            for key in keys {
                #expect(key.stringValue?.range(of: #"^[0-9]+\.[0-9]{6}$"#, options: .regularExpression) != nil)
            }
            // A key is its mint time (database clock): never two mints within one interval, whichever daemon
            // minted them. How many fit in the 12 s depends on how promptly the workers asked, so the count is
            // only bounded: at least two mints (the rule was exercised), at most one per interval.
            let minted = keys.compactMap { $0.stringValue.flatMap(Double.init) }.sorted()
            #expect(minted.count == keys.count)
            for (earlier, later) in zip(minted, minted.dropFirst()) {
                #expect(later - earlier >= 2 - 1e-6, "minted at \(earlier) and \(later), within one interval")
            }
            #expect((2...7).contains(keys.count), "minted \(keys.count) units in 12 s at interval 2 s")
        }
    }

    @Test("MD-4: two daemons whose local clocks differ by an hour agree on lease expiry")
    func databaseClockDecidesExpiry() async throws {
        try await withPostgresFleet { fleet in
            try await fleet.start()
            try await fleet.start(
                extra: ["--debug-local-clock-offset", "3600"], environment: ["COORDINATE_TESTING": "1"])
            let honest = fleet.client(0)
            let skewed = fleet.client(1)
            // Both answer the database's time: the skewed daemon's `now` falls between two of the honest one's.
            let honestBefore = try await honest.now()
            let skewedNow = try await skewed.now()
            let honestNow = try await honest.now()
            #expect(
                skewedNow >= honestBefore && skewedNow <= honestNow,
                "now(): \(honestBefore)…\(honestNow) vs \(skewedNow)")
            try await honest.setWorkSpec(["name": "s"])
            try await honest.addWorkUnits("s", [WorkUnitSubmission(key: "a"), WorkUnitSubmission(key: "b")])
            // Granted through the skewed daemon, checked through the honest one, and the other way round. The
            // database's time of the grants lies between two readings of it (whole seconds).
            let before = Double(try await honest.now())
            let viaSkewed = try await skewed.getWork(workerID: "ws", specNames: ["s"], leaseSeconds: 6)
            let viaHonest = try await honest.getWork(workerID: "wh", specNames: ["s"], leaseSeconds: 6)
            let after = Double(try await honest.now()) + 1
            #expect(viaSkewed.count == 1 && viaHonest.count == 1)
            var deadlines: [Double] = []
            for client in [honest, skewed] {
                let status = try await client.workUnitStatus("s", keys: ["a", "b"])
                for report in status {
                    #expect(report?.status == .pending)
                    // Six seconds after the database's time of the grant, not an hour off.
                    let expiration = report?.expiration ?? 0
                    deadlines.append(expiration)
                    #expect(
                        expiration >= before + 6 && expiration <= after + 6,
                        "expiration \(expiration), granted between \(before) and \(after)")
                }
                // Neither daemon sees the leases as expired, whatever its own clock says (checked only while the
                // database's clock is before the deadlines, however slowly this test got here).
                // (A unit taken after all holds it for 1 s only, so the expiry check below still holds.)
                let others = try await client.getWork(workerID: "other", specNames: ["s"], leaseSeconds: 1)
                if Double(try await honest.now()) + 1 < deadlines.min() ?? 0 {
                    #expect(others.isEmpty)
                }
            }
            // Both daemons see both leases expire once the database's clock passes the deadlines.
            for client in [honest, skewed] {
                #expect(try await eventually(60) { try await client.countWorkUnits("s") == [.available: 2] })
            }
            #expect(Double(try await honest.now()) >= (deadlines.min() ?? 0) - 1)
        }
    }

    @Test("MD-5: conflicting locks through two daemons: exactly one succeeds")
    func conflictingLocks() async throws {
        try await withPostgresFleet(poolSize: 8) { fleet in
            for _ in 0..<2 { try await fleet.start() }
            for round in 0..<10 {
                let path: [CBORValue] = [.text("jobs"), .text("r\(round)")]
                let winners = try await withThrowingTaskGroup(of: String?.self) { group in
                    for locker in 0..<8 {
                        let client = fleet.client(locker % 2)
                        group.addTask {
                            // A parent path conflicts with its descendants too.
                            let paths = locker % 4 == 3 ? [[CBORValue.text("jobs")] + [path[1]]] : [path]
                            let outcome = try await client.lock(
                                lockerID: "l\(round)-\(locker)", paths: paths, timeout: 60)
                            return outcome.succeeded ? "l\(round)-\(locker)" : nil
                        }
                    }
                    var winners: [String] = []
                    for try await winner in group { if let winner { winners.append(winner) } }
                    return winners
                }
                #expect(winners.count == 1, "round \(round): winners \(winners)")
                let owners = try await fleet.client(1).lockOwners(paths: [path])
                #expect(owners == [.text(winners.first ?? "")])
            }
            #expect(try await fleet.client(0).listLocks().count == 10)
        }
    }

    @Test("MD-6: a spec paused through one daemon is not scheduled by another on its next request")
    func pauseIsShared() async throws {
        try await withPostgresFleet { fleet in
            for _ in 0..<2 { try await fleet.start() }
            let a = fleet.client(0)
            let b = fleet.client(1)
            try await a.setWorkSpec(["name": "p"])
            try await a.addWorkUnits("p", (0..<5).map { WorkUnitSubmission(key: .text("u\($0)")) })
            #expect(try await b.getWork(workerID: "wb", leaseSeconds: 60).count == 1)
            try await a.pauseWorkSpec("p")
            #expect(try await b.getWork(workerID: "wb", leaseSeconds: 60).isEmpty)
            #expect(try await b.workSpecMeta("p").paused)
            try await b.resumeWorkSpec("p")
            #expect(try await a.getWork(workerID: "wa", leaseSeconds: 60).count == 1)
        }
    }

    @Test(
        "MIG-1: a schema-version-1 store (counters on the spec rows, no checksums) is upgraded with its data preserved")
    func upgradeFromVersion1() async throws {
        try await withPostgresFleet { fleet in
            let fixture = try String(
                contentsOf: TestPaths.repositoryRoot.appendingPathComponent("Tests/Fixtures/postgres/schema-v1.sql"),
                encoding: .utf8)
            _ = try await PostgresTools.psql(
                url: fleet.url, sql: fixture.replacingOccurrences(of: "fixture_v1", with: fleet.schema))
            #expect(try await fleet.psql("SELECT max(version) FROM schema_version") == "1")
            try await fleet.start()
            #expect(
                try await fleet.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version")
                    == "1,2,3,4,5")
            // Version 4: units have no foreign key to their spec, and the completed-units index is partial.
            #expect(
                try await fleet.psql(
                    """
                    SELECT count(*) FROM pg_constraint
                    WHERE conrelid = 'work_unit'::regclass AND contype = 'f'
                    """) == "0")
            #expect(
                try await fleet.psql(
                    "SELECT pg_get_indexdef('work_unit_completed'::regclass) LIKE '%WHERE%'") == "t")
            // Rows from before checksums were kept have none, and are served (checked for well-formed CBOR).
            #expect(try await fleet.psql("SELECT count(*) FROM work_unit WHERE data_crc IS NOT NULL") == "0")
            let client = fleet.client(0)
            // The counters moved from the spec rows to the shards, so every summary agrees with the units.
            #expect(
                try await client.countWorkUnits("fixture") == [.available: 16, .pending: 1, .finished: 2, .failed: 1])
            #expect(try await client.countWorkUnits("other") == [.available: 1])
            let meta = try await client.workSpec("fixture")
            #expect(meta?["weight"] == 3)
            #expect(meta?["priority"] == 5)
            let finished = try await client.workUnits("fixture", keys: [.bytes(Array("unit-00".utf8))])
            #expect(finished.first?.data?.mapValue?["result"] == .bytes(Array("ok".utf8)))
            // The upgraded store keeps working: the next grant is the next ready unit, and finishing it counts.
            let granted = try await client.getWork(workerID: "after-upgrade", specNames: ["fixture"], leaseSeconds: 60)
            #expect(granted.map(\.key) == [.bytes(Array("unit-04".utf8))])
            for unit in granted { try await unit.finish() }
            #expect(
                try await client.countWorkUnits("fixture") == [.available: 15, .pending: 1, .finished: 3, .failed: 1])
            // A unit written since has its checksum.
            #expect(
                try await fleet.psql("SELECT data_crc IS NOT NULL FROM work_unit WHERE key = 'unit-04'::bytea") == "t")
            // Deleting a spec deletes its units, without the foreign key's cascade.
            try await client.deleteWorkSpec("other")
            #expect(
                try await fleet.psql("SELECT count(*) FROM work_unit WHERE spec_id NOT IN (SELECT id FROM work_spec)")
                    == "0")
        }
    }

    @Test("MIG-2: three daemons started at once on an empty schema migrate it once and all serve")
    func concurrentMigrations() async throws {
        try await withPostgresFleet { fleet in
            for _ in 0..<3 { try await fleet.start(waitForStorage: false) }
            for daemon in fleet.daemons { try await daemon.waitForStorage(available: true) }
            let versions = try await fleet.psql(
                "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version")
            let list = versions.split(separator: ",").map(String.init)
            #expect(!list.isEmpty && Set(list).count == list.count, "schema_version rows: \(versions)")
            try await fleet.client(0).setWorkSpec(["name": "m"])
            for index in 0..<3 {
                #expect(try await fleet.client(index).workSpec("m") != nil)
            }
        }
    }

    @Test("kill -9 of one daemon while the others keep serving: no unit lost, leases it handed out expire")
    func oneDaemonKilled() async throws {
        try await withPostgresFleet(poolSize: 8) { fleet in
            for _ in 0..<3 { try await fleet.start() }
            let admin = fleet.client(1)
            try await admin.setWorkSpec(["name": "k"])
            try await admin.addWorkUnits("k", (0..<3000).map { WorkUnitSubmission(key: .text("u\($0)")) })
            let finished = Ledger()
            let victim = fleet.daemons[0]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<12 {
                    let daemonIndex = worker % 3
                    let client = fleet.client(daemonIndex, timeout: 5)
                    group.addTask {
                        // A survivor works until every unit is finished, including those whose leases die with the
                        // victim (the deadline only bounds a failing run).
                        let deadline = ContinuousClock.now + .seconds(120)
                        while ContinuousClock.now < deadline {
                            let units: [WorkUnit]
                            do {
                                // The victim's workers take short leases, which expire soon after it dies; the survivors'
                                // outlast the test, so a unit is re-run only because its holder died with the victim.
                                units = try await client.getWork(
                                    workerID: "w\(worker)", specNames: ["k"], leaseSeconds: daemonIndex == 0 ? 5 : 600)
                            } catch  where daemonIndex == 0 {
                                return  // Its daemon is gone: this worker stops, as a real one without failover would.
                            }
                            if units.isEmpty {
                                if daemonIndex == 0 { return }
                                if try await client.countWorkUnits("k") == [.finished: 3000] { return }
                                try await Task.sleep(for: .milliseconds(100))
                                continue
                            }
                            for unit in units {
                                do {
                                    try await unit.finish()
                                    finished.keys.withLock { $0.append(unit.key.stringValue ?? "?") }
                                } catch  where daemonIndex == 0 {
                                    return
                                }
                            }
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(700))
                    victim.signal(SIGKILL)
                }
                try await group.waitForAll()
            }
            #expect(await victim.waitForExit(timeout: .seconds(60)) != nil)
            let acknowledged = finished.keys.withLock { $0 }
            #expect(Set(acknowledged).count == acknowledged.count, "a unit was finished twice")
            // The survivors picked up everything, including the units whose leases died with the victim's workers.
            #expect(try await admin.countWorkUnits("k") == [.finished: 3000])
            let status = try await fleet.client(2).workUnitStatus("k", keys: acknowledged.prefix(500).map { .text($0) })
            #expect(status.allSatisfy { $0?.status == .finished })
        }
    }
}

/// Shared counters for the concurrent workers of one case.
final class Tally: Sendable {
    let value = Atomic<Int>(0)
}

/// Keys acknowledged by concurrent workers.
final class Ledger: Sendable {
    let keys = Mutex<[String]>([])
}
