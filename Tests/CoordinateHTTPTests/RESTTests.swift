import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// A daemon with both listeners on loopback, an HTTP client and a CBOR-RPC client for it.
struct RESTHarness: Sendable {
    let daemon: DaemonProcess
    let http: HTTPTestClient
    let client: CoordinateClient

    /// The backends the backend-parameterised REST cases run on (`COORDINATE_TEST_BACKENDS` narrows them).
    static let backends = ["memory", "sqlite", "postgres"].filter(TestBackends.enabled)

    /// Sends a JSON request and parses the JSON answer (`.null` for an empty body).
    func call(
        _ method: String, _ path: String, _ body: String? = nil, accept: String? = nil
    ) async throws -> (Int, JSONValue) {
        let response = try await http.json(method, path, body, accept: accept)
        let json = response.body.isEmpty ? JSONValue.null : try JSONValue.parse(response.body)
        return (response.status, json)
    }
}

/// Runs `body` with a daemon on `storage` serving both listeners (its storage ready); it stops when `body` ends.
func withRESTHarness<R>(
    storage: String = "memory", extra: [String] = [], _ body: (RESTHarness) async throws -> R
) async throws -> R {
    try await withDaemon(storage: storage, arguments: ["-q"] + extra, http: true) { daemon in
        let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
        return try await withCleanup {
            try await body(RESTHarness(daemon: daemon, http: daemon.http, client: client))
        } cleanup: {
            await client.close()
        }
    }
}

@Suite("REST: protections and negotiation (rest-api.md §1)")
struct RESTProtectionTests {
    @Test("discovery document, Host check, unknown routes, methods, Accept and Content-Type")
    func protections() async throws {
        try await withRESTHarness { harness in
            let http = harness.http
            let root = try await http.json("GET", "/")
            #expect(root.status == 200)
            #expect(root.header("content-type") == "application/vnd.diffeo.coordinate.v1+json")
            #expect(
                try JSONValue.parse(root.body) == [
                    "url": "/", "summary_url": "/summary", "namespaces_url": "/namespace",
                    "namespace_url": "/namespace/{namespace}", "metrics_url": "/metrics", "health_url": "/healthz",
                    "ui_url": "/ui",
                ])
            // DNS rebinding: a foreign Host is refused before anything else; no Host at all is a bad request.
            let foreign = try await http.request("GET", "/namespace/x", host: "evil.example")
            #expect(foreign.status == 421)
            #expect(try JSONValue.parse(foreign.body)["error"] == "ErrMisdirectedRequest")
            #expect(try await http.request("GET", "/healthz", host: "evil.example").status == 421)
            #expect(try await http.request("GET", "/", host: nil).status == 400)
            #expect(try await http.request("GET", "/", host: "localhost").status == 200)
            // Two Host headers are a bad request (RFC 9112 §3.2), whichever comes first, even when both agree.
            for hosts in [["127.0.0.1", "evil.example"], ["evil.example", "127.0.0.1"], ["localhost", "localhost"]] {
                let twice = try await http.request(
                    "GET", "/namespace", headers: hosts.map { ("Host", "\($0):\(http.port)") }, host: nil)
                #expect(twice.status == 400, "\(hosts)")
                #expect(try JSONValue.parse(twice.body)["error"] == "ErrBadRequest", "\(hosts)")
            }
            let twiceUI = try await http.request(
                "GET", "/ui", headers: [("Host", "127.0.0.1:\(http.port)"), ("Host", "evil.example")], host: nil)
            #expect(twiceUI.status == 400)
            // The foreign Host did not create the namespace.
            #expect(
                try await harness.call("GET", "/namespace").1 == ["namespaces": [["url": "/namespace/-", "name": ""]]])

            let missing = try await http.json("GET", "/nowhere")
            #expect(missing.status == 404)
            #expect(try JSONValue.parse(missing.body) == ["error": "ErrNotFound", "message": "Not found"])
            let wrongMethod = try await http.json("PATCH", "/namespace")
            #expect(wrongMethod.status == 405)
            #expect(wrongMethod.header("allow") == "GET, HEAD, POST")
            #expect(try await http.request("OPTIONS", "/namespace").status == 405)
            #expect(
                try await http.request("GET", "/", headers: [("Origin", "https://evil.example")]).header(
                    "access-control-allow-origin") == nil)

            // Accept negotiation.
            #expect(try await http.json("GET", "/", accept: "text/*").header("content-type") == "text/json")
            #expect(
                try await http.json("GET", "/", accept: "application/json").header("content-type") == "application/json"
            )
            #expect(
                try await http.json("GET", "/", accept: "*/*;q=0.9, application/vnd.diffeo.coordinate+json")
                    .header("content-type") == "application/vnd.diffeo.coordinate+json")
            #expect(
                try await http.json("GET", "/", accept: "application/*;q=0.5, text/json;q=0.5").header("content-type")
                    == "text/json")
            #expect(try await http.json("GET", "/", accept: "image/png").status == 406)

            // State-changing requests need a JSON Content-Type, even with an empty body.
            let noType = try await http.request("POST", "/namespace", body: Array(#"{"name": "a"}"#.utf8))
            #expect(noType.status == 415)
            #expect(try JSONValue.parse(noType.body)["error"] == "ErrUnsupportedMediaType")
            #expect(
                try await http.json("POST", "/namespace", #"{"name": "a"}"#, contentType: "text/plain").status == 415)
            #expect(
                try await http.json(
                    "POST", "/namespace", #"{"name": "a"}"#, contentType: "application/json; charset=utf-8"
                )
                .status == 201)
            #expect(try await http.request("DELETE", "/namespace/a").status == 204)
            #expect(
                try await http.request("DELETE", "/namespace/a", headers: [("Content-Type", "text/plain")]).status
                    == 415)
            #expect(try await http.request("GET", "/", headers: [], body: Array("x".utf8)).status == 415)
            // Malformed JSON.
            let malformed = try await http.json("POST", "/namespace", "{")
            #expect(malformed.status == 400)
            #expect(try JSONValue.parse(malformed.body)["error"] == "ErrBadRequest")

            // HEAD: same status and headers as GET, no body, and never creates.
            let head = try await http.request("HEAD", "/")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(head.header("content-length") == root.header("content-length"))
            #expect(try await http.request("HEAD", "/namespace/ghost").status == 404)
            #expect(try await http.request("HEAD", "/namespace/x/worker/ghost").status == 404)
        }
    }

    @Test("bodies over http_max_body_bytes get 413; the bearer token guards everything but /healthz")
    func sizeAndToken() async throws {
        let config = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    http_max_body_bytes: 1024\n    http_max_import_bytes: 4096\n    http_token: s3cret\n",
            prefix: "coordinate-rest")
        defer { try? FileManager.default.removeItem(atPath: config) }
        try await withRESTHarness(extra: ["--config", config]) { harness in
            let http = harness.http
            let auth = ("Authorization", "Bearer s3cret")
            let json = ("Content-Type", "application/json")
            #expect(try await http.request("GET", "/healthz").status == 200)
            let refused = try await http.request("GET", "/")
            #expect(refused.status == 401)
            #expect(refused.header("www-authenticate") == "Bearer")
            #expect(try JSONValue.parse(refused.body)["error"] == "ErrUnauthorized")
            #expect(try await http.request("GET", "/", headers: [("Authorization", "Bearer wrong")]).status == 401)
            #expect(try await http.request("GET", "/", headers: [auth]).status == 200)
            let big = Array(("{\"name\": \"" + String(repeating: "x", count: 2000) + "\"}").utf8)
            let tooLarge = try await http.request("POST", "/namespace", headers: [auth, json], body: big)
            #expect(tooLarge.status == 413)
            #expect(try JSONValue.parse(tooLarge.body)["error"] == "ErrTooLarge")
            // An import has its own limit, larger than the body limit here, and is refused past it.
            let header = Array(#"{"type":"coordinate-export","format":1}"#.utf8) + [0x0a]
            let spec =
                Array(
                    #"{"type":"work_spec","name":"s","data":"oWRuYW1lYXM=","archived_finished":0,"archived_failed":0}"#
                        .utf8) + [0x0a]
            let ndjson = ("Content-Type", "application/x-ndjson")
            let small = try await http.request(
                "POST", "/namespace/imported/import", headers: [auth, ndjson],
                body: header + spec + [UInt8](repeating: 0x20, count: 1500))
            #expect(small.status == 200, "\(small.text)")
            let huge = try await http.request(
                "POST", "/namespace/other/import", headers: [auth, ndjson],
                body: header + [UInt8](repeating: 0x20, count: 8192))
            #expect(huge.status == 413)
            #expect(huge.text.contains("larger than 4096 bytes"))
        }
    }

    @Test("max_unit_data_bytes and max_units_per_call hold for every REST write, in item order")
    func unitLimits() async throws {
        let config = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    max_unit_data_bytes: 100\n    max_units_per_call: 3\n",
            prefix: "coordinate-rest-limits")
        defer { try? FileManager.default.removeItem(atPath: config) }
        try await withRESTHarness(extra: ["--config", config]) { harness in
            try await harness.client.setWorkSpec(["name": "s"])
            let spec = "/namespace/-/work_spec/s"
            // {"b": 200 × "x"} encodes to 205 bytes.
            let big = #"{"b": ""# + String(repeating: "x", count: 200) + #""}"#
            let tooLarge: JSONValue = [
                "error": "ErrBadRequest", "message": "work unit data too large: 205 > 100 bytes",
            ]
            let add = spec + "/add_work_units"
            #expect(
                try await harness.call("POST", add, #"{"work_units": [{"name": "a", "data": "# + big + "}, 7]}")
                    == (400, tooLarge))
            #expect(
                try await harness.call("POST", add, #"{"work_units": [7, {"name": "a", "data": "# + big + "}]}").1[
                    "error"] == "ErrWorkUnitNotList")
            #expect(
                try await harness.call("POST", add, #"{"work_units": ["a", "b", "c", "d"]}"#)
                    == (400, ["error": "ErrBadRequest", "message": "too many work units: 4 > 3"]))
            #expect(
                try await harness.call("POST", spec + "/work_unit", #"{"name": "a", "data": "# + big + "}") == (
                    400, tooLarge
                ))
            #expect(
                try await harness.call("POST", add, #"{"work_units": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}"#)
                    .1 == ["added": 3, "reset": 0])
            #expect(
                try await harness.call(
                    "POST", spec + "/update_work_units",
                    #"{"updates": [{"name": "a", "status": "finished", "data": "# + big + "}]}"
                ) == (400, tooLarge))
            #expect(try await harness.client.countWorkUnits("s") == [.available: 3])
            // A grant is clamped to max_units_per_call, not refused.
            let granted = try await harness.call(
                "POST", "/namespace/-/worker/w/request_attempts", #"{"number_of_work_units": 10}"#)
            let attempts = try #require(granted.1["attempts"]?.elements)
            #expect(attempts.count == 3)
            let attempt = try #require(attempts[0]["url"]?.stringValue)
            #expect(try await harness.call("POST", attempt + "/finish", #"{"data": "# + big + "}") == (400, tooLarge))
            #expect(try await harness.call("GET", attempt).1["status"] == "pending")
            #expect(try await harness.call("POST", attempt + "/finish", #"{"data": {"ok": 1}}"#).0 == 204)
        }
    }
}
