import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// The `coordinate` CLI against a real daemon: output and exit status of every command.
struct CLIHarness: Sendable {
    let daemon: DaemonProcess
    let client: CoordinateClient

    /// Runs `coordinate --address … ARGS`.
    func run(_ arguments: [String], stdin: String? = nil) async throws -> CommandResult {
        try await runExecutable("coordinate", arguments + ["--address", "127.0.0.1:\(daemon.port)"], stdin: stdin)
    }

    func file(_ text: String, suffix: String = ".yaml") throws -> String {
        try Self.temporaryFile(text, suffix: suffix)
    }

    static func temporaryFile(_ text: String, suffix: String = ".yaml") throws -> String {
        try TestBuild.temporaryFile(text, prefix: "coordinate-cli", suffix: suffix)
    }
}

/// Runs `body` with a memory-backed daemon and a client for it; the daemon stops when `body` ends.
func withCLIHarness<R>(_ body: (CLIHarness) async throws -> R) async throws -> R {
    try await withDaemon(arguments: ["-q"]) { daemon in
        try await body(
            CLIHarness(
                daemon: daemon, client: CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)")))
        )
    }
}

@Suite("coordinate CLI")
struct CLITests {
    @Test("--version and usage errors")
    func versionAndUsage() async throws {
        let version = try await runExecutable("coordinate", ["--version"])
        #expect(version.status == 0)
        #expect(version.stdout == "coordinate 0.1.0\n")
        let unknown = try await runExecutable("coordinate", ["summary", "--bogus"])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("Unknown option '--bogus'"))
        let badAddress = try await runExecutable("coordinate", ["specs", "--address", "nowhere"])
        #expect(badAddress.status == 2)
        #expect(badAddress.stderr == "coordinate: invalid --address nowhere (expected host:port)\n")
        let missing = try await runExecutable("coordinate", ["specs", "-c", "/nonexistent/coordinate.yaml"])
        #expect(missing.status == 2)
        #expect(missing.stderr.hasPrefix("coordinate: configuration error: /nonexistent/coordinate.yaml"))
    }

    @Test("--tls-ca-file: the CLI speaks TLS to a TLS daemon; without it, it is told the server speaks TLS")
    func tls() async throws {
        let fixtures = TestPaths.fixtures.appendingPathComponent("tls").path
        let config = try CLIHarness.temporaryFile(
            "coordinate:\n  server:\n    tls_cert_file: \(fixtures)/server.pem\n    tls_key_file: \(fixtures)/server.key\n"
        )
        try await withDaemon(arguments: ["-c", config, "-q"]) { daemon in
            let address = "127.0.0.1:\(daemon.port)"
            let secure = try await runExecutable(
                "coordinate", ["--tls-ca-file", "\(fixtures)/ca.pem", "--address", address, "--json", "specs"])
            #expect(secure.status == 0, "\(secure.stderr)")
            #expect(secure.stdout == "[]\n")
            let untrusted = try await runExecutable(
                "coordinate", ["specs", "--tls-ca-file", "\(fixtures)/other-ca.pem", "--address", address])
            #expect(untrusted.status == 3)
            #expect(untrusted.stderr.contains("TLS handshake failed"), "\(untrusted.stderr)")
            let configFile = try CLIHarness.temporaryFile("coordinate:\n  address: \"\(address)\"\n  retries: 0\n")
            let plain = try await runExecutable("coordinate", ["-c", configFile, "specs"])
            #expect(plain.status == 1)
            #expect(plain.stderr == "coordinate: protocol error: the server speaks TLS; connect with TLS\n")
        }
    }

    @Test("cannot connect: exit 3 after the configured retries; global options before the subcommand")
    func cannotConnect() async throws {
        try await withCLIHarness { harness in
            // A port that is bound (so nobody else can take it) but not listening: connections are refused.
            let result = try await withUnusedPort { port in
                let config = try harness.file(
                    "coordinate:\n  address: \"127.0.0.1:\(port)\"\n  retries: 1\n  base_retry_seconds: 0.01\n")
                return try await runExecutable("coordinate", ["-c", config, "specs"])
            }
            #expect(result.status == 3)
            #expect(result.stderr.contains("cannot reach coordinated: cannot connect to 127.0.0.1:"))
            #expect(result.stderr.hasSuffix("Connection refused\n"))
            // The same file pointing at the daemon works, options first as with the Python CLI.
            let good = try harness.file("coordinate:\n  address: \"127.0.0.1:\(harness.daemon.port)\"\n")
            let specs = try await runExecutable("coordinate", ["-c", good, "--json", "specs"])
            #expect(specs.status == 0)
            #expect(specs.stdout == "[]\n")
        }
    }

    @Test("spec load (flows, lists, JSON), specs, show, pause, resume, delete")
    func specs() async throws {
        try await withCLIHarness { harness in
            let flows = try harness.file(
                "flows:\n  first:\n    min_gb: 1\n    then: second\n  second:\n    desc: two\n")
            let list = try harness.file(#"[{"name": "third", "weight": 3}]"#, suffix: ".json")
            let load = try await harness.run(["spec", "load", flows, list])
            #expect(load.status == 0)
            #expect(load.stdout == "loaded work spec first\nloaded work spec second\nloaded work spec third\n")
            #expect(try await harness.run(["specs"]).stdout == "first\nsecond\nthird\n")
            #expect(
                try await harness.client.workSpec("first") == [
                    .text("name"): .text("first"), .text("min_gb"): 1, .text("then"): .text("second"),
                ])

            let show = try await harness.run(["spec", "show", "first"])
            #expect(show.stdout == "name: \"first\"\nmin_gb: 1\nthen: \"second\"\n")
            #expect(try await harness.run(["spec", "pause", "second"]).stdout == "paused work spec second\n")
            let shown = try JSONValue.parse(try await harness.run(["spec", "show", "second", "--json"]).stdout)
            #expect(shown["spec"] == ["name": "second", "desc": "two"])
            #expect(shown["meta"]?["paused"] == .bool(true))
            #expect(try await harness.run(["spec", "resume", "second"]).stdout == "resumed work spec second\n")
            #expect(try await harness.client.workSpecMeta("second").paused == false)
            #expect(try await harness.run(["spec", "delete", "third"]).stdout == "deleted work spec third\n")

            let missing = try await harness.run(["spec", "show", "nope"])
            #expect(missing.status == 4)
            #expect(missing.stderr == "coordinate: no such work spec nope\n")
            #expect(try await harness.run(["spec", "delete", "nope"]).status == 4)
            let broken = try await harness.run(["spec", "load", try harness.file("[1, 2]")])
            #expect(broken.status == 2)
        }
    }

    @Test("units add from arguments, JSON lines and a file with progress; list, status, summary")
    func units() async throws {
        try await withCLIHarness { harness in
            try await harness.client.setWorkSpec(["name": "s"])
            try await harness.client.setWorkSpec(["name": "t"])
            let added = try await harness.run([
                "units", "add", "s", "k1", "k2", "--data", #"{"n": 1}"#, "--priority", "5",
            ])
            #expect(added.stdout == "added 2 work units to s\n")
            let lines =
                #"{"key": "a", "data": {"x": 1}}"# + "\n" + #"{"b": {"y": 2}}"# + "\n\n"
                + #"{"key_base64": "/w==", "priority": 9}"# + "\n"
            #expect(try await harness.run(["units", "add", "s"], stdin: lines).stdout == "added 3 work units to s\n")
            #expect(
                try await harness.client.workUnits("s", states: [.available]).map(\.key)
                    == [.bytes([0xff]), .text("k1"), .text("k2"), .text("a"), .text("b")])

            // 25 000 units from a file in batches of 10 000: progress on stderr, the total on stdout.
            let bulk = try harness.file(
                (0..<25_000).map { #"{"key": "u\#($0)"}"# }.joined(separator: "\n"), suffix: ".jsonl")
            let big = try await harness.run(["units", "add", "t", "--file", bulk, "--batch-size", "10000"])
            #expect(big.status == 0)
            #expect(big.stdout == "added 25000 work units to t\n")
            #expect(big.stderr.split(separator: "\n").map { $0.hasPrefix("added ") } == [true, true])
            #expect(try await harness.client.countWorkUnits("t") == [.available: 25_000])

            let bad = try await harness.run(["units", "add", "s"], stdin: "{\"key\": 1}\nnot json\n")
            #expect(bad.status == 2)
            #expect(bad.stderr == "coordinate: line 1: key must be a string\n")

            _ = try await harness.client.getWork(workerID: "w9", specNames: ["s"])  // takes the 0xff unit (priority 9)
            let table = try await harness.run(["units", "list", "s", "--limit", "3"])
            #expect(
                table.stdout == """
                    KEY  STATUS     WORKER  DATA
                    a    AVAILABLE          {"x":1}
                    b    AVAILABLE          {"y":2}
                    k1   AVAILABLE          {"n":1}

                    """)
            #expect(table.stderr.contains("more units follow"))
            let everything = try JSONValue.parse(
                try await harness.run(["units", "list", "s", "--limit", "2", "--all", "--json"]).stdout)
            #expect(everything.elements?.count == 5)
            let pending = try JSONValue.parse(
                try await harness.run(["units", "list", "s", "--status", "pending", "--json"]).stdout)
            #expect(
                pending == [
                    ["key": "\u{FFFD}", "key_base64": "/w==", "status": "PENDING", "worker_id": "w9", "data": [:]]
                ])

            let status = try await harness.run(["units", "status", "s", "a", "zz"])
            #expect(status.status == 4)
            #expect(
                status.stdout == "KEY  STATUS     WORKER  EXPIRES/DONE  TRACEBACK\na    AVAILABLE\nzz   not found\n")
            #expect(status.stderr == "coordinate: no such work unit zz\n")

            let summary = try await harness.run(["summary"])
            #expect(
                summary.stdout == """
                    WORK SPEC  AVAILABLE  PENDING  FINISHED  FAILED  TOTAL
                    s                  4        1         0       0      5
                    t              25000        0         0       0  25000
                    (all)          25004        1         0       0  25005

                    """)
            let json = try JSONValue.parse(try await harness.run(["summary", "--json"]).stdout)
            #expect(
                json.elements?.first == [
                    "name": "s", "available": 4, "pending": 1, "finished": 0, "failed": 0, "total": 5, "paused": false,
                ])
        }
    }

    @Test("units retry, prioritize and delete")
    func unitChanges() async throws {
        try await withCLIHarness { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", ["a", "b", "c", "d"].map { WorkUnitSubmission(key: .text($0)) })
            for unit in try await client.getWork(workerID: "w", maxJobs: 2) { try await unit.fail(traceback: "boom") }
            let status = try await harness.run(["units", "status", "s", "a"])
            #expect(status.stdout.contains("FAILED"))
            #expect(status.stdout.hasSuffix("boom\n"))
            #expect(try await harness.run(["units", "retry", "s", "--failed"]).stdout == "retried 2 work units\n")
            #expect(try await client.countWorkUnits("s") == [.available: 4])

            #expect(
                try await harness.run(["units", "prioritize", "s", "d", "--priority", "10"]).stdout
                    == "prioritized 1 work units\n")
            #expect(try await harness.run(["units", "prioritize", "s", "c", "--adjust", "20"]).status == 0)
            #expect(
                try await client.workUnits("s", states: [.available]).map(\.key) == [
                    .text("c"), .text("d"), .text("a"), .text("b"),
                ])
            #expect(try await harness.run(["units", "prioritize", "s", "c"]).status == 2)

            #expect(try await harness.run(["units", "delete", "s", "a"]).stdout == "deleted 1 work units\n")
            let refused = try await harness.run(["units", "delete", "s", "--all"], stdin: "n\n")
            #expect(refused.status == 1)
            #expect(try await client.countWorkUnits("s") == [.available: 3])
            #expect(
                try await harness.run(["units", "delete", "s", "--all", "--yes"]).stdout == "deleted 3 work units\n")
            #expect(try await harness.run(["units", "delete", "s"]).status == 2)
            #expect(try await harness.run(["units", "list", "s", "--status", "blocked"]).status == 2)
        }
    }

    @Test("workers, locks, clear and raw rpc")
    func workersLocksClearRPC() async throws {
        try await withCLIHarness { harness in
            let client = harness.client
            try await client.workerHeartbeat(
                workerID: "parent", mode: "RUN", lifetime: 600, environment: .map(CBORMap([(.text("pid"), 7)])))
            try await client.workerHeartbeat(workerID: "parent.0", mode: "RUN", lifetime: 600, parent: "parent")
            try await client.setWorkSpec(["name": "s"])
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "u")])
            _ = try await client.getWork(workerID: "parent.0")
            let workers = try await harness.run(["workers"])
            #expect(
                workers.stdout == """
                    WORKER    MODE  PARENT  UNITS  INFO
                    parent    RUN                  {"pid":7}
                    parent.0  RUN   parent      1  {}
                    2 live workers, 1 with children

                    """)

            _ = try await client.lock(lockerID: "me", paths: [["jobs", "a"]], timeout: 600)
            let locks = try await harness.run(["locks"])
            #expect(locks.stdout.hasPrefix("PATH    OWNER  EXPIRES\njobs/a  me     20"))
            #expect(try await harness.run(["locks", "other"]).stdout == "PATH  OWNER  EXPIRES\n")

            let rpc = try await harness.run(["rpc", "get_work_units", "s", "{limit: 5}"])
            #expect(rpc.stdout == "[[[\"u\", {}]], null]\n")
            let json = try await harness.run(["rpc", "worker_stats", "--json"])
            #expect(try JSONValue.parse(json.stdout) == ["num_expirable": 2, "num_children": 1, "num_workers": 2])
            let failure = try await harness.run(["rpc", "snapshot"])
            #expect(failure.status == 1)
            #expect(failure.stderr == "coordinate: no such method snapshot\n")

            let declined = try await harness.run(["clear"], stdin: "no\n")
            #expect(declined.status == 1)
            #expect(try await harness.run(["specs"]).stdout == "s\n")
            let confirmed = try await harness.run(["clear"], stdin: "y\n")
            #expect(confirmed.stdout == "deleted 1 work specs\n")
            try await client.setWorkSpec(["name": "again"])
            #expect(
                try await harness.run(["clear", "--yes", "--json"]).stdout == "{\n  \"deleted_work_specs\": 1\n}\n")
            // Workers and locks survive clear.
            #expect(try await client.workerStats().workers == 2)
        }
    }
}

@Suite("README examples")
struct ExampleTests {
    @Test("coordinate-example submits 100 units and works them off")
    func example() async throws {
        try await withCLIHarness { harness in
            let address = "127.0.0.1:\(harness.daemon.port)"
            let submit = try await runExecutable("coordinate-example", ["submit", address])
            #expect(submit.status == 0)
            #expect(submit.stdout == "AVAILABLE 100\n")
            let work = try await runExecutable("coordinate-example", ["work", address])
            #expect(work.status == 0)
            #expect(work.stdout == "FINISHED 100\n")
            let done = try await harness.client.workUnits("thumbnails", keys: ["photo-3"])
            #expect(done.first?.data == ["width": 192, "thumbnail": .text("thumb-192.png")])
        }
    }
}

@Suite("coordinate export and import")
struct ExportImportTests {
    @Test("a namespace exported from memory imports into SQLite identically, then exports the same lines")
    func memoryToSQLite() async throws {
        try await withDaemons { group in
            let source = try await group.start(arguments: ["-q"], http: true)
            let sourceHTTP = try #require(source.httpPort)
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(source.port)"))
            try await client.setWorkSpec(["name": "first", "then": "second", "weight": 3])
            try await client.setWorkSpec(["name": "second", "continuous": true, "interval": 60])
            try await client.controlWorkSpec("first", ["max_running": 5, "status": 2])
            try await client.resumeWorkSpec("first")
            try await client.addWorkUnits(
                "first",
                [
                    WorkUnitSubmission(key: "a", data: ["n": 1], priority: 3),
                    WorkUnitSubmission(key: .bytes([0xff, 0x00]), data: ["blob": .bytes([1, 2, 3])]),
                    WorkUnitSubmission(key: .text("later"), data: ["t": .tuple([1, 2])], delay: 3600),
                    WorkUnitSubmission(key: "b"), WorkUnitSubmission(key: "c"),
                ])
            let granted = try await client.getWork(workerID: "w.0", specNames: ["first"], maxJobs: 3)
            #expect(granted.count == 3)
            try await granted[0].finish(data: ["output": ["next": ["from": "a"]]])
            try await granted[1].fail(traceback: "boom")
            try await client.workerHeartbeat(workerID: "w", mode: "RUN", lifetime: 600, environment: ["pid": 9])
            try await client.workerHeartbeat(workerID: "w.0", mode: "RUN", lifetime: 600, parent: "w")
            _ = try await client.lock(
                lockerID: "w", paths: [["jobs", 1], [.uuid(CBORUUID(high: 7, low: 8))]], timeout: 600)

            let exported = try await runExecutable(
                "coordinate", ["export", "", "--http-url", "http://127.0.0.1:\(sourceHTTP)"])
            #expect(exported.status == 0)
            let lines = exported.stdout.split(separator: "\n").map(String.init)
            // Header, 2 specs, 6 units (5 added, 1 chained), 2 workers, 2 locks.
            #expect(lines.count == 13)
            let types = lines.compactMap { try? JSONValue.parse($0)["type"]?.stringValue }
            #expect(types.first == "coordinate-export")

            let target = try await group.start(storage: "sqlite", arguments: ["-q"], http: true)
            let targetHTTP = try #require(target.httpPort)
            let targetClient = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(target.port)"))
            let imported = try await runExecutable(
                "coordinate", ["import", "", "--http-url", "http://127.0.0.1:\(targetHTTP)"], stdin: exported.stdout)
            #expect(imported.status == 0)
            #expect(imported.stdout == "imported 2 work specs, 6 work units, 3 attempts, 2 workers, 2 locks\n")

            // Exporting again gives the same lines except the header's export time.
            let again = try await runExecutable(
                "coordinate", ["export", "", "--http-url", "http://127.0.0.1:\(targetHTTP)"])
            let againLines = again.stdout.split(separator: "\n").map(String.init)
            #expect(Array(againLines.dropFirst()) == Array(lines.dropFirst()))

            // CBOR-RPC reads agree.
            for spec in ["first", "second"] {
                #expect(try await targetClient.countWorkUnits(spec) == client.countWorkUnits(spec))
                let keys = try await client.workUnits(spec).map(\.key)
                #expect(try await targetClient.workUnits(spec).map(\.key) == keys)
                #expect(
                    try await targetClient.workUnitStatus(spec, keys: keys) == client.workUnitStatus(spec, keys: keys))
            }
            #expect(try await targetClient.workSpecMeta("first") == client.workSpecMeta("first"))
            #expect(try await targetClient.workerModes().map(\.workerID) == client.workerModes().map(\.workerID))
            #expect(try await targetClient.childWorkUnits(parent: "w") == client.childWorkUnits(parent: "w"))
            #expect(try await targetClient.listLocks() == client.listLocks())

            // A second import into the now non-empty namespace is refused; a broken file names its line.
            let refused = try await runExecutable(
                "coordinate", ["import", "", "--http-url", "http://127.0.0.1:\(targetHTTP)"], stdin: exported.stdout)
            #expect(refused.status == 1)
            #expect(refused.stderr == "coordinate: namespace  is not empty\n")
            let broken = try await runExecutable(
                "coordinate", ["import", "other", "--http-url", "http://127.0.0.1:\(targetHTTP)"],
                stdin: lines[0] + "\n{\"type\": \"work_unit\"}\n")
            #expect(broken.status == 1)
            #expect(broken.stderr.hasPrefix("coordinate: line 2: "))
            #expect(try await targetClient.call("list_work_specs", [[:]]) != .null)
        }
    }
}
