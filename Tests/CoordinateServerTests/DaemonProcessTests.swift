import CBOR
import CoordinateConfig
import CoordinateServer
import Foundation
import TestSupport
import Testing

/// The `coordinated` executable as operators run it.
@Suite("coordinated executable")
struct DaemonProcessTests {
    @Test("--version prints the program name and the VERSION file's version")
    func version() async throws {
        let result = try await runExecutable("coordinated", ["--version"])
        #expect(result.status == 0)
        let file = try String(contentsOf: TestPaths.repositoryRoot.appendingPathComponent("VERSION"), encoding: .utf8)
        #expect(result.stdout == "coordinated \(file.trimmingCharacters(in: .whitespacesAndNewlines))\n")
        #expect(CoordinateVersion.current == file.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test("--dump-config prints every key with the overrides applied")
    func dumpConfig() async throws {
        let result = try await runExecutable("coordinated", ["--dump-config", "--port", "7000", "--host", "0.0.0.0"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("  server:\n    host: \"0.0.0.0\"\n    port: 7000\n"))
        for key in [
            "namespace", "default_lifetime", "max_pending_response_bytes", "cborrpc_allow", "worker_retention",
            "max_task_seconds",
        ] {
            #expect(result.stdout.contains("\(key):"), "\(key)")
        }
    }

    @Test(
        "configuration errors exit 2 with one line",
        arguments: [
            (
                ["--port", "x"],
                "coordinated: configuration error: command line: coordinate.server.port: expected an integer port\n"
            ),
            (
                ["--storage", "redis"],
                "coordinated: configuration error: command line: coordinate.server.storage: unknown storage backend redis\n"
            ),
            (
                ["--config", "/nonexistent/c.yaml"],
                "coordinated: configuration error: /nonexistent/c.yaml: cannot read file: No such file or directory\n"
            ),
        ])
    func configurationErrors(arguments: [String], expected: String) async throws {
        let result = try await runExecutable("coordinated", arguments)
        #expect(result.status == 2)
        #expect(result.stderr == expected)
    }

    @Test("a configuration file with a bad value names the file and the key")
    func badFile() async throws {
        let path = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    max_connections: lots\n", prefix: "coordinate-bad")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await runExecutable("coordinated", ["-c", path])
        #expect(result.status == 2)
        #expect(
            result.stderr
                == "coordinated: configuration error: \(path): coordinate.server.max_connections: expected an integer\n"
        )
    }

    @Test("a file that is not YAML, or expands without bound through aliases, is one line and exit 2")
    func unparsableFiles() async throws {
        var laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1..<12 {
            laughs +=
                "a\(level): &a\(level) [\(Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", "))]\n"
        }
        laughs += "coordinate:\n  namespace: *a11\n"
        for (text, reason) in [
            ("coordinate:\n  server:\n    port: [1, 2\n  bad: : :\n", "cannot parse YAML: line 4, column 6: "),
            (laughs, "more than 100000 values"),
        ] {
            let path = try TestBuild.temporaryFile(text, prefix: "coordinate-bad")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let result = try await runExecutable("coordinated", ["-c", path])
            #expect(result.status == 2)
            #expect(result.stderr.hasPrefix("coordinated: configuration error: \(path): \(reason)"), "\(result.stderr)")
            #expect(result.stderr.filter { $0 == "\n" }.count == 1, "one line: \(result.stderr)")
        }
    }

    @Test("ulimit -n below max_connections: fewer connections accepted, said once, the daemon keeps answering")
    func descriptorLimit() async throws {
        let path = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    http_max_connections: 64\n", prefix: "coordinate-fd")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await withDaemons { group in
            let daemon = try await group.start(arguments: ["-c", path], http: true, descriptorLimit: 512)
            // Logged before the listeners open; the pipe may deliver it a moment after the ports file appears.
            #expect(await daemon.child.waitForStderr(containing: "descriptor limit 512"))
            let warning = daemon.stderr.components(separatedBy: "\n").filter { $0.contains("descriptor limit 512") }
            #expect(warning.count == 1, "\(daemon.stderr)")
            let accepted = try #require(
                warning.first.flatMap { $0.firstMatch(of: /accepting at most (\d+) CBOR-RPC connections/) }
                    .flatMap { Int($0.1) })
            #expect(accepted > 100 && accepted < 512)
            // More connections than that: the excess are closed at once, nothing runs out of descriptors.
            var open: [RawConnection] = []
            for _ in 0..<(accepted + 40) { open.append(try await daemon.connect(receiveTimeout: 10)) }
            #expect(try await open[0].result("list_work_specs", [.map(CBORMap())]) == .tuple([[], .null]))
            for connection in open.suffix(40) { #expect(await connection.closedByPeer()) }
            // /healthz and a new client are still answered.
            #expect(try await daemon.http.request("GET", "/healthz").status == 200)
            for connection in open.prefix(50) { await connection.close() }
            #expect(
                try await retrying(for: .seconds(30)) {
                    try await daemon.connect().result("list_work_specs", [.map(CBORMap())])
                } == .tuple([[], .null]))
            #expect(daemon.isRunning)
        }
    }

    @Test("a port in use exits 2 naming the address and listener")
    func portInUse() async throws {
        try await withDaemon(storage: nil, arguments: ["--config", try Self.emptyModulesConfig()]) { first in
            let second = try await ChildProcess.spawn(
                TestBuild.executable("coordinated"),
                ["--config", try Self.emptyModulesConfig(), "--port", String(first.port), "--http-port", "0"])
            let ended = await second.waitForExit(timeout: .seconds(60))
            if ended == nil { await second.stop() }
            #expect(ended == .exited(2))
            // Storage initialisation runs beside the listeners and may still log after the failure line (it did
            // under ThreadSanitizer), so the line is looked for, not required last.
            #expect(
                await second.result().stderr.contains(
                    "coordinated: cannot listen on 127.0.0.1:\(first.port) (CBOR-RPC): Address already in use\n"))
        }
    }

    @Test("SIGTERM closes connections and exits 0; the pid and ports files are written")
    func sigterm() async throws {
        let pidFile = NSTemporaryDirectory() + "coordinated-\(UUID().uuidString).pid"
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        try await withDaemon(
            storage: nil, arguments: ["--config", try Self.emptyModulesConfig(), "--pid", pidFile], http: true
        ) { daemon in
            // The helper found both ports in the ports file; they answer.
            let connection = try await daemon.connect()
            #expect(try await connection.call("nothing").errorMessage == "no such method nothing")
            #expect(try await daemon.http.request("GET", "/healthz").status == 200)
            // The pid file is written together with the ports file, right after the listeners open.
            #expect(try String(contentsOfFile: pidFile, encoding: .utf8) == "\(daemon.child.pid)\n")
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit() == .exited(0))
            #expect(await connection.closedByPeer())
        }
    }

    @Test("on shutdown an idle connection is reset, so clients that retry on socket errors reconnect")
    func idleConnectionsResetOnShutdown() async throws {
        // The Python client retries a call only on a socket error; end-of-stream surfaces as EOFError. A reset
        // is what lets its next call reach a restarted daemon.
        try await withDaemon(storage: nil, arguments: ["--config", try Self.emptyModulesConfig()]) { daemon in
            let idle = try await daemon.connect()
            #expect(try await idle.call("nothing").errorMessage == "no such method nothing")
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit() == .exited(0))
            #expect(await idle.resetByPeer())
        }
    }

    @Test("--port 0 and --http-port auto bind ports the kernel chooses, reported in the ports file")
    func portsFile() async throws {
        let portsFile = NSTemporaryDirectory() + "coordinated-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: portsFile) }
        let child = try await ChildProcess.spawn(
            TestBuild.executable("coordinated"),
            ["--storage", "memory", "--port", "0", "--http-port", "auto", "--ports-file", portsFile, "-q"])
        #expect(await eventually { FileManager.default.fileExists(atPath: portsFile) })
        let text = try String(contentsOfFile: portsFile, encoding: .utf8)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Int])
        let cborPort = try #require(json["cborrpc"])
        let httpPort = try #require(json["http"])
        #expect(cborPort != 0 && httpPort != 0 && cborPort != httpPort)
        #expect(text == #"{"cborrpc": \#(cborPort), "http": \#(httpPort)}"# + "\n")
        #expect(try await RawConnection(port: cborPort).result("list_work_specs", [.map(CBORMap())]) != .null)
        #expect(try await HTTPTestClient(port: httpPort).request("GET", "/healthz").status == 200)
        #expect(await child.stop() == .exited(0))

        // HTTP off: "http" is null; --dump-config shows auto as it was given.
        let plain = try await runExecutable("coordinated", ["--dump-config", "--http-port", "auto"])
        #expect(plain.stdout.contains("    http_port: \"auto\"\n") || plain.stdout.contains("    http_port: auto\n"))
        try FileManager.default.removeItem(atPath: portsFile)
        try await withDaemon(arguments: ["--ports-file", portsFile]) { daemon throws in
            #expect(
                try String(contentsOfFile: portsFile, encoding: .utf8)
                    == #"{"cborrpc": \#(daemon.port), "http": null}"# + "\n")
        }
    }

    /// A configuration serving no modules, so the executable can start before any module exists.
    static func emptyModulesConfig() throws -> String {
        try TestBuild.temporaryFile("coordinate:\n  server:\n    modules: []\n", prefix: "coordinate-empty")
    }
}
