import CBOR
import CoordinateEngine
import Testing

/// Specs, chaining, archive, clear and namespaces (E-SPEC, E-CHAIN, E-ARCH, E-CLEAR, E-NS, E-VAL-1).
@Suite("Specs and chaining")
struct ChainingAndSpecTests {
    @Test("derived fields and validation reasons")
    func derivedFields() throws {
        func fields(_ pairs: [(String, CBORValue)]) throws -> SpecFields {
            var map = CBORMap([("name", "x")])
            for (key, value) in pairs { map.append(.bytes(key), value) }
            return try SpecDerivation.fields(of: map)
        }
        #expect(try fields([("nice", 5)]).weight == 15)
        #expect(try fields([("nice", 100)]).weight == 1)
        #expect(try fields([("nice", -80)]).weight == 100)
        #expect(try fields([("weight", 50), ("nice", 5)]).weight == 50)
        #expect(try fields([("weight", 0)]).weight == 0)
        #expect(try fields([("then_preempts", .null)]).thenPreempts == false)
        #expect(try fields([]).thenPreempts == true)
        #expect(try fields([("max_running", 0)]).maxRunning == nil)
        #expect(try fields([("interval", "2.5")]).interval == 2_500_000)
        #expect(try fields([("weight", 1e12)]).weight == 2_147_483_647)
        #expect(try fields([("disabled", 1)]).paused)
        for (key, value, reason) in [
            ("weight", CBORValue.text("heavy"), "expected an integer"),
            ("priority", .float(.nan), "expected an integer"),
            ("interval", .text("soon"), "expected a number"), ("max_running", .float(.infinity), "expected an integer"),
            ("then", 5, "expected a string"), ("runtime", [1], "expected a string"),
            ("nice", "x", "expected an integer"),
        ] {
            #expect(throws: EngineError.invalidWorkSpec(key: key, reason: reason)) { try fields([(key, value)]) }
        }
        #expect(throws: EngineError.noWorkSpecName) { try SpecDerivation.name(of: CBORMap()) }
        #expect(throws: EngineError.noWorkSpecName) { try SpecDerivation.name(of: CBORMap([("name", "")])) }
        #expect(throws: EngineError.workSpecNameNotString) { try SpecDerivation.name(of: CBORMap([("name", 4)])) }
    }

    @Test(
        "re-setting a spec re-derives fields, clears overrides, keeps units and next_continuous",
        arguments: BackendKind.allCases)
    func resetSpec(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("continuous", true), ("interval", 60)])
        _ = try await h.getWork()
        _ = try await h.control("s") { $0.status = 2 }
        try await h.spec("s", [("continuous", true), ("interval", 60), ("weight", 5)])
        let namespace = h.namespace
        let spec = try #require(
            try await h.run { tx in try tx.spec(namespace: namespace, named: Identifier(bytes: "s")) })
        #expect(!spec.effective.paused)
        #expect(spec.effective.weight == 5)
        #expect(spec.nextContinuous == h.now + 60_000_000)
        #expect(try await h.counts("s").pending == 1)
    }

    @Test("control_work_spec overrides without changing the data; all or nothing", arguments: BackendKind.allCases)
    func control(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("weight", 3)])
        #expect(
            try await h.control("s") {
                $0.weight = 7; $0.maxRunning = .some(4); $0.interval = .some(2)
            } == .applied)
        let namespace = h.namespace
        var spec = try #require(
            try await h.run { tx in try tx.spec(namespace: namespace, named: Identifier(bytes: "s")) })
        #expect(spec.effective.weight == 7 && spec.effective.maxRunning == 4 && spec.effective.interval == 2_000_000)
        #expect(spec.data.decoded().mapValue?["weight"] == 3)
        #expect(
            try await h.control("s") {
                $0.weight = 1; $0.status = 3
            } == .invalidStatus(3))
        spec = try #require(try await h.run { tx in try tx.spec(namespace: namespace, named: Identifier(bytes: "s")) })
        #expect(spec.effective.weight == 7)
        #expect(try await h.control("nope") { $0.weight = 1 } == .noSuchSpec)
        #expect(try await h.control("s") { $0.maxRunning = .some(nil) } == .applied)
        spec = try #require(try await h.run { tx in try tx.spec(namespace: namespace, named: Identifier(bytes: "s")) })
        #expect(spec.effective.maxRunning == nil)
    }

    @Test(
        "chaining: every output shape, priority inheritance, delay, malformed elements skipped",
        arguments: BackendKind.allCases)
    func chaining(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a", [("then", "b")])
        try await h.spec("b")
        try await h.add("a", ["u"], priority: 3)
        let output: CBORValue = [
            "s1", ["s2", .map(CBORMap([("d", 1)]))], ["s3", 1, .map(CBORMap([("priority", 7)]))], ["s4", 2, .null, 9],
            ["s5", 3, .map(CBORMap([("delay", 60)]))], 5, ["bad"], ["k", 1, "meta"], [1, 2], ["p", 1, .null, "x"],
            .bytes([0xff, 0x00]),
        ]
        try await h.finish("a", "u", data: .map(CBORMap([("output", output)])))
        func priority(_ key: String) async throws -> Double? { try await h.unit("b", key)?.priority }
        #expect(try await priority("s1") == 3)
        #expect(try await priority("s2") == 3)
        #expect(try await h.unit("b", "s2")?.data.decoded() == .map(CBORMap([("d", 1)])))
        #expect(try await priority("s3") == 7)
        #expect(try await priority("s4") == 9)
        #expect(try await h.unit("b", "s5")?.notBefore == h.now + 60_000_000)
        #expect(try await h.unit("b", "bad") == nil)
        #expect(try await h.unit("b", "k") == nil)
        #expect(try await h.unit("b", "p") == nil)
        #expect(try await h.counts("b").total == 6)
        // A map output; re-chaining an existing key resets it with the inherited priority.
        try await h.update("b", "s1", status: 4)
        try await h.add("a", ["v"], priority: 8)
        try await h.finish("a", "v", data: .map(CBORMap([("output", .map(CBORMap([("s1", "again"), ("m", .null)])))])))
        let reset = try #require(try await h.unit("b", "s1"))
        #expect(reset.state == .available && reset.priority == 8 && reset.data.decoded() == "again")
        #expect(try await h.unit("b", "m") != nil)
        // No chaining when then names a missing spec, or output is falsy.
        try await h.spec("x", [("then", "missing")])
        try await h.add("x", ["u"])
        try await h.finish("x", "u", data: .map(CBORMap([("output", ["z"])])))
        try await h.add("a", ["w"], data: .map(CBORMap([("output", ["from-original"])])))
        try await h.finish("a", "w")
        #expect(try await h.unit("b", "from-original") != nil)
    }

    @Test("archive by count and age keeps counts; del_work_units forgets archived", arguments: BackendKind.allCases)
    func archive(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["wu1", "wu2", "wu3"])
        for key in ["wu1", "wu2", "wu3"] {
            try await h.finish("s", key)
            h.clock.advance(seconds: 10)
        }
        let namespace = h.namespace
        _ = try await h.run { tx in try tx.archive(namespace: namespace, specNames: nil, countLimit: 2, ageLimit: nil) }
        #expect(try await h.unit("s", "wu1") == nil)
        #expect(try await h.unit("s", "wu2") != nil)
        let counted = try #require(
            try await h.run { tx in try tx.countWorkUnits(namespace: namespace, spec: Identifier(bytes: "s")) })
        #expect(counted.counts.finished == 2 && counted.archivedFinished == 1)

        let age = try await EngineHarness(backend)
        try await age.spec("s")
        try await age.add("s", ["wu1", "wu2", "wu3"])
        let base = age.now
        for (index, key) in ["wu1", "wu2", "wu3"].enumerated() {
            age.clock.set(base + Int64(110 + 10 * index) * 1_000_000)
            try await age.finish("s", key)
        }
        for (pass, gone) in [(130, "wu1"), (140, "wu2"), (150, "wu3")] {
            age.clock.set(base + Int64(pass) * 1_000_000)
            let ns = age.namespace
            _ = try await age.run { tx in try tx.archive(namespace: ns, specNames: nil, countLimit: nil, ageLimit: 15) }
            #expect(try await age.unit("s", gone) == nil, "pass at \(pass)")
        }
        let outcome = try await h.run { tx in
            try tx.deleteWorkUnits(namespace: namespace, spec: Identifier(bytes: "s"), all: true, keys: nil, state: nil)
        }
        #expect(outcome == .deleted(3))
    }

    @Test("clear deletes specs and resets the scheduler; workers and locks stay", arguments: BackendKind.allCases)
    func clear(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("a")
        try await h.spec("b")
        let namespace = h.namespace
        try await h.run { tx in
            try tx.workerHeartbeat(
                namespace: namespace, worker: Identifier(bytes: "w"), mode: .null, data: .null, parent: nil,
                expiresIn: 60_000_000)
            _ = try tx.lock(namespace: namespace, owner: Identifier(bytes: "o"), timeout: nil, paths: [["x"]])
        }
        #expect(try await h.run { tx in try tx.clear(namespace: namespace) } == 2)
        try await h.spec("c")
        try await h.addMany("c", count: 1)
        #expect(try await h.pick() == "c")
        #expect(try await h.run { tx in try tx.liveWorkers(namespace: namespace).count } == 1)
        #expect(try await h.run { tx in try tx.listLocks(namespace: namespace, prefix: nil).count } == 1)
    }

    @Test("namespaces are isolated", arguments: BackendKind.allCases)
    func namespaces(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        let one = Identifier(text: "one")
        let two = Identifier(text: "two")
        try await h.run { tx in
            try tx.setWorkSpec(namespace: one, data: CBORMap([("name", "s")]))
            try tx.setWorkSpec(namespace: two, data: CBORMap([("name", "s")]))
            _ = try tx.addWorkUnits(
                namespace: one, spec: Identifier(bytes: "s"),
                UnitItemBatch(items: [UnitItem(key: Identifier(bytes: "u"), data: .emptyMap)], count: 1))
        }
        let counts = try await h.run { tx in
            (
                try tx.countWorkUnits(namespace: one, spec: Identifier(bytes: "s"))!.counts.total,
                try tx.countWorkUnits(namespace: two, spec: Identifier(bytes: "s"))!.counts.total
            )
        }
        #expect(counts.0 == 1 && counts.1 == 0)
        try await h.run { tx in
            let deleted = try tx.deleteNamespace(one, keepRecord: false)
            #expect(deleted)
        }
        #expect(try await h.run { tx in try tx.spec(namespace: one, named: Identifier(bytes: "s")) } == nil)
        #expect(try await h.run { tx in try tx.spec(namespace: two, named: Identifier(bytes: "s")) } != nil)
    }

    @Test("data round-trips value-identically", arguments: BackendKind.allCases)
    func valueRoundTrip(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        let data: CBORValue = .map(
            CBORMap([
                (.tuple([1, .tuple([])]), [.uuid(CBORUUID(high: 1, low: 2))]), (.bytes("fü"), .text("fü")),
                (.int(1), .null), (.null, .float(2.5)), (.float(1.5), .negative(UInt64.max)),
                ("big", .unsigned(UInt64.max)),
                ("tag", .tagged(1000, [1, .text("x")])), ("empty", []), ("bytes", .bytes([0xff])),
            ]))
        for key in ["\u{0}", "\u{ff}"] { try await h.add("s", [key], data: data) }
        try await h.add("s", ["k"], data: data)
        #expect(try await h.unit("s", "k")?.data.decoded() == data)
        let granted = try await h.getWork()
        #expect(granted.first?.unit.data.decoded() == data)
    }
}

@Suite("Summaries and binary keys")
struct SummaryTests {
    @Test("summaries list non-zero counts in namespace, spec, status order", arguments: BackendKind.allCases)
    func summary(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("b")
        try await h.spec("a")
        try await h.add("a", ["x", "y", "z"])
        try await h.add("b", ["late"], delay: 60)
        _ = try await h.getWork(names: ["a"])
        try await h.update("a", "y", status: 5)
        let records = try await h.run { tx in try tx.summary(namespace: nil) }
        #expect(
            records.map { "\($0.spec):\($0.bucket.name):\($0.count)" } == [
                "a:available:1", "a:pending:1", "a:failed:1", "b:delayed:1",
            ])
    }

    @Test(
        "binary keys are listed, granted and finished with their exact octets and kind", arguments: BackendKind.allCases
    )
    func binaryKeys(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        let keys: [Identifier] = [
            Identifier(octets: [0x00], isText: false), Identifier(octets: [0xff], isText: false),
            Identifier(octets: [0xff, 0x80], isText: false), Identifier(octets: [0x66, 0xfc], isText: true),
            Identifier(octets: [0x66, 0xc3, 0xbc], isText: false),
            Identifier(octets: [0xff, 0xfe, 0x41, 0x00], isText: false),
        ]
        let namespace = h.namespace
        let items = keys.map { UnitItem(key: $0, data: .emptyMap) }
        _ = try await h.run { tx in
            try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: "s"), UnitItemBatch(items: items, count: items.count))
        }
        let listed = try await h.run { tx in
            try tx.workUnits(namespace: namespace, spec: Identifier(bytes: "s"), buckets: nil, start: nil, limit: 100)!
                .map(\.key)
        }
        #expect(listed.map(\.octets) == keys.map(\.octets).sorted { $0.lexicographicallyPrecedes($1) })
        #expect(listed.map(\.isText) == listed.map { key in keys.first { $0 == key }!.isText })
        var granted: [Identifier] = []
        while let unit = try await h.getWork().first?.unit {
            granted.append(unit.key)
            let key = unit.key
            _ = try await h.run { tx in
                try tx.updateWorkUnit(
                    namespace: namespace, spec: Identifier(bytes: "s"), key: key, UnitUpdate(status: 4))
            }
        }
        #expect(granted.map(\.octets) == listed.map(\.octets))
        #expect(granted.map(\.isText) == listed.map(\.isText))
        #expect(try await h.counts("s").finished == keys.count)
    }
}
