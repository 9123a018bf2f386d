import CBOR
import CoordinateEngine
import Testing

/// The scheduler cases of semantics.md §10.5 (E-SCHED), run against every backend.
@Suite("Scheduler (semantics.md §10)")
struct SchedulerTests {
    func picks(_ harness: EngineHarness, _ count: Int) async throws -> [String] {
        var result: [String] = []
        for _ in 0..<count { result.append(try await harness.pick() ?? "-") }
        return result
    }

    @Test("S1: weights 4 and 6 interleave exactly", arguments: BackendKind.allCases)
    func s1(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("weight", 4)])
        try await h.spec("b", [("weight", 6)])
        try await h.addMany("a", count: 99)
        try await h.addMany("b", count: 99)
        #expect(try await picks(h, 10) == ["b", "a", "b", "a", "b", "b", "a", "b", "a", "b"])
    }

    @Test("S2: weights 1 and 10 share pending work 1:10", arguments: BackendKind.allCases)
    func s2(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("weight", 1)])
        try await h.spec("b", [("weight", 10)])
        try await h.addMany("a", count: 200)
        try await h.addMany("b", count: 200)
        let first = try await picks(h, 11)
        #expect(first == Array(repeating: "b", count: 9) + ["a", "b"])
        let rest = try await picks(h, 99)
        let all = first + rest
        #expect(all.filter { $0 == "a" }.count == 10)
        #expect(all.filter { $0 == "b" }.count == 100)
    }

    @Test(
        "S3: with every unit finished before the next request, the heavier spec always wins",
        arguments: BackendKind.allCases)
    func s3(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("weight", 1)])
        try await h.spec("b", [("weight", 10)])
        try await h.addMany("a", count: 5)
        try await h.addMany("b", count: 5)
        var sequence: [String] = []
        for _ in 0..<10 {
            guard let granted = try await h.getWork().first else { break }
            sequence.append(granted.spec.name.description)
            try await h.finish(granted.spec.name.description, granted.unit.key.description)
        }
        #expect(sequence == ["b", "b", "b", "b", "b", "a", "a", "a", "a", "a"])
    }

    @Test(
        "S4: higher unit priority wins first, then the score rule counts those pending units",
        arguments: BackendKind.allCases)
    func s4(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("weight", 1)])
        try await h.spec("b", [("weight", 10)])
        try await h.add("a", ["p1", "p2", "p3", "p4"], priority: 9)
        try await h.addMany("a", count: 50)
        try await h.addMany("b", count: 50)
        #expect(try await picks(h, 4) == ["a", "a", "a", "a"])
        // a: 4 pending at weight 1 (score 5); b wins until its 49 pending units tie that score (50/10), and a
        // tie goes to the earlier list.
        let next = try await picks(h, 49)
        #expect(next.allSatisfy { $0 == "b" })
        #expect(try await picks(h, 2) == ["a", "b"])
    }

    @Test("S5: spec priority is absolute", arguments: BackendKind.allCases)
    func s5(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("hi", [("priority", 2)])
        try await h.spec("lo1", [("weight", 1)])
        try await h.spec("lo2", [("weight", 2)])
        try await h.addMany("hi", count: 3)
        try await h.addMany("lo1", count: 10)
        try await h.addMany("lo2", count: 10)
        #expect(try await picks(h, 3) == ["hi", "hi", "hi"])
        #expect(try await picks(h, 3) == ["lo2", "lo1", "lo2"])
    }

    @Test(
        "S6: along a path the furthest-downstream spec with work wins; pausing moves upstream",
        arguments: BackendKind.allCases)
    func s6(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("then", "b")])
        try await h.spec("b", [("then", "c")])
        try await h.spec("c")
        for name in ["a", "b", "c"] { try await h.addMany(name, count: 20) }
        #expect(try await picks(h, 3) == ["c", "c", "c"])
        _ = try await h.control("c") { $0.status = 2 }
        #expect(try await h.pick() == "b")
        _ = try await h.control("b") { $0.status = 2 }
        #expect(try await h.pick() == "a")
        _ = try await h.control("b") { $0.status = 1 }
        #expect(try await h.pick() == "b")
        _ = try await h.control("c") { $0.status = 1 }
        #expect(try await h.pick() == "c")
    }

    @Test("S7: then_preempts false keeps the upstream spec in front", arguments: BackendKind.allCases)
    func s7(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("weight", 100), ("then", "b"), ("then_preempts", false)])
        try await h.spec("b", [("weight", 1)])
        try await h.addMany("a", count: 3)
        try await h.addMany("b", count: 3)
        #expect(try await picks(h, 3) == ["a", "a", "a"])
        #expect(try await h.pick() == "b")
    }

    @Test("S8: mixed then_preempts along a three-spec path", arguments: BackendKind.allCases)
    func s8(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("weight", 40), ("then", "b")])
        try await h.spec("b", [("weight", 20), ("then", "c"), ("then_preempts", false)])
        try await h.spec("c", [("weight", 20)])
        try await h.addMany("c", count: 5)
        #expect(try await h.pick() == "c")
        try await h.addMany("a", count: 5)
        #expect(try await h.pick() == "a")
        try await h.addMany("b", count: 5)
        #expect(try await h.pick() == "b")
    }

    @Test("S9: a path spec beats loops and continuous specs", arguments: BackendKind.allCases)
    func s9(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("p", [("then", "q")])
        try await h.spec("q")
        try await h.spec("l", [("then", "l")])
        try await h.spec("c", [("continuous", true)])
        try await h.addMany("p", count: 10)
        try await h.addMany("l", count: 10)
        #expect(try await picks(h, 6) == Array(repeating: "p", count: 6))
    }

    @Test("S9b: a lone continuous spec mints a distinct unit on every request", arguments: BackendKind.allCases)
    func s9b(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("c", [("continuous", true)])
        var keys = Set<String>()
        for _ in 0..<10 {
            let granted = try await h.getWork()
            #expect(granted.count == 1)
            #expect(granted.first?.spec.name.description == "c")
            if let key = granted.first?.unit.key { keys.insert(key.description) }
        }
        // The clock is frozen: keys are made unique by adding microseconds.
        #expect(keys.count == 10)
    }

    @Test("S10: empty continuous spec versus a loop, 10:1", arguments: BackendKind.allCases)
    func s10(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("c", [("continuous", true)])
        try await h.spec("l", [("then", "l")])
        try await h.addMany("l", count: 40)
        let expected = ["l", "l", "l", "l", "l", "c", "l", "l", "l", "l", "l"]
        #expect(try await picks(h, 22) == expected + expected)
    }

    @Test(
        "S11: a continuous source with real units is both a source and a continuous spec",
        arguments: BackendKind.allCases)
    func s11(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("c", [("continuous", true)])
        try await h.spec("l", [("then", "l")])
        try await h.addMany("c", count: 100)
        try await h.addMany("l", count: 100)
        let expected = "c l c c l c c l c c l c c c l c c l c c l c c l c c l c c l c".split(separator: " ").map(
            String.init)
        #expect(try await picks(h, 31) == expected)
    }

    @Test("S12: negative unit priorities are not a handicap when alone", arguments: BackendKind.allCases)
    func s12(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a")
        try await h.spec("b")
        try await h.add("a", ["n1", "n2"], priority: -5)
        #expect(try await h.pick() == "a")
        try await h.add("b", ["z"], priority: 0)
        #expect(try await h.pick() == "b")
    }

    @Test("S13: weight 0 is never scheduled and never fails", arguments: BackendKind.allCases)
    func s13(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("zero", [("weight", 0)])
        try await h.addMany("zero", count: 3)
        #expect(try await h.getWork().isEmpty)
        #expect(try await h.getWork(count: 5).isEmpty)
    }

    @Test("S14: then naming a missing spec does not hide the source", arguments: BackendKind.allCases)
    func s14(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("then", "b")])
        try await h.addMany("a", count: 2)
        #expect(try await h.pick() == "a")
    }

    @Test("long-run shares stay proportional to weights", arguments: BackendKind.allCases)
    func longRunShares(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        let weights: [String: Int] = ["a": 3, "b": 7, "c": 11, "d": 20]
        for (name, weight) in weights.sorted(by: { $0.key < $1.key }) {
            try await h.spec(name, [("weight", .int(weight))])
            try await h.addMany(name, count: 500)
        }
        var granted: [String: Int] = [:]
        for round in 1...600 {
            guard let name = try await h.pick() else { break }
            granted[name, default: 0] += 1
            for (i, wi) in weights {
                for (j, wj) in weights where i < j {
                    let ratio = abs(
                        Double(granted[i, default: 0]) / Double(wi) - Double(granted[j, default: 0]) / Double(wj))
                    #expect(ratio <= 1.0 / Double(min(wi, wj)) + 1e-9, "after \(round) grants: \(i)/\(j)")
                }
            }
        }
    }

    @Test("the graph of semantics.md §10.2")
    func graphTable() {
        func input(_ name: String, then: String? = nil, continuous: Bool = false) -> SchedulerInput {
            var fields = SpecFields()
            fields.then = then.map { Identifier(bytes: $0) }
            fields.continuous = continuous
            fields.canBeContinuous = continuous
            return SchedulerInput(
                name: Identifier(bytes: name), fields: fields, nextContinuous: nil, pending: 0, available: 1,
                unitPriority: 0)
        }
        func names(_ specs: [SchedulerInput], _ lists: [[Int]]) -> [[String]] {
            lists.map { $0.map { specs[$0].name.description } }
        }
        var specs = [input("a")]
        var graph = SchedulerGraph(specs: specs)
        #expect(names(specs, graph.paths) == [["a"]])
        #expect(graph.sources == [0])

        specs = [input("a", then: "b"), input("b", then: "c"), input("c")]
        graph = SchedulerGraph(specs: specs)
        #expect(names(specs, graph.paths) == [["a", "b", "c"]])

        specs = [input("a", then: "a")]
        graph = SchedulerGraph(specs: specs)
        #expect(graph.sources.isEmpty && graph.paths.isEmpty)
        #expect(names(specs, graph.loops) == [["a"]])

        specs = [
            input("a", then: "b"), input("b", then: "c"), input("c", then: "d"), input("d", then: "e"),
            input("e", then: "d"),
        ]
        graph = SchedulerGraph(specs: specs)
        #expect(names(specs, graph.paths) == [["a", "b", "c"]])
        #expect(names(specs, graph.loops) == [["d", "e"]])

        specs = [
            input("continuous", then: "path", continuous: true), input("loop", then: "loop"), input("path"),
            input("source", then: "path"),
        ]
        graph = SchedulerGraph(specs: specs)
        #expect(names(specs, [graph.sources]) == [["continuous", "source"]])
        #expect(names(specs, graph.paths) == [["source", "path"]])
        #expect(names(specs, graph.loops) == [["loop"]])
        #expect(names(specs, [graph.continuous]) == [["continuous"]])

        specs = [input("a"), input("b")]
        graph = SchedulerGraph(specs: specs)
        #expect(names(specs, graph.paths) == [["a"], ["b"]])
    }
}
