import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

@Suite("REST: resources (rest-api.md §3–§4)")
struct RESTResourceTests {
    @Test(
        "namespaces: list, create, get-or-create, summary, delete (the CBOR-RPC namespace is emptied, not removed)",
        arguments: RESTHarness.backends)
    func namespaces(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let created = try await harness.http.json("POST", "/namespace", #"{"name": "a b"}"#)
            #expect(created.status == 201)
            #expect(created.header("location") == "/namespace/-YSBi")
            #expect(
                try JSONValue.parse(created.body) == [
                    "url": "/namespace/-YSBi", "name": "a b", "summary_url": "/namespace/-YSBi/summary",
                    "work_specs_url": "/namespace/-YSBi/work_spec",
                    "work_spec_url": "/namespace/-YSBi/work_spec/{spec}",
                    "workers_url": "/namespace/-YSBi/worker", "worker_url": "/namespace/-YSBi/worker/{worker}",
                    "attempt_url": "/namespace/-YSBi/attempt/{id}", "locks_url": "/namespace/-YSBi/lock",
                ])
            #expect(try await harness.call("GET", "/namespace/other").0 == 200)  // created by GET
            #expect(
                try await harness.call("GET", "/namespace").1["namespaces"]?.elements?.map { $0["name"] }
                    == [.string(""), .string("a b"), .string("other")])
            #expect(try await harness.call("GET", "/namespace/-!").0 == 400)
            try await harness.client.setWorkSpec(["name": "s"])
            try await harness.client.addWorkUnits("s", [WorkUnitSubmission(key: "u")])
            #expect(
                try await harness.call("GET", "/summary").1 == [
                    ["Namespace": "", "WorkSpec": "s", "Status": "available", "Count": 1]
                ])
            #expect(try await harness.call("GET", "/namespace/-/summary").1.elements?.count == 1)
            #expect(try await harness.call("DELETE", "/namespace/-").0 == 204)
            #expect(try await harness.client.allWorkSpecs().isEmpty)
            #expect(try await harness.call("GET", "/namespace").1["namespaces"]?.elements?.count == 3)
            #expect(try await harness.call("DELETE", "/namespace/other").0 == 204)
            #expect(try await harness.call("GET", "/namespace").1["namespaces"]?.elements?.count == 2)
        }
    }

    @Test(
        "work specs: create/update, representation, meta with counts, meta PUT, counts, errors",
        arguments: RESTHarness.backends)
    func workSpecs(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let first = try await harness.http.json(
                "POST", "/namespace/-/work_spec", #"{"data": {"name": "s", "then": "t", "min_gb": 2}}"#)
            #expect(first.status == 201)
            #expect(first.header("location") == "/namespace/-/work_spec/s")
            #expect(try JSONValue.parse(first.body) == ["url": "/namespace/-/work_spec/s", "name": "s"])
            #expect(
                try await harness.call(
                    "POST", "/namespace/-/work_spec", #"{"data": {"name": "s", "then": "t", "continuous": true}}"#
                ).0 == 200)
            let (status, spec) = try await harness.call("GET", "/namespace/-/work_spec/s")
            #expect(status == 200)
            #expect(spec["data"] == ["name": "s", "then": "t", "continuous": true])
            #expect(spec["work_unit_query_url"] == "/namespace/-/work_spec/s/work_unit{?name*,status*,previous,limit}")
            #expect(spec["meta"] == "/namespace/-/work_spec/s/meta{?counts}")
            #expect(try await harness.client.workSpec("s")?["then"] == .text("t"))

            let noName = try await harness.call("POST", "/namespace/-/work_spec", #"{"data": {"x": 1}}"#)
            #expect(noName.0 == 400)
            #expect(noName.1 == ["error": "ErrNoWorkSpecName", "message": "No 'name' key in work spec"])
            #expect(
                try await harness.call("POST", "/namespace/-/work_spec", #"{"data": {"name": 5}}"#).1["error"]
                    == "ErrBadWorkSpecName")
            let invalid = try await harness.call(
                "POST", "/namespace/-/work_spec", #"{"data": {"name": "x", "weight": "heavy"}}"#)
            #expect(
                invalid.1 == [
                    "error": "ErrInvalidWorkSpec", "message": "invalid work spec: weight: expected an integer",
                ])
            let renamed = try await harness.call("PUT", "/namespace/-/work_spec/s", #"{"data": {"name": "other"}}"#)
            #expect(renamed.1 == ["error": "ErrChangedName", "message": "Cannot change work spec 'name'"])
            #expect(try await harness.call("PUT", "/namespace/-/work_spec/s", #"{"data": null}"#).0 == 204)
            let ghost = try await harness.call("GET", "/namespace/-/work_spec/ghost")
            #expect(ghost.0 == 404)
            #expect(ghost.1 == ["error": "ErrNoSuchWorkSpec", "message": "No such work spec ghost", "value": "ghost"])

            // Meta: without counts, then with, then a PUT.
            let meta = try await harness.call("GET", "/namespace/-/work_spec/s/meta").1
            #expect(
                meta == [
                    "priority": 0, "weight": 20, "paused": false, "continuous": true, "can_be_continuous": true,
                    "interval": 0, "next_continuous": .null, "max_running": 0, "max_attempts_returned": 0,
                    "max_retries": 0,
                    "next_work_spec_name": "t", "then_preempts": true, "runtime": "", "available_count": 0,
                    "pending_count": 0,
                ])
            try await harness.client.addWorkUnits(
                "s", [WorkUnitSubmission(key: "a"), WorkUnitSubmission(key: "b", delay: 600)])
            let counted = try await harness.call("GET", "/namespace/-/work_spec/s/meta?counts=yes").1
            #expect(counted["available_count"] == 1)
            #expect(counted["delayed_count"] == 1)
            #expect(counted["archived_failed_count"] == 0)
            #expect(try await harness.call("GET", "/namespace/-/work_spec/s/meta?counts=maybe").0 == 400)
            let put = try await harness.call(
                "PUT", "/namespace/-/work_spec/s/meta",
                #"{"priority": 5, "paused": true, "interval": 60000000000, "max_running": 3, "max_attempts_returned": 2}"#
            )
            #expect(put.0 == 204)
            let changed = try await harness.call("GET", "/namespace/-/work_spec/s/meta").1
            #expect(changed["priority"] == 5)
            #expect(changed["paused"] == true)
            #expect(changed["interval"] == 60_000_000_000)
            #expect(changed["max_running"] == 3)
            #expect(changed["max_attempts_returned"] == 2)
            #expect(try await harness.client.workSpecMeta("s").paused)
            // continuous stays false, without error, on a spec that cannot be continuous.
            _ = try await harness.call("POST", "/namespace/-/work_spec", #"{"data": {"name": "plain"}}"#)
            #expect(
                try await harness.call("PUT", "/namespace/-/work_spec/plain/meta", #"{"continuous": true}"#).0 == 204)
            #expect(try await harness.call("GET", "/namespace/-/work_spec/plain/meta").1["continuous"] == false)

            #expect(
                try await harness.call("GET", "/namespace/-/work_spec/s/counts").1 == ["available": 1, "delayed": 1])
            #expect(
                try await harness.call("GET", "/namespace/-/work_spec/s/summary").1
                    == [
                        ["Namespace": "", "WorkSpec": "s", "Status": "available", "Count": 1],
                        ["Namespace": "", "WorkSpec": "s", "Status": "delayed", "Count": 1],
                    ])
            #expect(try await harness.call("GET", "/namespace/-/work_spec").1["work_specs"]?.elements?.count == 2)
            #expect(try await harness.call("DELETE", "/namespace/-/work_spec/plain").0 == 204)
            #expect(try await harness.call("DELETE", "/namespace/-/work_spec/plain").0 == 404)
        }
    }

    @Test(
        "bulk add of 100 000 units in requests of 10 000; an oversized request and invalid items get 400",
        arguments: RESTHarness.backends)
    func bulkAdd(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            try await harness.client.setWorkSpec(["name": "bulk"])
            for batch in 0..<10 {
                let items = (0..<10_000).map { #"{"name": "u\#(batch * 10_000 + $0)", "data": {"i": \#($0)}}"# }
                let body = #"{"work_units": ["# + items.joined(separator: ",") + "]}"
                let (status, json) = try await harness.call("POST", "/namespace/-/work_spec/bulk/add_work_units", body)
                #expect(status == 200)
                #expect(json == ["added": 10_000, "reset": 0])
            }
            #expect(try await harness.client.countWorkUnits("bulk") == [.available: 100_000])
            let oversized =
                #"{"work_units": ["# + (0..<10_001).map { #"{"name": "x\#($0)"}"# }.joined(separator: ",") + "]}"
            let refused = try await harness.call("POST", "/namespace/-/work_spec/bulk/add_work_units", oversized)
            #expect(refused.0 == 400)
            #expect(refused.1 == ["error": "ErrBadRequest", "message": "too many work units: 10001 > 10000"])

            // Re-adding resets; items are validated before anything changes.
            let reset = try await harness.call(
                "POST", "/namespace/-/work_spec/bulk/add_work_units",
                #"{"work_units": [{"name": "u1", "meta": {"priority": 5}}, {"name_base64": "/wA=", "data": "oWFrAQ==", "meta": {"delay": 90}}]}"#
            )
            #expect(reset.1 == ["added": 1, "reset": 1])
            let binary = try #require(try await harness.client.workUnits("bulk", keys: [.bytes([0xff, 0x00])]).first)
            #expect(binary.data == .map(CBORMap([(.text("k"), 1)])))
            let cases: [(String, String, String)] = [
                ("[1]", "ErrWorkUnitNotList", "work unit not a list"),
                (#"[{"data": {}}]"#, "ErrBadRequest", "work unit key must be a string"),
                (#"[{"name": "a", "meta": 3}]"#, "ErrBadRequest", "work unit meta must be a map"),
                (#"[{"name": "a", "meta": {"priority": "high"}}]"#, "ErrBadPriority", "priority must be a number"),
                (#"[{"name": "a", "meta": {"delay": "soon"}}]"#, "ErrBadRequest", "delay must be a number"),
                (#"[{"name": "fine"}, 7]"#, "ErrWorkUnitNotList", "work unit not a list"),
            ]
            for (items, code, message) in cases {
                let (status, json) = try await harness.call(
                    "POST", "/namespace/-/work_spec/bulk/add_work_units", #"{"work_units": "# + items + "}")
                #expect(status == 400)
                #expect(json == ["error": .string(code), "message": .string(message)])
            }
            #expect(try await harness.client.workUnits("bulk", keys: ["fine"]).first?.data == nil)
            #expect(
                try await harness.call("POST", "/namespace/-/work_spec/ghost/add_work_units", #"{"work_units": []}"#).0
                    == 404)
        }
    }

    @Test(
        "unit queries, change/adjust, single-unit POST, GET, PUT, DELETE and bulk update",
        arguments: RESTHarness.backends)
    func units(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", ["a", "b", "c", "d", "e"].map { WorkUnitSubmission(key: .text($0)) })
            let base = "/namespace/-/work_spec/s"
            func names(_ query: String) async throws -> [String] {
                try await harness.call("GET", base + "/work_unit" + query).1["work_units"]?.elements?.compactMap {
                    $0["name"]?.stringValue
                } ?? []
            }
            #expect(try await names("") == ["a", "b", "c", "d", "e"])
            #expect(try await names("?previous=b&limit=2") == ["c", "d"])
            #expect(try await names("?name=e&name=a&name=zz") == ["a", "e"])
            _ = try await client.getWork(workerID: "w", specNames: ["s"])  // takes a
            #expect(try await names("?status=pending") == ["a"])
            #expect(try await names("?status=available&status=pending&limit=2") == ["a", "b"])
            #expect(try await names("?status=any&previous=d") == ["e"])
            #expect(try await harness.call("GET", base + "/work_unit?status=weird").0 == 400)

            #expect(
                try await harness.call("POST", base + "/change?name=c&name=d", #"{"meta": {"priority": 10}}"#).0 == 204)
            #expect(try await harness.call("POST", base + "/adjust?name=d", #"{"meta": {"priority": 5}}"#).0 == 204)
            #expect(
                try await client.workUnits("s", states: [.available]).map(\.key) == [
                    .text("d"), .text("c"), .text("b"), .text("e"),
                ])

            let post = try await harness.http.json(
                "POST", base + "/work_unit", #"{"name": "n", "data": {"x": 1}, "meta": {"priority": 2}}"#)
            #expect(post.status == 201)
            #expect(post.header("location") == base + "/work_unit/n")
            // A pending unit's representation.
            let unit = try await harness.call("GET", base + "/work_unit/a").1
            #expect(unit["status"] == "pending")
            #expect(unit["worker_id"] == "w")
            #expect(unit["meta"] == ["priority": 0.0, "not_before": .null])
            let attemptURL = try #require(unit["active_attempt_url"]?.stringValue)
            #expect(attemptURL.hasPrefix("/namespace/-/attempt/"))
            #expect(unit["attempts_url"] == .string(base + "/work_unit/a/attempts"))
            #expect(try await harness.call("GET", base + "/work_unit/a/num-attempts").1 == 1)
            #expect(
                try await harness.call("GET", base + "/work_unit/a/attempts").1["attempts"]?.elements?.first?["url"]
                    == .string(attemptURL))
            let available = try await harness.call("GET", base + "/work_unit/b").1
            #expect(
                available["worker_id"] == nil && available["expiration"] == nil
                    && available["active_attempt_url"] == nil)
            let missing = try await harness.call("GET", base + "/work_unit/zz")
            #expect(missing.1 == ["error": "ErrNoSuchWorkUnit", "message": "No such work unit \"zz\"", "value": "zz"])

            // PUT: priority, not_before, and clearing the active attempt.
            #expect(
                try await harness.call(
                    "PUT", base + "/work_unit/b", #"{"meta": {"priority": 50, "not_before": "2999-01-01T00:00:00Z"}}"#
                ).0 == 204)
            #expect(try await harness.call("GET", base + "/work_unit/b").1["status"] == "delayed")
            #expect(
                try await harness.call(
                    "PUT", base + "/work_unit/b", #"{"meta": {"not_before": "0001-01-01T00:00:00Z"}}"#
                ).0
                    == 204)
            #expect(
                try await harness.call("GET", base + "/work_unit/b").1["meta"] == [
                    "priority": 50.0, "not_before": .null,
                ])
            #expect(try await harness.call("PUT", base + "/work_unit/a", #"{"active_attempt_url": "-"}"#).0 == 204)
            #expect(try await harness.call("GET", base + "/work_unit/a").1["status"] == "available")
            #expect(try await harness.call("GET", attemptURL).1["status"] == "retryable")

            // Bulk update: one atomic request, results in order.
            let updates = try await harness.call(
                "POST", base + "/update_work_units",
                #"{"updates": [{"name": "a", "status": "finished", "data": {"r": 1}}, {"name": "b", "lease_seconds": 60}, {"name": "c", "status": "available", "priority": 7}, {"name": "zz", "status": "failed"}, {"name": "d"}]}"#
            )
            #expect(
                updates.1 == [
                    "results": [
                        ["name": "a", "ok": true], ["name": "b", "ok": false, "message": "work unit is not pending"],
                        ["name": "c", "ok": true], ["name": "zz", "ok": false, "message": "No such work unit \"zz\""],
                        ["name": "d", "ok": false, "message": "nothing to do"],
                    ]
                ])
            #expect(try await client.workUnitStatus("s", keys: ["a"]).first??.status == .finished)
            #expect(try await client.workUnits("s", keys: ["a"]).first?.data == .map(CBORMap([(.text("r"), 1)])))

            #expect(try await harness.call("DELETE", base + "/work_unit/n").0 == 204)
            #expect(try await harness.call("DELETE", base + "/work_unit?status=finished").1 == ["Deleted": 1])
            #expect(try await harness.call("DELETE", base + "/work_unit").1 == ["Deleted": 4])
            #expect(try await client.countWorkUnits("s") == [:])
        }
    }

    @Test(
        "attempts: request, renew, expire, finish, fail, retry with their 409s, and the alias route",
        arguments: RESTHarness.backends)
    func attempts(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s", "then": "t"])
            try await client.setWorkSpec(["name": "t"])
            try await client.addWorkUnits("s", ["a", "b", "c"].map { WorkUnitSubmission(key: .text($0)) })
            let worker = "/namespace/-/worker/w1"
            let granted = try await harness.call(
                "POST", worker + "/request_attempts",
                #"{"number_of_work_units": 2, "lifetime": 60000000000, "work_specs": ["s"]}"#)
            #expect(granted.1["work_spec_url"] == "/namespace/-/work_spec/s")
            let attempts = try #require(granted.1["attempts"]?.elements)
            #expect(attempts.count == 2)
            let first = try #require(attempts[0]["url"]?.stringValue)
            let second = try #require(attempts[1]["url"]?.stringValue)
            #expect(attempts[0]["status"] == "pending")
            #expect(attempts[0]["worker_url"] == .string(worker))
            #expect(try await client.workUnitStatus("s", keys: ["a"]).first??.workerID == .text("w1"))

            #expect(
                try await harness.call(
                    "POST", first + "/renew", #"{"extend_duration": 120000000000, "data": {"step": 1}}"#
                ).0
                    == 204)
            #expect(try await harness.call("GET", first).1["data"] == ["step": 1])
            #expect(try await harness.call("POST", first + "/finish", #"{"data": {"output": ["next"]}}"#).0 == 204)
            #expect(try await harness.call("POST", first + "/finish", "{}").0 == 204)  // already finished: no-op
            #expect(try await client.workUnits("t").map(\.key) == [.text("next")])
            let renewFinished = try await harness.call("POST", first + "/renew", "{}")
            #expect(renewFinished.0 == 409)
            #expect(renewFinished.1 == ["error": "ErrNotPending", "message": "Attempt is not pending"])
            #expect(try await harness.call("POST", first + "/fail", "{}").0 == 409)  // finished attempts cannot fail

            #expect(try await harness.call("POST", second + "/retry", #"{"delay": 600000000000}"#).0 == 204)
            #expect(try await harness.call("GET", "/namespace/-/work_spec/s/work_unit/b").1["status"] == "delayed")
            #expect(try await harness.call("POST", second + "/expire", "{}").0 == 409)
            // A new attempt on b makes the old one stale: lost lease.
            #expect(
                try await harness.call(
                    "PUT", "/namespace/-/work_spec/s/work_unit/b", #"{"meta": {"not_before": "0001-01-01T00:00:00Z"}}"#
                ).0 == 204)
            let forced = try await harness.call(
                "POST", worker + "/make_attempt", #"{"work_spec": "s", "work_unit": "b"}"#)
            #expect(forced.1["status"] == "pending")
            let third = try #require(forced.1["url"]?.stringValue)
            // The superseded attempt can still be finished (go-coordinate's client expects it); the unit stays with
            // the newer attempt. Renewing it is refused: its lease is lost.
            #expect(try await harness.call("POST", second + "/finish", "{}").0 == 204)
            #expect(try await harness.call("GET", second).1["status"] == "finished")
            #expect(try await harness.call("GET", "/namespace/-/work_spec/s/work_unit/b").1["status"] == "pending")
            let stale = try await harness.call("POST", second + "/renew", "{}")
            #expect(stale.1 == ["error": "ErrLostLease", "message": "No longer the active attempt"])
            #expect(try await harness.call("POST", third + "/expire", "{}").0 == 204)
            #expect(try await harness.call("POST", third + "/expire", "{}").0 == 204)  // already expired: no-op
            #expect(try await harness.call("POST", third + "/fail", #"{"data": {"traceback": "late"}}"#).0 == 204)
            #expect(try await client.workUnitStatus("s", keys: ["b"]).first??.traceback == .text("late"))
            #expect(try await harness.call("GET", "/namespace/-/attempt/999999").0 == 404)
            #expect(try await harness.call("GET", "/namespace/-/attempt/999999").1["error"] == "ErrNoSuchAttempt")

            // The alias route resolves to the oldest attempt of that unit by that worker in that second.
            let start = try #require(try await harness.call("GET", first).1["start_time"]?.stringValue)
            let second0 = String(start.prefix(19)) + "Z"
            let alias =
                "/namespace/-/work_spec/s/work_unit/a/attempt/w1/" + CoordinateJSON.pathSegment(Array(second0.utf8))
            #expect(try await harness.call("GET", alias).1["url"] == .string(first))
            #expect(
                try await harness.call("GET", "/namespace/-/work_spec/s/work_unit/a/attempt/w1/2001-01-01T00:00:00Z").0
                    == 404)

            // Worker attempt lists.
            #expect(try await harness.call("GET", worker + "/all_attempts").1["attempts"]?.elements?.count == 3)
            #expect(try await harness.call("GET", worker + "/active_attempts").1["attempts"]?.elements?.count == 0)
            let empty = try await harness.call(
                "POST", "/namespace/-/worker/w2/request_attempts", #"{"work_specs": ["nothing"]}"#)
            #expect(empty.1 == ["attempts": []])
        }
    }

    @Test("workers: get-or-create, PUT semantics, lists, children, delete; locks", arguments: RESTHarness.backends)
    func workers(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            let created = try await harness.call("GET", "/namespace/-/worker/p").1
            #expect(created["active"] == true)
            #expect(created["mode"] == "")
            #expect(created["data"] == [:])
            #expect(created["parent"] == nil)
            #expect(
                try await harness.call(
                    "PUT", "/namespace/-/worker/c",
                    #"{"parent": "p", "active": true, "mode": "RUN", "data": {"pid": 4}}"#
                ).0 == 204)
            let parent = try await harness.call("GET", "/namespace/-/worker/p").1
            #expect(parent["child_urls"] == ["/namespace/-/worker/c"])
            let child = try await harness.call("GET", "/namespace/-/worker/c").1
            #expect(child["parent"] == "p")
            #expect(child["parent_url"] == "/namespace/-/worker/p")
            #expect(child["mode"] == "RUN")
            // REST workers are live workers for CBOR-RPC too.
            #expect(try await client.workerModes().map(\.workerID) == [.text("c"), .text("p")])
            #expect(try await client.workerInfo(workerID: "c") == .map(CBORMap([(.text("pid"), 4)])))
            // active: false deactivates; the record stays for REST.
            #expect(try await harness.call("PUT", "/namespace/-/worker/c", #"{"active": false}"#).0 == 204)
            #expect(try await harness.call("GET", "/namespace/-/worker/c").1["active"] == false)
            // Still p's child (go-coordinate lists children whether or not they are active).
            #expect(try await harness.call("GET", "/namespace/-/worker/p").1["child_urls"] == ["/namespace/-/worker/c"])
            func workerNames(_ query: String) async throws -> [String] {
                try await harness.call("GET", "/namespace/-/worker" + query).1["workers"]?.elements?.compactMap {
                    $0["name"]?.stringValue
                } ?? []
            }
            #expect(try await workerNames("") == ["c", "p"])
            #expect(try await workerNames("?active=true") == ["p"])
            #expect(try await workerNames("?active=false") == ["c"])
            #expect(try await workerNames("?previous=c&limit=1") == ["p"])
            // Mode written as bytes over CBOR-RPC shows as a string; null as "".
            try await client.workerHeartbeat(workerID: "py", mode: .bytes(Array("RUN".utf8)), lifetime: 60)
            try await client.workerHeartbeat(workerID: "none", mode: .null, lifetime: 60)
            #expect(try await harness.call("GET", "/namespace/-/worker/py").1["mode"] == "RUN")
            #expect(try await harness.call("GET", "/namespace/-/worker/none").1["mode"] == "")
            // Children's pending attempts.
            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u")])
            #expect(try await harness.call("PUT", "/namespace/-/worker/c", #"{"active": true}"#).0 == 204)
            _ = try await client.getWork(workerID: "c")
            #expect(
                try await harness.call("GET", "/namespace/-/worker/p/child_attempts").1["attempts"]?.elements?.count
                    == 1)
            #expect(try await harness.call("DELETE", "/namespace/-/worker/c").0 == 204)
            #expect(try await harness.call("DELETE", "/namespace/-/worker/c").0 == 404)
            // Attempts outlive the worker record.
            #expect(try await harness.call("GET", "/namespace/-/work_spec/s/work_unit/u/num-attempts").1 == 1)

            _ = try await client.lock(lockerID: "me", paths: [["foo", "x"]], timeout: 60)
            let locks = try await harness.call("GET", "/namespace/-/lock").1["locks"]?.elements
            #expect(locks?.count == 1)
            #expect(locks?.first?["path"] == "['foo', 'x']")
            #expect(locks?.first?["owner"] == "me")
            let pathCBOR = try #require(locks?.first?["path_cbor"]?.stringValue)
            #expect(Base64.decode(pathCBOR) == CBOREncoder.encode(.array([.bytes("foo"), .bytes("x")])))
            #expect(try await harness.call("GET", "/namespace/unknown/lock").1 == ["locks": []])
            #expect(try await harness.call("GET", "/namespace").1["namespaces"]?.elements?.count == 1)
        }
    }

    @Test(
        "CBOR-RPC and REST see one engine: add by REST, get_work by CBOR, finish by REST",
        arguments: RESTHarness.backends)
    func interplay(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            #expect(try await harness.call("POST", "/namespace/-/work_spec", #"{"data": {"name": "mixed"}}"#).0 == 201)
            #expect(
                try await harness.call(
                    "POST", "/namespace/-/work_spec/mixed/add_work_units",
                    #"{"work_units": [{"name": "k", "data": {"v": 1}}]}"#
                ).0 == 200)
            let unit = try #require(try await harness.client.getWork(workerID: "cbor-worker").first)
            #expect(unit.key == .text("k"))
            #expect(unit.data == .map(CBORMap([(.text("v"), 1)])))
            let rest = try await harness.call("GET", "/namespace/-/work_spec/mixed/work_unit/k").1
            #expect(rest["worker_id"] == "cbor-worker")
            let attempt = try #require(rest["active_attempt_url"]?.stringValue)
            #expect(try await harness.call("POST", attempt + "/finish", #"{"data": {"v": 2}}"#).0 == 204)
            #expect(try await harness.client.workUnitStatus("mixed", keys: ["k"]).first??.status == .finished)
            #expect(try await harness.client.workUnits("mixed").first?.data == .map(CBORMap([(.text("v"), 2)])))

            // Names that are not UTF-8 (from a Python client) are reachable through their `-` form.
            try await harness.client.setWorkSpec(["name": .bytes([0xc3, 0x28])])
            let specs = try await harness.call("GET", "/namespace/-/work_spec").1["work_specs"]?.elements ?? []
            let odd = try #require(specs.first { $0["name_base64"] != nil })
            #expect(odd["name_base64"] == "wyg=")
            #expect(odd["url"] == "/namespace/-/work_spec/-wyg")
            #expect(try await harness.call("GET", "/namespace/-/work_spec/-wyg").0 == 200)
        }
    }
}
