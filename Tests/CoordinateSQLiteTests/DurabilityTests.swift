import CBOR
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

func cbormap(_ pairs: [(CBORValue, CBORValue)]) -> CBORValue { .map(CBORMap(pairs)) }

/// A fresh data directory for one daemon.
func temporaryDataDirectory() -> String {
    let path = NSTemporaryDirectory() + "coordinate-sqlite-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Starts `coordinated` on SQLite in `directory` and waits until storage answers.
func startSQLiteDaemon(
    _ directory: String, extra: [String] = [], environment: [String: String] = [:]
) throws
    -> DaemonProcess
{
    let daemon = try DaemonProcess(
        arguments: ["--storage", "sqlite", "--data-dir", directory, "-q"] + extra, environment: environment)
    let connection = try RawConnection(port: daemon.port)
    for _ in 0..<200 {
        if (try? connection.result("now")) != nil, (try? connection.result("list_work_specs", [cbormap([])])) != nil {
            return daemon
        }
        usleep(20_000)
    }
    return daemon
}

/// Crash-safety of the SQLite backend with a real process killed with SIGKILL (storage.md §7.3 DUR-1, DUR-2).
@Suite("SQLite durability across kill -9", .serialized)
struct DurabilityTests {
    /// What one client managed to get acknowledged before the kill.
    struct Acknowledged: Sendable {
        var addedCalls: [Int] = []
        var finishedKeys: [String] = []
    }

    @Test("every acknowledged change survives kill -9, nothing is half-applied (20 kills)")
    func killNineLoop() async throws {
        let directory = temporaryDataDirectory()
        var acknowledgedAdds: Set<String> = []
        var acknowledgedFinishes: Set<String> = []
        var attemptedCalls: [String: [String]] = [:]
        for round in 0..<20 {
            let daemon = try startSQLiteDaemon(directory)
            let setup = try RawConnection(port: daemon.port)
            _ = try await setup.result("set_work_spec", [cbormap([("name", "s")])])
            // Everything acknowledged in earlier rounds is present.
            try verify(port: daemon.port, adds: acknowledgedAdds, finishes: acknowledgedFinishes, calls: attemptedCalls)
            let clients = 4
            let delay = useconds_t(150_000 + (round % 5) * 40_000)
            let killer = Thread {
                usleep(delay)
                daemon.signal(SIGKILL)
            }
            killer.start()
            let results = try await runOnThreads(clients) { client -> (Acknowledged, [String: [String]]) in
                let connection = try RawConnection(port: daemon.port, receiveTimeout: 5)
                var acknowledged = Acknowledged()
                var calls: [String: [String]] = [:]
                for call in 0..<1_000_000 {
                    let keys = (0..<3).map { "r\(round)-c\(client)-n\(call)-\($0)" }
                    let callName = "r\(round)-c\(client)-n\(call)"
                    calls[callName] = keys
                    let items = CBORValue.array(
                        keys.map { .tuple([.bytes($0), cbormap([("call", .bytes(callName))])]) })
                    guard (try? connection.result("add_work_units", ["s", items])) == .tuple([true, .null]) else {
                        break
                    }
                    acknowledged.addedCalls.append(call)
                    guard
                        (try? connection.result("update_work_unit", ["s", .bytes(keys[0]), cbormap([("status", 4)])]))
                            == .tuple([true, .null])
                    else { break }
                    acknowledged.finishedKeys.append(keys[0])
                }
                return (acknowledged, calls)
            }
            for (client, (acknowledged, calls)) in results.enumerated() {
                for call in acknowledged.addedCalls {
                    for key in calls["r\(round)-c\(client)-n\(call)"]! { acknowledgedAdds.insert(key) }
                }
                acknowledgedFinishes.formUnion(acknowledged.finishedKeys)
                attemptedCalls.merge(calls) { $1 }
            }
            _ = daemon.waitForExit(timeout: 10)
        }
        let daemon = try startSQLiteDaemon(directory)
        try verify(port: daemon.port, adds: acknowledgedAdds, finishes: acknowledgedFinishes, calls: attemptedCalls)
        #expect(acknowledgedAdds.count > 100, "the workload did run")
        daemon.stop()
    }

    /// Acknowledged adds and finishes are present; every add call is all-or-nothing.
    func verify(port: Int, adds: Set<String>, finishes: Set<String>, calls: [String: [String]]) throws {
        let connection = try RawConnection(port: port)
        var present: [String: CBORValue] = [:]
        var start: CBORValue = .null
        while true {
            let page = try connection.result("get_work_units", ["s", cbormap([("start", start), ("limit", 10000)])])
            guard let list = page.listElements?.first?.listElements, !list.isEmpty else { break }
            for entry in list {
                guard let parts = entry.listElements, let key = parts[0].stringOctets else { continue }
                present[String(decoding: key, as: UTF8.self)] = parts[1]
            }
            if list.count < 10000 { break }
            let last = list.last!.listElements![0].stringOctets!
            start = .bytes(last + [0])
        }
        for key in adds { #expect(present[key] != nil, "acknowledged add \(key) lost") }
        for (name, keys) in calls {
            let found = keys.filter { present[$0] != nil }.count
            #expect(found == 0 || found == keys.count, "call \(name) half-applied: \(found) of \(keys.count)")
        }
        if !finishes.isEmpty {
            let status = try connection.result("get_work_unit_status", ["s", .array(finishes.map { .bytes($0) })])
            for entry in status.listElements?.first?.listElements ?? [] {
                #expect(entry.mapValue?["status"] == 4, "acknowledged finish lost")
            }
        }
    }

    @Test("a lease survives a restart with its worker and deadline, and expires on time afterwards")
    func leasesSurviveRestart() async throws {
        let directory = temporaryDataDirectory()
        var daemon = try startSQLiteDaemon(directory)
        var connection = try RawConnection(port: daemon.port)
        _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
        _ = try await connection.result("add_work_units", ["s", ["u"]])
        _ = try await connection.result("get_work", ["w1", cbormap([("lease_time", 3)])])
        let before = try await connection.result("get_work_unit_status", ["s", ["u"]])
        daemon.signal(SIGKILL)
        _ = daemon.waitForExit()
        daemon = try startSQLiteDaemon(directory)
        connection = try RawConnection(port: daemon.port)
        let after = try await connection.result("get_work_unit_status", ["s", ["u"]])
        #expect(after == before)
        #expect(after.listElements?.first?.listElements?.first?.mapValue?["status"] == 3)
        let deadline = after.listElements?.first?.listElements?.first?.mapValue?["expiration"]?.strictNumber ?? 0
        let remaining = deadline - Date().timeIntervalSince1970
        #expect(remaining > 0)
        try await Task.sleep(for: .seconds(max(0, remaining) + 0.2))
        #expect(try await connection.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 1)]), .null]))
        daemon.stop()
    }

    @Test("64 concurrent writers: all answered, all durable after kill -9")
    func concurrentWriters() async throws {
        let directory = temporaryDataDirectory()
        var daemon = try startSQLiteDaemon(directory)
        let setup = try RawConnection(port: daemon.port)
        _ = try await setup.result("set_work_spec", [cbormap([("name", "s")])])
        let port = daemon.port
        let acknowledged = try await runOnThreads(64) { writer -> Int in
            let connection = try RawConnection(port: port)
            for index in 0..<25 {
                let result = try connection.result("add_work_units", ["s", [.bytes("w\(writer)-\(index)")]])
                #expect(result == .tuple([true, .null]))
            }
            return 25
        }
        #expect(acknowledged.reduce(0, +) == 1600)
        daemon.signal(SIGKILL)
        _ = daemon.waitForExit()
        daemon = try startSQLiteDaemon(directory)
        let connection = try RawConnection(port: daemon.port)
        #expect(try await connection.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 1600)]), .null]))
        daemon.stop()
    }
}
