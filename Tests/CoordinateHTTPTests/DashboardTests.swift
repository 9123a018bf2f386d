import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// Runs headless Chromium (Debian's `chromium`, installed by scripts/test) with a throw-away profile.
func chromium(_ arguments: [String]) async throws -> (status: Int32, stdout: String) {
    let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
    guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw BrowserMissing()
    }
    let profile = NSTemporaryDirectory() + "coordinate-chromium-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: profile) }
    // Chromium's stderr holds only harmless D-Bus complaints.
    let result = try await runProgram(
        binary,
        ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=\(profile)"]
            + arguments)
    return (result.status, result.stdout)
}

struct BrowserMissing: Error, CustomStringConvertible {
    var description: String { "chromium is not installed (scripts/test installs Debian's chromium package)" }
}

/// Where tests leave files worth looking at (screenshots).
let artifactDirectory: String = {
    let path = TestPaths.repositoryRoot.appendingPathComponent(".build/test-artifacts").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}()

@Suite("Dashboard /ui")
struct DashboardTests {
    /// Runs `body` with a daemon whose namespace has two specs, a pending, a delayed and a failed unit, and a
    /// live worker.
    static func withPopulated<R>(
        storage: String = "memory", extra: [String] = [], _ body: (RESTHarness) async throws -> R
    ) async throws -> R {
        try await withRESTHarness(storage: storage, extra: extra) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "images", "then": "thumbs"])
            try await client.setWorkSpec(["name": "thumbs"])
            try await client.addWorkUnits(
                "images", ["a", "b", "c", "<script>alert(1)</script>"].map { WorkUnitSubmission(key: .text($0)) })
            try await client.addWorkUnits("images", [WorkUnitSubmission(key: "later", delay: 3600)])
            try await client.workerHeartbeat(workerID: "w1", mode: "RUN", lifetime: 600, environment: ["pid": 7])
            // Best first is key order: the `<script>` unit and `a` are granted; `a` fails.
            let granted = try await client.getWork(workerID: "w1", specNames: ["images"], maxJobs: 2)
            let a = try #require(granted.first { $0.key == .text("a") })
            try await a.fail(traceback: "Traceback (most recent call last):\n  ValueError: <bad input>")
            try await client.pauseWorkSpec("thumbs")
            return try await body(harness)
        }
    }

    @Test(
        "pages over plain HTTP: markers, escaping, refresh, 404 pages that create nothing",
        arguments: RESTHarness.backends)
    func pagesOverHTTP(storage: String) async throws {
        try await Self.withPopulated(storage: storage) { harness in
            let home = try await harness.http.request("GET", "/ui")
            #expect(home.status == 200)
            #expect(home.header("content-type") == "text/html; charset=utf-8")
            #expect(home.text.contains(#"<li data-namespace=""><a href="/ui/namespace/-">(default)</a></li>"#))
            let page = try await harness.http.request("GET", "/ui/namespace/-?refresh=7").text
            #expect(page.contains(#"<meta http-equiv="refresh" content="7">"#))
            #expect(page.contains(#"<td class="num" data-status="available">2</td>"#))
            #expect(page.contains(#"<td data-field="state" class="paused">paused</td>"#))
            #expect(page.contains(#"<tr data-worker="w1">"#))
            #expect(page.contains("ValueError: &lt;bad input&gt;"))
            #expect(!page.contains("<script>alert"))
            #expect(!page.contains("http-equiv=\"refresh\"") || page.contains("content=\"7\""))
            let all = try await harness.http.request("GET", "/ui/namespace/-/work_spec/images").text
            #expect(all.contains("&#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;"))  // R(key), escaped
            let spec = try await harness.http.request("GET", "/ui/namespace/-/work_spec/images?status=available").text
            #expect(spec.contains(#"<tr data-unit="b">"#))
            #expect(!spec.contains(#"<tr data-unit="a">"#))  // a failed
            #expect(
                try await harness.http.request("GET", "/ui/namespace/-/work_spec/images?status=bogus").status == 400)
            let unit = try await harness.http.request("GET", "/ui/namespace/-/work_spec/images/work_unit/a").text
            #expect(unit.contains(#"<tr data-attempt="#))
            #expect(unit.contains("failed"))
            #expect(try await harness.http.request("GET", "/ui/namespace/-/worker/w1").text.contains("Units held"))
            for path in ["/ui/namespace/ghost", "/ui/namespace/-/work_spec/ghost", "/ui/nothing"] {
                let missing = try await harness.http.request("GET", path)
                #expect(missing.status == 404, "\(path)")
                #expect(missing.header("content-type") == "text/html; charset=utf-8")
            }
            #expect(try await harness.call("GET", "/namespace").1["namespaces"]?.elements?.count == 1)
            #expect(
                try await harness.http.request("POST", "/ui", headers: [("Content-Type", "application/json")], body: [])
                    .status
                    == 405)
            #expect(try await harness.http.request("GET", "/ui", host: "evil.example").status == 421)
        }
    }

    @Test("headless Chromium renders the counts and a failed unit's traceback; screenshots are saved")
    func browser() async throws {
        try await Self.withPopulated { harness in
            let base = "http://127.0.0.1:\(harness.http.port)"
            let dom = try await chromium(["--dump-dom", base + "/ui/namespace/-"])
            #expect(dom.status == 0)
            let html = dom.stdout
            func cell(_ spec: String, _ status: String) -> String? {
                guard let row = html.range(of: #"<tr data-spec="\#(spec)""#) else { return nil }
                let rest = html[row.upperBound...]
                guard let end = rest.range(of: "</tr>"),
                    let start = rest[..<end.lowerBound].range(of: #"data-status="\#(status)">"#)
                else { return nil }
                return String(rest[start.upperBound...].prefix { $0 != "<" })
            }
            #expect(cell("images", "available") == "2")
            #expect(cell("images", "delayed") == "1")
            #expect(cell("images", "pending") == "1")  // the `<script>` unit
            #expect(cell("images", "failed") == "1")
            #expect(cell("thumbs", "available") == "0")
            #expect(cell("", "available") == "2")  // totals
            #expect(html.contains(#"<div class="failure" data-spec="images" data-unit="a">"#))
            #expect(html.contains("ValueError: &lt;bad input&gt;"))

            let specDOM = try await chromium(["--dump-dom", base + "/ui/namespace/-/work_spec/images"]).stdout
            #expect(specDOM.contains(#"<tr data-unit="later">"#))
            #expect(specDOM.contains(#"<pre class="traceback">Traceback (most recent call last):"#))

            for (name, path) in [
                ("ui-namespace.png", "/ui/namespace/-"), ("ui-work-spec.png", "/ui/namespace/-/work_spec/images"),
            ] {
                let file = artifactDirectory + "/" + name
                try? FileManager.default.removeItem(atPath: file)
                let shot = try await chromium(["--window-size=1280,1000", "--screenshot=\(file)", base + path])
                #expect(shot.status == 0)
                let bytes = try #require(FileManager.default.contents(atPath: file))
                #expect(Array(bytes.prefix(8)) == [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
                #expect(bytes.count > 10_000)
            }
        }
    }
}
