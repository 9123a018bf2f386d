import CBOR
import CoordinateEngine
import Testing

/// Unit states, transitions, attempts and leases (semantics.md §4–§6, §8; E-UPD, E-UNIT, E-ATT, E-GET-2).
@Suite("Unit lifecycle")
struct UnitLifecycleTests {
    static let data1 = CBORValue.map(CBORMap([("v", 1)]))
    static let data2 = CBORValue.map(CBORMap([("v", 2)]))

    /// Puts unit `u` of spec `s` into the requested observed state.
    func prepare(_ h: EngineHarness, _ state: String) async throws {
        try await h.spec("s")
        try await h.add("s", ["u"], data: Self.data1)
        switch state {
        case "available": break
        case "pending": _ = try await h.getWork("w1")
        case "finished":
            _ = try await h.getWork("w1")
            try await h.finish("s", "u")
        case "failed":
            _ = try await h.getWork("w1")
            try await h.update("s", "u", status: 5)
        default: Issue.record("unknown state \(state)")
        }
    }

    @Test("status 1 from every state makes the unit available", arguments: BackendKind.allCases)
    func toAvailable(backend: BackendKind) async throws {
        for state in ["available", "pending", "finished", "failed"] {
            let h = try await EngineHarness(backend)
            try await prepare(h, state)
            #expect(try await h.update("s", "u", status: 1, data: Self.data2) == .applied)
            let unit = try #require(try await h.unit("s", "u"))
            #expect(unit.bucket(at: h.now) == .ready, "\(state)")
            #expect(unit.data.decoded() == Self.data2)
            let attempts = try await h.attempts("s", "u")
            if state == "pending" {
                #expect(attempts.last?.status == .retryable)
                #expect(attempts.last?.endTime == h.now)
                #expect(attempts.last?.data.decoded() == Self.data2)
            }
        }
    }

    @Test("status 3 grants or renews; reassignment to another worker", arguments: BackendKind.allCases)
    func toPending(backend: BackendKind) async throws {
        for state in ["available", "finished", "failed"] {
            let h = try await EngineHarness(backend)
            try await prepare(h, state)
            #expect(try await h.update("s", "u", status: 3, worker: "w9") == .applied)
            let unit = try #require(try await h.unit("s", "u"))
            #expect(unit.bucket(at: h.now) == .pending)
            // No lease given: 300 s.
            #expect(unit.leaseDeadline == h.now + 300_000_000)
            let attempts = try await h.attempts("s", "u")
            #expect(attempts.last?.worker == Identifier(bytes: "w9"))
            #expect(attempts.last?.status == .pending)
        }
        let h = try await EngineHarness(backend)
        try await prepare(h, "pending")
        let deadline = try #require(try await h.unit("s", "u")?.leaseDeadline)
        // Same worker, lease given: renewal.
        #expect(try await h.update("s", "u", status: 3, lease: 50, worker: "w1") == .applied)
        #expect(try await h.unit("s", "u")?.leaseDeadline == h.now + 50_000_000)
        // Another worker without a lease: the old attempt is released, the deadline kept.
        h.clock.advance(seconds: 1)
        #expect(try await h.update("s", "u", status: 3, worker: "w2") == .applied)
        let attempts = try await h.attempts("s", "u")
        #expect(attempts.map(\.status) == [.retryable, .pending])
        #expect(attempts.last?.worker == Identifier(bytes: "w2"))
        #expect(try await h.unit("s", "u")?.leaseDeadline == h.now - 1_000_000 + 50_000_000)
        #expect(deadline != 0)
    }

    @Test("status 4 from each state, with forced zero-length attempts", arguments: BackendKind.allCases)
    func toFinished(backend: BackendKind) async throws {
        for state in ["available", "pending", "finished", "failed"] {
            let h = try await EngineHarness(backend)
            try await prepare(h, state)
            let before = try await h.unit("s", "u")
            h.clock.advance(seconds: 2)
            #expect(try await h.update("s", "u", status: 4, data: Self.data2, worker: "wf") == .applied)
            let unit = try #require(try await h.unit("s", "u"))
            #expect(unit.state == .finished, "\(state)")
            #expect(unit.data.decoded() == Self.data2)
            let attempts = try await h.attempts("s", "u")
            switch state {
            case "available":
                #expect(attempts.count == 1)
                #expect(attempts[0].status == .finished)
                #expect(
                    attempts[0].startTime == h.now && attempts[0].endTime == h.now
                        && attempts[0].expirationTime == h.now)
                #expect(attempts[0].worker == Identifier(bytes: "wf"))
                #expect(unit.completionTime == h.now)
            case "pending":
                #expect(attempts.map(\.status) == [.finished])
                #expect(attempts[0].worker == Identifier(bytes: "w1"))
                #expect(attempts[0].data.decoded() == Self.data2)
            case "finished":
                // Data applied only; times unchanged.
                #expect(unit.completionTime == before?.completionTime)
                #expect(attempts.map(\.status) == [.finished])
            default:
                // The failed attempt becomes finished.
                #expect(attempts.map(\.status) == [.finished])
                #expect(unit.completionTime == h.now)
            }
        }
    }

    @Test("status 5: finish wins over fail; fail applies data only on a failed unit", arguments: BackendKind.allCases)
    func toFailed(backend: BackendKind) async throws {
        for state in ["available", "pending", "finished", "failed"] {
            let h = try await EngineHarness(backend)
            try await prepare(h, state)
            #expect(try await h.update("s", "u", status: 5, data: Self.data2) == .applied)
            let unit = try #require(try await h.unit("s", "u"))
            switch state {
            case "finished":
                #expect(unit.state == .finished)
                #expect(unit.data.decoded() == Self.data1)
            default:
                #expect(unit.state == .failed, "\(state)")
                #expect(unit.data.decoded() == Self.data2)
            }
            let attempts = try await h.attempts("s", "u")
            if state == "available" { #expect(attempts.map(\.status) == [.failed]) }
            if state == "pending" { #expect(attempts.map(\.status) == [.failed]) }
        }
    }

    @Test(
        "lease only: renews a pending unit, refuses otherwise; a non-positive lease expires at once",
        arguments: BackendKind.allCases)
    func leaseOnly(backend: BackendKind) async throws {
        for state in ["available", "finished", "failed"] {
            let h = try await EngineHarness(backend)
            try await prepare(h, state)
            #expect(try await h.update("s", "u", lease: 60, data: Self.data2) == .notPending)
            #expect(try await h.unit("s", "u")?.data.decoded() == Self.data1)
        }
        let h = try await EngineHarness(backend)
        try await prepare(h, "pending")
        #expect(try await h.update("s", "u", lease: 100_000) == .applied)
        // > 86400 becomes 300.
        #expect(try await h.unit("s", "u")?.leaseDeadline == h.now + 300_000_000)
        #expect(try await h.update("s", "u", lease: 0) == .applied)
        h.clock.advance(microseconds: 1)
        #expect(try await h.counts("s").ready == 1)
        let other = try await EngineHarness(backend)
        try await prepare(other, "pending")
        #expect(try await other.update("s", "u", lease: -5) == .applied)
        #expect(try await other.counts("s").ready == 1)
        #expect(try await other.attempts("s", "u").last?.status == .expired)
        // Nothing to do, even with data; missing unit; invalid status.
        #expect(try await other.update("s", "u", data: Self.data2) == .nothingToDo)
        #expect(try await other.update("s", "zz", status: 4) == .noSuchUnit)
        #expect(try await other.update("s", "u", status: 2) == .invalidStatus)
        #expect(try await other.update("nope", "u", status: 4) == .noSuchSpec)
    }

    @Test("finish then fail stays finished; fail then finish finishes and chains", arguments: BackendKind.allCases)
    func finishFailOrder(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s", [("then", "t")])
        try await h.spec("t")
        try await h.add("s", ["u"])
        try await h.update("s", "u", status: 4)
        try await h.update("s", "u", status: 5, data: .map(CBORMap([("output", ["x"])])))
        #expect(try await h.unit("s", "u")?.state == .finished)
        #expect(try await h.counts("t").total == 0)
        try await h.add("s", ["v"])
        try await h.update("s", "v", status: 5)
        try await h.update("s", "v", status: 4, data: .map(CBORMap([("output", ["y"])])))
        #expect(try await h.unit("s", "v")?.state == .finished)
        #expect(try await h.unit("t", "y") != nil)
    }

    @Test(
        "leases expire eagerly: counts and statuses one millisecond after the deadline", arguments: BackendKind.allCases
    )
    func eagerExpiry(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["a", "b"])
        let granted = try await h.getWork("w", count: 2, lease: 10)
        #expect(granted.count == 2)
        #expect(granted[0].unit.leaseDeadline == h.now + 10_000_000)
        h.clock.advance(seconds: 10)
        #expect(try await h.counts("s").pending == 2)
        h.clock.advance(microseconds: 1000)
        let counts = try await h.counts("s")
        #expect(counts.pending == 0 && counts.ready == 2)
        let attempts = try await h.attempts("s", "a")
        #expect(attempts.last?.status == .expired)
        #expect(attempts.last?.endTime == attempts.last?.expirationTime)
        // Expired units are granted again, best first.
        #expect(try await h.getWork("w2").first?.unit.key == Identifier(bytes: "a"))
    }

    @Test(
        "time-based transitions: every backend's sweep finds due what Expiry calls due and writes what it writes",
        arguments: BackendKind.allCases)
    func sweepFollowsExpiry(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["a", "b"])
        try await h.add("s", ["d"], delay: 10)
        let deadline = try #require(try await h.getWork("w", count: 2, lease: 10).first?.unit.leaseDeadline)
        let notBefore = try #require(try await h.unit("s", "d")?.notBefore)
        h.clock.advance(seconds: 10)
        // At the lease's deadline and the delay's end exactly: the definition decides each side of the boundary.
        #expect(h.now == deadline && h.now == notBefore)
        let leaseDue = Expiry.leaseIsDue(deadline: deadline, at: h.now)
        let delayDue = Expiry.delayIsDue(notBefore: notBefore, at: h.now)
        var counts = try await h.counts("s")
        #expect(counts.pending == (leaseDue ? 0 : 2) && counts.delayed == (delayDue ? 0 : 1))
        #expect(counts.ready == (leaseDue ? 2 : 0) + (delayDue ? 1 : 0))
        #expect(try await h.unit("s", "a")?.state == (leaseDue ? Expiry.unitState : .pending))
        // Past the deadline: the stored unit and attempt are exactly what Expiry.expire makes of them.
        let before = try #require(try await h.unit("s", "a"))
        let attemptBefore = try await h.attempts("s", "a").last
        h.clock.advance(microseconds: 1)
        counts = try await h.counts("s")
        #expect(counts.pending == 0 && counts.ready == 3 && counts.delayed == 0)
        var expected = before
        var expectedAttempt = attemptBefore
        Expiry.expire(&expected, attempt: &expectedAttempt)
        #expect(try await h.unit("s", "a") == expected)
        #expect(try await h.attempts("s", "a").last == expectedAttempt)
        #expect(expectedAttempt?.status == Expiry.attemptStatus && expectedAttempt?.endTime == deadline)
    }

    @Test("re-adding resets from every state; priority changes only when explicit", arguments: BackendKind.allCases)
    func reAdd(backend: BackendKind) async throws {
        for state in ["available", "pending", "finished", "failed"] {
            let h = try await EngineHarness(backend)
            try await prepare(h, state)
            try await h.add("s", ["u"], data: Self.data2)
            var unit = try #require(try await h.unit("s", "u"))
            #expect(unit.bucket(at: h.now) == .ready, "\(state)")
            #expect(unit.data.decoded() == Self.data2)
            #expect(unit.priority == 0)
            if state == "pending" { #expect(try await h.attempts("s", "u").last?.status == .retryable) }
            try await h.add("s", ["u"], priority: 7)
            unit = try #require(try await h.unit("s", "u"))
            #expect(unit.priority == 7)
            try await h.add("s", ["u"])
            #expect(try await h.unit("s", "u")?.priority == 7)
            #expect(unit.retryCountBase == Int64(try await h.attempts("s", "u").count))
        }
        // Duplicates in one call: the last item wins.
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        let namespace = h.namespace
        _ = try await h.run { tx in
            try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: "s"),
                UnitItemBatch([
                    UnitItem(key: Identifier(bytes: "k"), data: StoredValue(encoding: 1), priority: 1),
                    UnitItem(key: Identifier(text: "k"), data: StoredValue(encoding: 2), priority: 2),
                ]))
        }
        let unit = try #require(try await h.unit("s", "k"))
        #expect(unit.data.decoded() == 2 && unit.priority == 2)
        #expect(unit.key.isText)
    }

    @Test("delayed units wait for their not-before time and keep priority order", arguments: BackendKind.allCases)
    func delay(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["late"], priority: 10, delay: 30)
        try await h.add("s", ["now"], priority: 1)
        var counts = try await h.counts("s")
        #expect(counts.delayed == 1 && counts.ready == 1)
        #expect(try await h.getWork().first?.unit.key == Identifier(bytes: "now"))
        #expect(try await h.getWork().isEmpty)
        h.clock.advance(seconds: 30)
        counts = try await h.counts("s")
        #expect(counts.delayed == 0 && counts.ready == 1)
        #expect(try await h.getWork().first?.unit.key == Identifier(bytes: "late"))
    }

    @Test("prioritize orders units; adjustments saturate", arguments: BackendKind.allCases)
    func prioritize(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["a", "b", "c"])
        func order() async throws -> [String] {
            let namespace = h.namespace
            return try await h.run { tx in
                try tx.workUnits(
                    namespace: namespace, spec: Identifier(bytes: "s"), buckets: [.ready], start: nil, limit: 10)!
                    .map(\.key.description)
            }
        }
        func prioritize(_ keys: [String], set: Double? = nil, adjust: Double? = nil) async throws {
            let namespace = h.namespace
            _ = try await h.run { tx in
                try tx.prioritizeWorkUnits(
                    namespace: namespace, spec: Identifier(bytes: "s"), keys: keys.map { Identifier(bytes: $0) },
                    priority: set,
                    adjustment: adjust)
            }
        }
        #expect(try await order() == ["a", "b", "c"])
        try await prioritize(["c"], set: 1)
        #expect(try await order().prefix(2) == ["c", "a"])
        try await prioritize(["a", "b", "c"], set: 0)
        try await prioritize(["a"], adjust: 10)
        try await prioritize(["b"], adjust: 20)
        try await prioritize(["c"], adjust: 30)
        #expect(try await order() == ["c", "b", "a"])
        try await prioritize(["a"], adjust: 15)
        #expect(try await order() == ["c", "a", "b"])
        try await prioritize(["a"], set: 1e308)
        try await prioritize(["a"], adjust: 1e308)
        try await prioritize(["a"], adjust: 1e308)
        #expect(try await h.unit("s", "a")?.priority == Double.greatestFiniteMagnitude)
    }

    @Test("attempt ids increase and history is kept oldest first", arguments: BackendKind.allCases)
    func attemptHistory(backend: BackendKind) async throws {
        let h = try await EngineHarness(backend)
        try await h.spec("s")
        try await h.add("s", ["u"])
        _ = try await h.getWork("w1", lease: 5)
        h.clock.advance(seconds: 6)
        _ = try await h.getWork("w2", lease: 5)
        try await h.update("s", "u", status: 1)
        _ = try await h.getWork("w3", lease: 5)
        try await h.finish("s", "u")
        let attempts = try await h.attempts("s", "u")
        #expect(attempts.map(\.status) == [.expired, .retryable, .finished])
        #expect(attempts.map(\.worker.description) == ["w1", "w2", "w3"])
        #expect(attempts.map(\.id) == attempts.map(\.id).sorted())
        #expect(Set(attempts.map(\.id)).count == 3)
    }
}
