import CBOR
import CoordinateConfig
import CoordinateEngine
import Foundation
import TestSupport
import Testing

/// A deliberately naive model of one spec's units: arrays and sorting, no indexes.
struct ReferenceModel {
    struct Unit {
        var data: CBORValue
        var priority: Double
        var state: Int  // 1 available, 3 pending, 4 finished, 5 failed
        var deadline: Double = 0
    }

    var units: [String: Unit] = [:]
    var now: Double

    func observed(_ unit: Unit) -> Int { unit.state == 3 && unit.deadline < now ? 1 : unit.state }

    mutating func add(_ key: String, data: CBORValue, priority: Double?) {
        if var unit = units[key] {
            unit.state = 1
            unit.data = data
            if let priority { unit.priority = priority }
            units[key] = unit
        } else {
            units[key] = Unit(data: data, priority: priority ?? 0, state: 1)
        }
    }

    mutating func getWork(count: Int, lease: Double) -> [String] {
        let available = units.filter { observed($0.value) == 1 }.sorted {
            $0.value.priority != $1.value.priority
                ? $0.value.priority > $1.value.priority : $0.key.utf8.lexicographicallyPrecedes($1.key.utf8)
        }
        let taken = available.prefix(count).map(\.key)
        for key in taken {
            units[key]!.state = 3
            units[key]!.deadline = now + lease
        }
        return taken
    }

    mutating func update(_ key: String, status: Int) -> Bool {
        guard var unit = units[key] else { return false }
        let current = observed(unit)
        switch status {
        case 1: unit.state = 1
        case 3:
            if current != 3 { unit.deadline = now + 300 }
            unit.state = 3
        case 4: unit.state = 4
        case 5: if current != 4 { unit.state = 5 }
        default: break
        }
        units[key] = unit
        return true
    }

    func counts() -> [Int: Int] {
        var result: [Int: Int] = [:]
        for unit in units.values { result[observed(unit), default: 0] += 1 }
        return result
    }

    func listing() -> [(String, CBORValue)] {
        units.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }.map { ($0.key, $0.value.data) }
    }
}

@Suite("Randomized differential test against a reference model")
struct DifferentialTests {
    @Test(
        "random operations through the RPC surface agree with the model",
        arguments: TestDaemon.backends, [1, 2, 3] as [UInt64])
    func differential(storage: StorageKind, seed: UInt64) async throws {
        let clock = ManualClock()
        try await TestDaemon.with(storage: storage, clock: clock) { daemon in
            let c = try await daemon.connect()
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            var model = ReferenceModel(now: Double(clock.now()) / 1e6)
            var rng = SplitMix64(seed: seed)
            let keys = (0..<30).map { "k\($0)" } + ["ä", "\u{7f}x", "K"]
            for step in 0..<600 {
                let key = keys.randomElement(using: &rng)!
                switch Int.random(in: 0..<9, using: &rng) {
                case 0, 1:
                    let priority: Double? = Bool.random(using: &rng) ? Double(Int.random(in: -3...3, using: &rng)) : nil
                    let data = map([("step", .int(step))])
                    var item: [CBORValue] = [.bytes(key), data]
                    if let priority { item += [.null, .float(priority)] }
                    #expect(try await c.result("add_work_units", ["s", [.array(item)]]) == .tuple([true, .null]))
                    model.add(key, data: data, priority: priority)
                case 2:
                    let count = Int.random(in: 1...3, using: &rng)
                    let result = try await c.result(
                        "get_work", ["w", map([("max_jobs", .int(count + 1)), ("lease_time", 30)])])
                    let got = result.listElements?.first?.listElements?.compactMap { $0.listElements?[1].stringOctets }
                        .map {
                            String(decoding: $0, as: UTF8.self)
                        }
                    #expect(got == model.getWork(count: count + 1, lease: 30), "step \(step)")
                case 3, 4:
                    let status = [1, 3, 4, 5].randomElement(using: &rng)!
                    let result = try await c.result(
                        "update_work_unit", ["s", .bytes(key), map([("status", .int(status))])])
                    let known = model.update(key, status: status)
                    #expect(result.listElements?.first == .bool(known), "step \(step)")
                case 5:
                    let priority = Double(Int.random(in: -5...5, using: &rng))
                    _ = try await c.result(
                        "prioritize_work_units",
                        ["s", map([("work_unit_keys", [.bytes(key)]), ("priority", .float(priority))])])
                    model.units[key]?.priority = priority
                case 6:
                    let result = try await c.result("del_work_units", ["s", map([("work_unit_keys", [.bytes(key)])])])
                    let existed = model.units.removeValue(forKey: key) != nil
                    #expect(result == .tuple([.int(existed ? 1 : 0), .null]), "step \(step)")
                case 7:
                    let seconds = Double(Int.random(in: 0...40, using: &rng))
                    clock.advance(seconds: seconds)
                    model.now += seconds
                default:
                    let counts = try await c.result("count_work_units", ["s"])
                    var expected = CBORMap()
                    for (code, count) in model.counts().sorted(by: { $0.key < $1.key }) where count > 0 {
                        expected.append(.int(code), .int(count))
                    }
                    #expect(counts == .tuple([.map(expected), .null]), "step \(step)")
                    let listing = try await c.result("get_work_units", ["s", map([])])
                    let expectedListing = model.listing().map { CBORValue.tuple([.bytes($0.0), $0.1]) }
                    #expect(listing == .tuple([.array(expectedListing), .null]), "step \(step)")
                }
            }
        }
    }

    @Test(
        "64 connections doing get_work and finish never share a unit; every unit finishes exactly once",
        arguments: TestDaemon.backends)
    func concurrentConnections(storage: StorageKind) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let setup = try await daemon.connect()
            _ = try await setup.result("set_work_spec", [map([("name", "s")])])
            let total = 3000
            _ = try await setup.result(
                "add_work_units", ["s", .array((0..<total).map { .bytes(String(format: "u%05d", $0)) })])
            let perConnection = try await concurrently(64) { index in
                let connection = try await daemon.connect()
                var mine: [String] = []
                while true {
                    let result = try await connection.result(
                        "get_work", [.bytes("w\(index)"), map([("lease_time", 900)])])
                    guard let triple = result.listElements?.first?.listElements, let key = triple[1].stringOctets else {
                        break
                    }
                    let name = String(decoding: key, as: UTF8.self)
                    mine.append(name)
                    let done = try await connection.result(
                        "update_work_unit", ["s", .bytes(name), map([("status", 4)])])
                    #expect(done == .tuple([true, .null]))
                }
                return mine
            }
            let results = perConnection.flatMap { $0 }
            // Work was actually spread over the connections.
            #expect(perConnection.filter { !$0.isEmpty }.count > 1)
            #expect(results.count == total)
            #expect(Set(results).count == total)
            #expect(try await setup.result("count_work_units", ["s"]) == .tuple([map([(4, .int(total))]), .null]))
        }
    }
}
