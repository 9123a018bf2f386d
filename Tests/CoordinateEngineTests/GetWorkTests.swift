import CBOR
import CoordinateEngine
import Testing

/// Getting work: limits, filters, continuous specs, retries, termination (semantics.md §9; E-GET-3…9).
@Suite("Getting work")
struct GetWorkTests {
    @Test("max_getwork caps a batch; units come from one spec only", arguments: BackendKind.allCases)
    func maxGetwork(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("max_getwork", 10)])
        try await h.add("s", (1...99).map { String(format: "u%03d", $0) })
        let granted = try await h.getWork(count: 50)
        #expect(granted.map(\.unit.key.description) == (1...10).map { String(format: "u%03d", $0) })
        let other = try await EngineHarness(backend)
        try await other.spec("big", [("weight", 300)])
        try await other.spec("small")
        try await other.addMany("big", count: 4)
        try await other.addMany("small", count: 10)
        let batch = try await other.getWork(count: 10)
        #expect(batch.count == 4)
        #expect(Set(batch.map(\.spec.name.description)) == ["big"])
    }

    @Test("max_running is never exceeded and resumes after a finish", arguments: BackendKind.allCases)
    func maxRunning(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("max_running", 2)])
        try await h.addMany("s", count: 10)
        #expect(try await h.getWork(count: 5).count == 2)
        #expect(try await h.getWork().isEmpty)
        try await h.finish("s", "u0000")
        #expect(try await h.getWork(count: 5).count == 1)
        #expect(try await h.counts("s").pending == 2)
    }

    @Test("pause, name filter, runtime filter", arguments: BackendKind.allCases)
    func filters(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("plain")
        try await h.spec("go", [("runtime", "go")])
        try await h.addMany("plain", count: 3)
        try await h.addMany("go", count: 3)
        // The CBOR-RPC default runtime filter [""] never sees the go spec.
        #expect(try await h.getWork(names: ["go"]).isEmpty)
        #expect(try await h.getWork(runtimes: ["go"]).first?.spec.name.description == "go")
        #expect(try await h.getWork(names: ["go"], runtimes: nil).first?.spec.name.description == "go")
        _ = try await h.control("plain") { $0.status = 2 }
        #expect(try await h.getWork().isEmpty)
        _ = try await h.control("plain") { $0.status = 1 }
        #expect(try await h.getWork(names: ["plain", "nope"]).first?.spec.name.description == "plain")
        #expect(try await h.getWork(names: ["nope"]).isEmpty)
    }

    @Test("spec priority is absolute across filters", arguments: BackendKind.allCases)
    func specPriority(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("three", [("priority", 20)])
        try await h.spec("two", [("priority", 10)])
        try await h.spec("four", [("priority", 0)])
        for name in ["three", "two", "four"] { try await h.addMany(name, count: 5) }
        #expect(try await h.getWork(names: ["three"]).first?.spec.name.description == "three")
        #expect(try await h.getWork(names: ["three", "two"]).first?.spec.name.description == "three")
        #expect(try await h.getWork(names: ["four"]).first?.spec.name.description == "four")
        #expect(try await h.getWork(names: nil).first?.spec.name.description == "three")
    }

    @Test("max_retries fails units that used up their attempts", arguments: BackendKind.allCases)
    func maxRetries(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("max_retries", 2)])
        try await h.add("s", ["u"])
        #expect(try await h.getWork(lease: 1).count == 1)
        h.clock.advance(seconds: 2)
        #expect(try await h.getWork(lease: 1).count == 1)
        h.clock.advance(seconds: 2)
        #expect(try await h.getWork(lease: 1).isEmpty)
        let unit = try #require(try await h.unit("s", "u"))
        #expect(unit.state == .failed)
        #expect(unit.data.decoded().mapValue?["traceback"] == .text("too many retries"))
        #expect(try await h.attempts("s", "u").map(\.status) == [.expired, .expired, .failed])
        // Re-adding restarts the count.
        try await h.add("s", ["u"])
        #expect(try await h.getWork(lease: 1).count == 1)

        // The batch is not topped up when a unit fails (semantics.md §9.4 example).
        let b = try await EngineHarness(backend)
        try await b.spec("s", [("max_getwork", 2), ("max_retries", 1)])
        try await b.add("s", ["a", "b", "c", "d"])
        #expect(try await b.getWork(count: 5, lease: 1).map(\.unit.key.description) == ["a", "b"])
        try await b.finish("s", "a")
        b.clock.advance(seconds: 2)
        #expect(try await b.getWork(count: 5, lease: 1).map(\.unit.key.description) == ["c"])
        let both = try await EngineHarness(backend)
        try await both.spec("s", [("max_getwork", 2), ("max_retries", 1)])
        try await both.add("s", ["a", "b", "c", "d"])
        _ = try await both.getWork(count: 5, lease: 1)
        both.clock.advance(seconds: 2)
        #expect(try await both.getWork(count: 5, lease: 1).map(\.unit.key.description) == ["c", "d"])
    }

    @Test("continuous specs: key format, one per call, interval, max_running, control", arguments: BackendKind.allCases)
    func continuous(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("c", [("continuous", true), ("interval", 60), ("max_running", 1)])
        let start = h.now
        let first = try await h.getWork(count: 5)
        #expect(first.count == 1)
        let key = try #require(first.first?.unit.key)
        #expect(!key.isText)
        #expect(key.description == "\(start / 1_000_000).\(String(format: "%06d", start % 1_000_000))")
        #expect(first.first?.unit.priority == -1)
        h.clock.advance(seconds: 30)
        try await h.finish("c", key.description)
        #expect(try await h.getWork().isEmpty)
        h.clock.advance(seconds: 29)
        #expect(try await h.getWork().isEmpty)
        h.clock.advance(seconds: 1)
        let second = try await h.getWork()
        #expect(second.count == 1)
        h.clock.advance(seconds: 30)
        try await h.finish("c", second[0].unit.key.description)
        h.clock.advance(seconds: 29)
        #expect(try await h.getWork().isEmpty)
        h.clock.advance(seconds: 1)
        #expect(try await h.getWork().count == 1)
        // max_running gates minting; control can switch continuous off and on.
        #expect(try await h.getWork().isEmpty)
        let c2 = try await EngineHarness(backend)
        try await c2.spec("c", [("continuous", true)])
        #expect(try await c2.getWork().count == 1)
        _ = try await c2.control("c") { $0.continuous = false }
        #expect(try await c2.getWork().isEmpty)
        _ = try await c2.control("c") { $0.continuous = true }
        #expect(try await c2.getWork().count == 1)
        // A spec whose data is not continuous cannot be made continuous.
        try await c2.spec("plain")
        #expect(
            try await c2.control("plain") { $0.continuous = true }
                == .cannotBeContinuous(name: Identifier(bytes: "plain")))
    }

    @Test("get_work terminates when every taken unit is failed by max_retries", arguments: BackendKind.allCases)
    func termination(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("max_retries", 1)])
        try await h.addMany("s", count: 40)
        _ = try await h.getWork(count: 40, lease: 1)
        h.clock.advance(seconds: 2)
        // Every unit has used its one attempt: 16 rounds of failures, then an empty result.
        let result = try await h.getWork(count: 1, lease: 1)
        #expect(result.isEmpty)
        #expect(try await h.counts("s").failed == 16)
    }
}
