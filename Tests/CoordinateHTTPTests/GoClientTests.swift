import CBOR
import CoordinateClient
import CoordinateJSON
import TestSupport
import Testing

/// Behaviours go-coordinate's Go REST client (`restclient`) relies on, as its memory backend and REST server
/// have them (issue 18; docs/decisions.md, "REST: go-coordinate's client").
@Suite("REST: what go-coordinate's Go client expects")
struct GoClientTests {
    @Test(
        "finishing a superseded attempt records it and changes nothing else; an expired one is not pending",
        arguments: RESTHarness.backends)
    func supersededAttempt(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s", "then": "t"])
            try await client.setWorkSpec(["name": "t"])
            let units = "/namespace/-/work_spec/s/work_unit"
            #expect(try await harness.call("POST", units, #"{"name": "u", "data": {"k": 1}}"#).0 == 201)
            let old = try #require(try await harness.requestAttempts(worker: "w1").first)
            // Another worker takes the unit over (a forced attempt, as the Go client's MakeAttempt sends it).
            let current = try await harness.makeAttempt(worker: "w2", unit: "u", lifetime: 60_000_000_000)

            let late = try await harness.call("POST", old + "/finish", #"{"data": {"output": ["x"], "k": 2}}"#)
            #expect(late.0 == 204)
            let record = try await harness.call("GET", old).1
            #expect(record["status"] == "finished")
            #expect(record["data"] == ["output": ["x"], "k": 2])
            // The unit still belongs to the newer attempt, with its own data; nothing chained into t.
            let unit = try await harness.call("GET", units + "/u").1
            #expect(unit["status"] == "pending")
            #expect(unit["active_attempt_url"] == .string(current))
            #expect(unit["data"] == ["k": 1])
            #expect(try await client.workUnits("t").isEmpty)
            // Finishing it again is a no-op, as for any finished attempt.
            #expect(try await harness.call("POST", old + "/finish", "{}").0 == 204)

            // Finishing the current attempt finishes the unit and chains, as always.
            #expect(try await harness.call("POST", current + "/finish", #"{"data": {"output": ["y"]}}"#).0 == 204)
            #expect(try await harness.call("GET", units + "/u").1["status"] == "finished")
            #expect(try await client.workUnits("t").map(\.key) == [.text("y")])

            // A superseded attempt that had expired is not pending: go-coordinate answers ErrNotPending.
            #expect(try await harness.call("POST", units, #"{"name": "v"}"#).0 == 201)
            let expired = try await harness.makeAttempt(worker: "w1", unit: "v")
            #expect(try await harness.call("POST", expired + "/expire", "{}").0 == 204)
            _ = try await harness.makeAttempt(worker: "w2", unit: "v")
            let refused = try await harness.call("POST", expired + "/finish", "{}")
            #expect(refused.0 == 409)
            #expect(refused.1["error"] == "ErrNotPending")
        }
    }

    @Test(
        "a unit shows its active attempt's data; clearing the attempt, expire, retry and a new grant bring its own back",
        arguments: RESTHarness.backends)
    func unitDataFollowsActiveAttempt(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s"])
            let units = "/namespace/-/work_spec/s/work_unit"
            func data(_ unit: String) async throws -> JSONValue? {
                try await harness.call("GET", units + "/" + unit).1["data"]
            }
            #expect(try await harness.call("POST", units, #"{"name": "u", "data": {"own": 1}}"#).0 == 201)

            // Finish with data: the unit shows the attempt's data, over CBOR-RPC too.
            var attempt = try await harness.makeAttempt(worker: "w", unit: "u")
            #expect(try await harness.call("POST", attempt + "/finish", #"{"data": {"done": 2}}"#).0 == 204)
            #expect(try await data("u") == ["done": 2])
            #expect(try await client.workUnits("s", keys: ["u"]).first?.data == .map(CBORMap([(.text("done"), 2)])))
            // Clearing the active attempt (the Go client's ClearActiveAttempt) brings back the creation data;
            // the attempt keeps its own.
            #expect(try await harness.call("PUT", units + "/u", #"{"active_attempt_url": "-"}"#).0 == 204)
            #expect(try await data("u") == ["own": 1])
            #expect(try await harness.call("GET", units + "/u").1["status"] == "available")
            #expect(try await harness.call("GET", attempt).1["data"] == ["done": 2])

            // Renew with data stands in too; expire and retry end the attempt's activity and the unit's own
            // data is back, while the attempt records what it sent.
            attempt = try await harness.makeAttempt(worker: "w", unit: "u")
            #expect(try await harness.call("POST", attempt + "/renew", #"{"data": {"progress": 1}}"#).0 == 204)
            #expect(try await data("u") == ["progress": 1])
            #expect(try await harness.call("POST", attempt + "/expire", #"{"data": {"progress": 2}}"#).0 == 204)
            #expect(try await data("u") == ["own": 1])
            #expect(try await harness.call("GET", attempt).1["data"] == ["progress": 2])
            attempt = try await harness.makeAttempt(worker: "w", unit: "u")
            #expect(try await harness.call("POST", attempt + "/renew", #"{"data": {"progress": 3}}"#).0 == 204)
            #expect(try await harness.call("POST", attempt + "/retry", "{}").0 == 204)
            #expect(try await data("u") == ["own": 1])

            // A new attempt replaces the previous one's data with the unit's own (its lease ran out meanwhile).
            attempt = try await harness.makeAttempt(worker: "w", unit: "u")
            #expect(try await harness.call("POST", attempt + "/renew", #"{"data": {"progress": 4}}"#).0 == 204)
            let next = try await harness.makeAttempt(worker: "w2", unit: "u")
            #expect(try await data("u") == ["own": 1])
            #expect(try await harness.call("GET", next).1["data"] == ["own": 1])

            // Data written as the unit's own (CBOR-RPC's update_work_unit) becomes what clearing brings back.
            #expect(try await harness.call("POST", next + "/fail", #"{"data": {"failed": 1}}"#).0 == 204)
            #expect(try await data("u") == ["failed": 1])
            try await client.updateWorkUnit(
                "s", key: "u", status: .failed, data: .map(CBORMap([(.text("reason"), .text("x"))])))
            #expect(try await harness.call("PUT", units + "/u", #"{"active_attempt_url": "-"}"#).0 == 204)
            #expect(try await data("u") == ["reason": "x"])

            // The unit's own data survives an export and import while an attempt's stands in.
            attempt = try await harness.makeAttempt(worker: "w", unit: "u")
            #expect(try await harness.call("POST", attempt + "/finish", #"{"data": {"done": 3}}"#).0 == 204)
            let exported = try await harness.http.request("GET", "/namespace/-/export")
            #expect(exported.status == 200)
            #expect(exported.text.contains("\"original_data\""))
            let imported = try await harness.http.request(
                "POST", "/namespace/copy/import", headers: [("Content-Type", "application/x-ndjson")],
                body: exported.body)
            #expect(imported.status == 200, "\(imported.text)")
            let copy = "/namespace/copy/work_spec/s/work_unit/u"
            #expect(try await harness.call("GET", copy).1["data"] == ["done": 3])
            #expect(try await harness.call("PUT", copy, #"{"active_attempt_url": "-"}"#).0 == 204)
            #expect(try await harness.call("GET", copy).1["data"] == ["reason": "x"])
        }
    }

    @Test(
        "an attempt whose unit was deleted answers ErrGone; one that never existed ErrNoSuchAttempt",
        arguments: RESTHarness.backends)
    func deletedUnitAttempt(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            try await harness.client.setWorkSpec(["name": "s"])
            let units = "/namespace/-/work_spec/s/work_unit"
            #expect(try await harness.call("POST", units, #"{"name": "u"}"#).0 == 201)
            #expect(try await harness.call("POST", units, #"{"name": "v"}"#).0 == 201)
            let urls = try await harness.requestAttempts(worker: "w", count: 2)
            #expect(urls.count == 2)
            // Delete the unit of the newest attempt: its id must still be known as issued.
            let newest = try #require(urls.last)
            let key = try #require(try await harness.call("GET", newest).1["work_unit_url"]?.stringValue)
            #expect(try await harness.call("DELETE", key).0 == 204)

            let gone = try await harness.call("GET", newest)
            #expect(gone.0 == 410)
            #expect(gone.1["error"] == "ErrGone")
            let finish = try await harness.call("POST", newest + "/finish", "{}")
            #expect(finish.0 == 410)
            #expect(finish.1["error"] == "ErrGone")
            // The other attempt is untouched; ids never issued are not "gone".
            #expect(try await harness.call("GET", urls[0]).0 == 200)
            let never = try await harness.call("GET", "/namespace/-/attempt/999999")
            #expect(never.0 == 404)
            #expect(never.1["error"] == "ErrNoSuchAttempt")
            // Through the unit's alias route the deleted unit is what is missing, as in go-coordinate.
            #expect(
                try await harness.call("GET", key + "/attempt/w/2001-01-01T00:00:00Z").1["error"] == "ErrNoSuchWorkUnit"
            )
        }
    }

    @Test(
        "re-creating a pending unit with POST keeps it pending under its attempt; a finished one is reset",
        arguments: RESTHarness.backends)
    func recreatePendingUnit(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s"])
            let units = "/namespace/-/work_spec/s/work_unit"
            #expect(try await harness.call("POST", units, #"{"name": "u", "data": {"k": 1}}"#).0 == 201)
            let attempt = try #require(try await harness.requestAttempts(worker: "w").first)

            // What restclient's AddWorkUnit sends for a unit that exists.
            let again = try await harness.call(
                "POST", units, #"{"name": "u", "data": {"k": 2}, "meta": {"priority": 5}}"#)
            #expect(again.0 == 201)
            let unit = try await harness.call("GET", units + "/u").1
            #expect(unit["status"] == "pending")
            #expect(unit["active_attempt_url"] == .string(attempt))
            #expect(unit["data"] == ["k": 2])
            #expect(unit["meta"]?["priority"] == .float(5))
            #expect(try await harness.call("GET", attempt).1["status"] == "pending")
            // The worker still holds it and can finish it.
            #expect(try await harness.call("POST", attempt + "/finish", "{}").0 == 204)
            #expect(try await harness.call("GET", units + "/u").1["status"] == "finished")

            // A finished unit re-created becomes available again, as in go-coordinate.
            #expect(try await harness.call("POST", units, #"{"name": "u", "data": {"k": 3}}"#).0 == 201)
            #expect(try await harness.call("GET", units + "/u").1["status"] == "available")
            // CBOR-RPC's add_work_units keeps the Python semantics: a pending unit is reset.
            _ = try await client.getWork(workerID: "w")
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u")])
            #expect(try await harness.call("GET", units + "/u").1["status"] == "available")
        }
    }

    @Test(
        "a child registered inactive (the Go client's SetParent) is listed and its attempts are the parent's child attempts",
        arguments: RESTHarness.backends)
    func inactiveChildren(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            #expect(try await harness.call("GET", "/namespace/-/worker/parent").0 == 200)
            // What restclient's SetParent sends: a Worker representation with active false and the parent's name.
            #expect(
                try await harness.call("PUT", "/namespace/-/worker/child", #"{"active": false, "parent": "parent"}"#).0
                    == 204)
            let parent = try await harness.call("GET", "/namespace/-/worker/parent").1
            #expect(parent["child_urls"] == ["/namespace/-/worker/child"])
            let child = try await harness.call("GET", "/namespace/-/worker/child").1
            #expect(child["parent"] == "parent")
            #expect(child["active"] == false)

            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u")])
            let made = try await harness.makeAttempt(worker: "child", unit: "u")
            // The forced attempt does not revive the child; its attempt still counts as the parent's child attempt.
            #expect(try await harness.call("GET", "/namespace/-/worker/child").1["active"] == false)
            let attempts = try await harness.call("GET", "/namespace/-/worker/parent/child_attempts").1["attempts"]
            #expect(attempts?.elements?.map { $0["url"] } == [.string(made)])
            // CBOR-RPC's get_child_work_units keeps the Python semantics: live children only.
            #expect(try await client.childWorkUnits(parent: "parent").isEmpty)
        }
    }
}

extension RESTHarness {
    /// `POST …/worker/{worker}/request_attempts` for up to `count` units of spec `s`: the granted attempts' URLs.
    func requestAttempts(worker: String, count: Int = 1) async throws -> [String] {
        let granted = try await call(
            "POST", "/namespace/-/worker/\(worker)/request_attempts",
            #"{"work_specs": ["s"], "number_of_work_units": \#(count)}"#)
        return try #require(granted.1["attempts"]?.elements?.compactMap { $0["url"]?.stringValue })
    }

    /// `POST …/worker/{worker}/make_attempt` on unit `unit` of spec `s` (a forced attempt, as the Go client's
    /// `MakeAttempt` sends it), answered 200: the attempt's URL.
    func makeAttempt(
        worker: String, unit: String, lifetime: Int64? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> String {
        let lifetimeMember = lifetime.map { #", "lifetime": \#($0)"# } ?? ""
        let made = try await call(
            "POST", "/namespace/-/worker/\(worker)/make_attempt",
            #"{"work_spec": "s", "work_unit": "\#(unit)"\#(lifetimeMember)}"#)
        #expect(made.0 == 200, sourceLocation: sourceLocation)
        return try #require(made.1["url"]?.stringValue, sourceLocation: sourceLocation)
    }
}
