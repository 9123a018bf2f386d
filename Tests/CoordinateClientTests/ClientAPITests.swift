import CBOR
import CoordinateClient
import Foundation
import TestSupport
import Testing

/// A client for a daemon process on loopback, with fast retries so failure tests stay short.
func makeClient(port: Int, retries: Int = 5, base: Double = 0.05, timeout: Double = 30) -> CoordinateClient {
    CoordinateClient(
        settings: ClientSettings(
            address: "127.0.0.1:\(port)", retries: retries, baseRetrySeconds: base, timeout: timeout))
}

/// The typed API end to end against a real daemon (wire-protocol.md §12; rpc-methods.md).
@Suite("Swift client API")
struct ClientAPITests {
    @Test("work specs: set, get, page, meta, control, pause, resume, delete, clear")
    func workSpecs() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            for name in ["b", "a", "c"] { try await client.setWorkSpec(["name": .text(name), "min_gb": 1]) }
            #expect(try await client.workSpec("a") == ["name": .text("a"), "min_gb": 1])
            #expect(try await client.workSpec("nope") == CBORMap?.none)
            let page = try await client.workSpecs(limit: 2)
            #expect(page.specs.map { $0["name"]?.stringValue } == ["a", "b"])
            #expect(page.next == .text("c"))
            #expect(try await client.allWorkSpecs(pageSize: 1).count == 3)

            try await client.pauseWorkSpec("a")
            #expect(try await client.workSpecMeta("a").paused)
            try await client.resumeWorkSpec("a")
            try await client.controlWorkSpec("a", ["weight": 7, "max_running": 3])
            let meta = try await client.workSpecMeta("a")
            #expect(meta == WorkSpecMeta(paused: false, continuous: false, maxRunning: 3, weight: 7, interval: nil))

            await #expect(throws: CoordinateClientError.noSuchWorkSpec("zz")) { try await client.deleteWorkSpec("zz") }
            await #expect(throws: CoordinateClientError.noSuchWorkSpec("zz")) { try await client.workSpecMeta("zz") }
            await #expect(throws: CoordinateClientError.server(message: "No 'name' key in work spec")) {
                try await client.setWorkSpec(["min_gb": 1])
            }
            try await client.deleteWorkSpec("b")
            #expect(try await client.clear() == 2)
            #expect(try await client.allWorkSpecs().isEmpty)
        }
    }

    @Test("work units: add with priority and delay, list, page, count, status, prioritize, delete, retry")
    func workUnits() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits(
                "s",
                [
                    WorkUnitSubmission(key: "a", data: ["n": 1]),
                    WorkUnitSubmission(key: "b", data: ["n": 2], priority: 10),
                    WorkUnitSubmission(key: "c", priority: 5),
                    WorkUnitSubmission(key: "later", delay: 3600),
                ])
            #expect(try await client.countWorkUnits("s") == [.available: 4])
            #expect(try await client.workUnits("s").map(\.key) == ["a", "b", "c", "later"])
            #expect(try await client.workUnits("s", start: "b", limit: 2).map(\.key) == ["b", "c"])
            // State listings are in priority order.
            #expect(try await client.workUnits("s", states: [.available]).map(\.key) == ["b", "c", "a", "later"])
            #expect(
                try await client.workUnits("s", keys: ["a", "zz"])
                    == [WorkUnitEntry(key: "a", data: ["n": 1]), WorkUnitEntry(key: "zz", data: nil)])

            try await client.prioritizeWorkUnits("s", keys: ["a"], priority: 20)
            try await client.adjustPriority("s", keys: ["c"], by: 100)
            #expect(try await client.workUnits("s", states: [.available]).map(\.key) == ["c", "a", "b", "later"])

            // The delayed unit is never handed out; the best one is.
            let unit = try #require(try await client.getWork(workerID: "w1", specNames: ["s"]).first)
            #expect(unit.key == "c")
            #expect(unit.specNameString == "s")
            let status = try #require(try await client.workUnitStatus("s", keys: ["c", "zz"]).first ?? nil)
            #expect(status.status == .pending)
            #expect(status.workerID == .text("w1"))
            let lease = try #require(status.expiration)
            // default_lifetime (900 s) is what the client asks for.
            #expect(abs(lease - Date().timeIntervalSince1970 - 900) < 30)
            try await unit.fail(traceback: "boom")
            let failed = try #require(try await client.workUnitStatus("s", keys: ["c"]).first ?? nil)
            #expect(failed.status == .failed)
            #expect(failed.traceback == .text("boom"))
            try await client.retry("s", keys: ["c"])
            #expect(try await client.countWorkUnits("s") == [.available: 4])

            #expect(try await client.deleteWorkUnits("s", keys: ["a"]) == 1)
            #expect(try await client.deleteWorkUnits("s", state: .available) == 3)
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "x")])
            #expect(try await client.deleteAllWorkUnits("s") == 1)
            await #expect(throws: CoordinateClientError.noSuchWorkSpec("nope")) {
                try await client.addWorkUnits("nope", [WorkUnitSubmission(key: "x")])
            }
            await #expect(throws: CoordinateClientError.noSuchWorkSpec("nope")) {
                try await client.countWorkUnits("nope")
            }
        }
    }

    @Test("getWork for many units; finish, renew and a lost lease")
    func gettingWork() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            try await client.setWorkSpec(["name": "s", "then": "t"])
            try await client.setWorkSpec(["name": "t"])
            try await client.addWorkUnits("s", (0..<5).map { WorkUnitSubmission(key: .text("k\($0)")) })
            #expect(try await client.getWork(workerID: "w", specNames: ["t"]).isEmpty)
            let units = try await client.getWork(workerID: "w", specNames: ["s"], maxJobs: 3, leaseSeconds: 60)
            #expect(units.map(\.key) == [.text("k0"), .text("k1"), .text("k2")])
            try await units[0].renew()
            try await units[0].checkLease()
            try await units[0].finish(data: ["output": ["next-1": [:]]])
            // Chaining created a unit in `t`.
            #expect(try await client.workUnits("t").map(\.key) == ["next-1"])
            await #expect(throws: CoordinateClientError.lostLease("work unit is not pending")) {
                try await units[0].renew()
            }
            await #expect(throws: CoordinateClientError.lostLease("work unit is FINISHED")) {
                try await units[0].checkLease()
            }
            // Another worker takes over a released unit: the first one's lease is lost.
            try await units[1].release()
            let stolen = try await client.getWork(workerID: "other", specNames: ["s"])
            #expect(stolen.first?.key == units[1].key)
            await #expect(throws: CoordinateClientError.lostLease("work unit is held by other")) {
                try await units[1].checkLease()
            }
        }
    }

    @Test("workers: heartbeat, children, modes, counts, stats, info, unregister")
    func workers() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            try await client.workerHeartbeat(workerID: "parent", mode: "RUN", lifetime: 600, environment: ["pid": 1])
            try await client.workerHeartbeat(workerID: "child", mode: "RUN", lifetime: 600, parent: "parent")
            let message = try await client.workerHeartbeat(workerID: "odd", lifetime: -5)
            #expect(message == "negative expire time -5 defaulted to 5 minutes")
            #expect(try await client.workerModes().map(\.workerID) == [.text("child"), .text("odd"), .text("parent")])
            #expect(try await client.modeCounts().map(\.count).sorted() == [1, 2])
            #expect(try await client.workerStats() == WorkerStats(workers: 3, expirable: 3, parents: 1))
            #expect(try await client.workerInfo(workerID: "parent") == ["pid": 1])
            #expect(try await client.workerInfo(workerID: "ghost") == CBORValue?.none)

            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u", data: ["x": 1])])
            _ = try await client.getWork(workerID: "child")
            let children = try await client.childWorkUnits(parent: "parent")
            #expect(children.map(\.workerID) == [.text("child")])
            #expect(children.first?.units.first?.key == "u")
            #expect(children.first?.units.first?.workerID == .text("child"))
            #expect(try await client.workerUnregister(workerID: "child"))
            #expect(try await client.workerUnregister(workerID: "child") == false)
            #expect(try await client.childWorkUnits(parent: "parent").isEmpty)
        }
    }

    @Test("locks: lock, locksome, renew, readlock, list, unlock, delete_namespace")
    func locks() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            // An hour, not 30 s: this case is about contention, and on a loaded 2-core machine the suite running
            // beside it has stalled it past 30 s (the lock expired and every later expectation failed).
            #expect(try await client.lock(lockerID: "me", paths: [["jobs", "a"]], timeout: 3600).succeeded)
            let refused = try await client.lock(lockerID: "you", paths: [["jobs"]])
            #expect(refused == LockOutcome(succeeded: false, message: "['jobs'] is not lockable"))
            #expect(
                try await client.lockSome(lockerID: "you", paths: [["jobs", "a"], ["jobs", "b"]]) == [
                    [CBORValue]?.none, ["jobs", "b"],
                ])
            #expect(try await client.renewLocks(lockerID: "me", paths: [["jobs", "a"]], timeout: 60).succeeded)
            #expect(try await client.lockOwners(paths: [["jobs", "a"], ["jobs"]]) == [.text("me"), CBORValue?.none])
            let held = try await client.listLocks(prefix: "jobs")
            #expect(held.map(\.path) == [["jobs", "a"], ["jobs", "b"]])
            #expect(held.map(\.owner) == [.text("me"), .text("you")])
            #expect(
                try await client.unlock(lockerID: "you", paths: [["jobs", "a"]]).message
                    == "['jobs', 'a'] is held by 'me'")
            #expect(try await client.unlock(lockerID: "me", paths: [["jobs", "a"]]).succeeded)
            #expect(try await client.deleteLockNamespace("jobs") == 1)
            #expect(try await client.listLocks().isEmpty)
        }
    }

    @Test("raw calls, error responses and the daemon's clock and configuration")
    func rawCalls() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = makeClient(port: daemon.port)
            #expect(try await client.call("list_work_specs", [[:]]) == .tuple([[], nil]))
            await #expect(throws: CoordinateClientError.server(message: "no such method snapshot")) {
                try await client.call("snapshot")
            }
            // Bounded by the wall clock read around the call, so a slow machine cannot make this fail.
            let before = Date().timeIntervalSince1970
            let now = try await client.now()
            let after = Date().timeIntervalSince1970
            #expect(Double(now) >= before - 1 && Double(now) <= after + 1)
            let configuration = try await client.configuration()
            #expect(configuration.mapValue?["coordinate"]?.mapValue?["default_lifetime"] == 900)
            // The client keeps working after an error response and after close().
            await client.close()
            #expect(try await client.now() > 0)
        }
    }
}
