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
            let made = try await harness.call(
                "POST", "/namespace/-/worker/child/make_attempt", #"{"work_spec": "s", "work_unit": "u"}"#)
            #expect(made.0 == 200)
            // The forced attempt does not revive the child; its attempt still counts as the parent's child attempt.
            #expect(try await harness.call("GET", "/namespace/-/worker/child").1["active"] == false)
            let attempts = try await harness.call("GET", "/namespace/-/worker/parent/child_attempts").1["attempts"]
            #expect(attempts?.elements?.map { $0["url"] } == [made.1["url"]])
            // CBOR-RPC's get_child_work_units keeps the Python semantics: live children only.
            #expect(try await client.childWorkUnits(parent: "parent").isEmpty)
        }
    }
}
