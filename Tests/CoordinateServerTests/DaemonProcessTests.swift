import CoordinateConfig
import CoordinateServer
import Foundation
import TestSupport
import Testing

/// The `coordinated` executable as operators run it.
@Suite("coordinated executable")
struct DaemonProcessTests {
    @Test("--version prints the program name and the VERSION file's version")
    func version() throws {
        let result = try runExecutable("coordinated", ["--version"])
        #expect(result.status == 0)
        let file = try String(contentsOf: TestPaths.repositoryRoot.appendingPathComponent("VERSION"), encoding: .utf8)
        #expect(result.stdout == "coordinated \(file.trimmingCharacters(in: .whitespacesAndNewlines))\n")
        #expect(CoordinateVersion.current == file.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test("--dump-config prints every key with the overrides applied")
    func dumpConfig() throws {
        let result = try runExecutable("coordinated", ["--dump-config", "--port", "7000", "--host", "0.0.0.0"])
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
    func configurationErrors(arguments: [String], expected: String) throws {
        let result = try runExecutable("coordinated", arguments)
        #expect(result.status == 2)
        #expect(result.stderr == expected)
    }

    @Test("a configuration file with a bad value names the file and the key")
    func badFile() throws {
        let path = NSTemporaryDirectory() + "coordinate-bad-\(UUID().uuidString).yaml"
        try "coordinate:\n  server:\n    max_connections: lots\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try runExecutable("coordinated", ["-c", path])
        #expect(result.status == 2)
        #expect(
            result.stderr
                == "coordinated: configuration error: \(path): coordinate.server.max_connections: expected an integer\n"
        )
    }

    @Test("a port in use exits 2 naming the address and listener")
    func portInUse() throws {
        let first = try DaemonProcess(arguments: ["--config", try Self.emptyModulesConfig()])
        defer { first.stop() }
        let second = try DaemonProcess(
            arguments: ["--config", try Self.emptyModulesConfig()], port: first.port, waitForListener: false)
        #expect(second.waitForExit() == 2)
        // Storage initialisation runs beside the listeners and may still log after the failure line (it did
        // under ThreadSanitizer), so the line is looked for, not required last.
        #expect(
            second.stderrText().contains(
                "coordinated: cannot listen on 127.0.0.1:\(first.port) (CBOR-RPC): Address already in use\n"))
    }

    @Test("SIGTERM closes connections and exits 0; the pid file is written")
    func sigterm() throws {
        let pidFile = NSTemporaryDirectory() + "coordinated-\(UUID().uuidString).pid"
        let daemon = try DaemonProcess(arguments: ["--config", try Self.emptyModulesConfig(), "--pid", pidFile])
        let connection = try RawConnection(port: daemon.port)
        #expect(try connection.call("nothing").errorMessage == "no such method nothing")
        // The pid file is written right after the listeners open; allow for that moment.
        var pid = ""
        for _ in 0..<200 {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), text.hasSuffix("\n") {
                pid = text
                break
            }
            usleep(10_000)
        }
        #expect(pid == "\(daemon.process.processIdentifier)\n")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        #expect(connection.closedByPeer())
        try? FileManager.default.removeItem(atPath: pidFile)
    }

    @Test("on shutdown an idle connection is reset, so clients that retry on socket errors reconnect")
    func idleConnectionsResetOnShutdown() throws {
        // The Python client retries a call only on a socket error; end-of-stream surfaces as EOFError. A reset
        // is what lets its next call reach a restarted daemon.
        let daemon = try DaemonProcess(arguments: ["--config", try Self.emptyModulesConfig()])
        let idle = try RawConnection(port: daemon.port)
        #expect(try idle.call("nothing").errorMessage == "no such method nothing")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        #expect(idle.resetByPeer())
    }

    /// A configuration serving no modules, so the executable can start before any module exists.
    static func emptyModulesConfig() throws -> String {
        let path = NSTemporaryDirectory() + "coordinate-empty-\(UUID().uuidString).yaml"
        try "coordinate:\n  server:\n    modules: []\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
