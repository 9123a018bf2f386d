import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// The dashboard's optional operator actions (rest-api.md §8.1): login sessions, confirmation pages, CSRF.
@Suite("Dashboard actions")
struct DashboardActionTests {
    /// Spaces, `+`, `&`, `=` and `/` exercise the form decoding of the login.
    static let token = "dash board+token&x=/y"
    static let bearer = ("Authorization", "Bearer \(token)")
    static let formType = ("Content-Type", "application/x-www-form-urlencoded")
    /// The default namespace's spec page and action paths.
    static let spec = "/ui/namespace/\(CoordinateJSON.pathSegment([]))/work_spec/images"

    /// Runs `body` with the populated dashboard namespace, with `http_token` set.
    static func withHarness<R>(storage: String = "memory", _ body: (RESTHarness) async throws -> R) async throws -> R {
        let config = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    http_token: \"\(token)\"\n", prefix: "coordinate-ui")
        defer { try? FileManager.default.removeItem(atPath: config) }
        return try await DashboardTests.withPopulated(storage: storage, extra: ["--config", config], body)
    }

    static func form(_ fields: [(String, String)]) -> [UInt8] {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Array(
            fields.map { name, value in
                name + "=" + (value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value)
            }.joined(separator: "&").utf8)
    }

    /// Logs in through the form and returns the `Cookie` header for the session.
    static func login(_ http: HTTPTestClient) async throws -> (String, String) {
        let response = try await http.request("POST", "/ui/login", headers: [formType], body: form([("token", token)]))
        #expect(response.status == 303)
        #expect(response.header("location") == "/ui")
        let setCookie = try #require(response.header("set-cookie"))
        let match = try #require(
            setCookie.wholeMatch(of: /coordinate_session=([0-9a-f]{64}); HttpOnly; SameSite=Strict; Path=\/ui/))
        #expect(!setCookie.contains(token))
        return ("Cookie", "coordinate_session=\(match.1)")
    }

    /// The CSRF token in a confirmation page's form (not the logout form's).
    static func csrf(_ page: HTTPTestResponse) throws -> String {
        let match = try #require(
            page.text.firstMatch(
                of: /<form method="post" action="[^"]*">\s*<input type="hidden" name="csrf" value="([0-9a-f]{64})">/))
        return String(match.1)
    }

    /// The token of the logout form in a page's header.
    static func logoutToken(_ page: HTTPTestResponse) throws -> String {
        let match = try #require(
            page.text.firstMatch(
                of: /action="\/ui\/logout"><input type="hidden" name="csrf" value="([0-9a-f]{64})">/))
        return String(match.1)
    }

    func unitJSON(_ harness: RESTHarness, _ key: String) async throws -> JSONValue {
        let path = "/namespace/\(CoordinateJSON.pathSegment([]))/work_spec/images/work_unit/\(key)"
        return try JSONValue.parse(try await harness.http.request("GET", path, headers: [Self.bearer]).body)
    }

    @Test("without http_token there is no login, no action link and every action route answers 404")
    func readOnlyWithoutToken() async throws {
        try await DashboardTests.withPopulated { harness in
            let http = harness.http
            #expect(!(try await http.request("GET", Self.spec).text.contains("data-action")))
            #expect(try await http.request("GET", "/ui/login").status == 404)
            for action in ["pause", "resume", "retry_failed", "priority?unit=b"] {
                #expect(try await http.request("GET", Self.spec + "/" + action).status == 404)
            }
            for action in ["pause", "retry_failed", "priority"] {
                let response = try await http.request(
                    "POST", Self.spec + "/" + action, headers: [Self.formType],
                    body: Self.form([("csrf", "x"), ("unit", "b"), ("priority", "9")]))
                #expect(response.status == 404)
            }
            #expect(try await harness.client.workSpecMeta("images").paused == false)
            #expect(try await harness.client.workUnitStatus("images", keys: ["a"]).first??.status == .failed)
        }
    }

    @Test("login: pages redirect to the login form; the right token sets a random session cookie; REST ignores it")
    func login() async throws {
        try await Self.withHarness { harness in
            let http = harness.http
            let redirected = try await http.request("GET", "/ui")
            #expect(redirected.status == 303)
            #expect(redirected.header("location") == "/ui/login")
            #expect(try await http.request("GET", Self.spec).header("location") == "/ui/login")
            let form = try await http.request("GET", "/ui/login")
            #expect(form.status == 200)
            #expect(form.text.contains(#"<form method="post" action="/ui/login">"#))

            let wrong = try await http.request(
                "POST", "/ui/login", headers: [Self.formType], body: Self.form([("token", "guess")]))
            #expect(wrong.status == 403)
            #expect(wrong.header("set-cookie") == nil)

            let cookie = try await Self.login(http)
            #expect(try await http.request("GET", "/ui", headers: [cookie]).status == 200)
            #expect(try await http.request("GET", "/ui", headers: [Self.bearer]).status == 200)
            let forged = ("Cookie", "coordinate_session=" + String(repeating: "0", count: 64))
            #expect(try await http.request("GET", "/ui", headers: [forged]).status == 303)
            // The session is for the dashboard only: REST still needs the bearer token.
            #expect(try await http.request("GET", "/namespace", headers: [cookie]).status == 401)

            let page = try await http.request("GET", Self.spec, headers: [cookie])
            #expect(page.text.contains(#"data-action="pause""#))
            #expect(page.text.contains(#"data-action="retry_failed""#))
            #expect(page.text.contains(#"data-action="priority""#))
            // Pages with actions cannot be framed by another site (clickjacking).
            #expect(page.header("content-security-policy")?.contains("frame-ancestors 'none'") == true)
            #expect(page.header("x-frame-options") == "DENY")
        }
    }

    @Test("logout: every page of a session carries a logout form; its token ends that session only")
    func logout() async throws {
        try await Self.withHarness { harness in
            let http = harness.http
            let cookie = try await Self.login(http)
            let other = try await Self.login(http)
            let page = try await http.request("GET", "/ui", headers: [cookie])
            #expect(page.text.contains(#"<form class="logout" method="post" action="/ui/logout">"#))
            #expect(page.header("cache-control") == "no-store")
            let token = try Self.logoutToken(page)
            // A bearer-token request has no session to end: no logout form.
            #expect(!(try await http.request("GET", "/ui", headers: [Self.bearer]).text.contains("/ui/logout")))

            // Another session's token, a made-up one, or none: refused, both sessions stay.
            for (headers, fields) in [
                ([other, Self.formType], [("csrf", token)]),
                ([cookie, Self.formType], [("csrf", String(repeating: "b", count: 64))]),
                ([Self.formType], [("csrf", token)]),
            ] as [([(String, String)], [(String, String)])] {
                #expect(
                    try await http.request("POST", "/ui/logout", headers: headers, body: Self.form(fields)).status
                        == 403)
            }
            #expect(try await http.request("GET", "/ui", headers: [cookie]).status == 200)

            let out = try await http.request(
                "POST", "/ui/logout", headers: [cookie, Self.formType], body: Self.form([("csrf", token)]))
            #expect(out.status == 303)
            #expect(out.header("location") == "/ui/login")
            #expect(out.header("set-cookie")?.hasPrefix("coordinate_session=; Max-Age=0;") == true)
            #expect(try await http.request("GET", "/ui", headers: [cookie]).status == 303)
            #expect(try await http.request("GET", "/ui", headers: [other]).status == 200)
        }
    }

    @Test("pause and resume go through a confirmation page; CSRF tokens are per page, per session and single-use")
    func pauseResumeAndCSRF() async throws {
        try await Self.withHarness { harness in
            let (http, client) = (harness.http, harness.client)
            let cookie = try await Self.login(http)
            let other = try await Self.login(http)

            let confirm = try await http.request("GET", Self.spec + "/pause", headers: [cookie])
            #expect(confirm.status == 200)
            #expect(confirm.header("cache-control") == "no-store")
            #expect(confirm.text.contains(#"<form method="post" action="\#(Self.spec)/pause">"#))
            #expect(confirm.text.contains("Workers get no new units from this work spec"))
            let csrf = try Self.csrf(confirm)

            // Refused, and nothing changes: no token, a made-up token, another session's token, no session at all,
            // a body that is not a form.
            let refusals: [(headers: [(String, String)], body: [(String, String)], status: Int)] = [
                ([cookie, Self.formType], [], 403),
                ([cookie, Self.formType], [("csrf", String(repeating: "a", count: 64))], 403),
                ([other, Self.formType], [("csrf", csrf)], 403),
                ([Self.formType], [("csrf", csrf)], 403),
                ([cookie, ("Content-Type", "application/json")], [("csrf", csrf)], 415),
            ]
            for refusal in refusals {
                let response = try await http.request(
                    "POST", Self.spec + "/pause", headers: refusal.headers, body: Self.form(refusal.body))
                #expect(response.status == refusal.status)
                #expect(try await client.workSpecMeta("images").paused == false)
            }
            // The refusals did not spend the token of the session it was issued to.
            let paused = try await http.request(
                "POST", Self.spec + "/pause", headers: [cookie, Self.formType], body: Self.form([("csrf", csrf)]))
            #expect(paused.status == 303)
            #expect(paused.header("location") == Self.spec)
            #expect(try await client.workSpecMeta("images").paused)
            // Single use: the same form cannot be submitted twice, not even to another action.
            let replay = try await http.request(
                "POST", Self.spec + "/resume", headers: [cookie, Self.formType], body: Self.form([("csrf", csrf)]))
            #expect(replay.status == 403)
            #expect(try await client.workSpecMeta("images").paused)

            // A script with the bearer token uses the same pages.
            let page = try await http.request("GET", Self.spec, headers: [Self.bearer])
            #expect(page.text.contains(#"data-action="resume""#))
            let resumeToken = try Self.csrf(
                try await http.request("GET", Self.spec + "/resume", headers: [Self.bearer]))
            let resumed = try await http.request(
                "POST", Self.spec + "/resume", headers: [Self.bearer, Self.formType],
                body: Self.form([("csrf", resumeToken)]))
            #expect(resumed.status == 303)
            #expect(try await client.workSpecMeta("images").paused == false)
        }
    }

    @Test(
        "retry failed makes every failed unit available; change priority sets one unit's priority",
        arguments: RESTHarness.backends)
    func retryAndPriority(storage: String) async throws {
        try await Self.withHarness(storage: storage) { harness in
            let (http, client) = (harness.http, harness.client)
            let cookie = try await Self.login(http)

            let confirm = try await http.request("GET", Self.spec + "/retry_failed", headers: [cookie])
            #expect(confirm.text.contains("1 failed unit becomes available again"))
            let retried = try await http.request(
                "POST", Self.spec + "/retry_failed", headers: [cookie, Self.formType],
                body: Self.form([("csrf", try Self.csrf(confirm))]))
            #expect(retried.status == 303)
            #expect(try await client.workUnitStatus("images", keys: ["a"]).first??.status == .available)
            #expect(try await client.countWorkUnits("images")[.failed] == nil)

            let priorityPage = try await http.request("GET", Self.spec + "/priority?unit=b", headers: [cookie])
            #expect(priorityPage.status == 200)
            #expect(priorityPage.text.contains(#"<input type="hidden" name="unit" value="b">"#))
            // A value that is not a finite number is refused and changes nothing.
            let bad = try await http.request(
                "POST", Self.spec + "/priority", headers: [cookie, Self.formType],
                body: Self.form([("csrf", try Self.csrf(priorityPage)), ("unit", "b"), ("priority", "inf")]))
            #expect(bad.status == 400)
            #expect(try await unitJSON(harness, "b")["meta"]?["priority"] == .float(0))

            let again = try await http.request("GET", Self.spec + "/priority?unit=b", headers: [cookie])
            let set = try await http.request(
                "POST", Self.spec + "/priority", headers: [cookie, Self.formType],
                body: Self.form([("csrf", try Self.csrf(again)), ("unit", "b"), ("priority", "7.5")]))
            #expect(set.status == 303)
            #expect(try await unitJSON(harness, "b")["meta"]?["priority"] == .float(7.5))
            #expect(try await unitJSON(harness, "c")["meta"]?["priority"] == .float(0))

            #expect(try await http.request("GET", Self.spec + "/priority?unit=nope", headers: [cookie]).status == 404)
            #expect(
                try await http.request("GET", "/ui/namespace/-/work_spec/nope/pause", headers: [cookie]).status == 404)
        }
    }
}
