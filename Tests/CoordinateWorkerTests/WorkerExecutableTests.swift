import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A running `coordinate-worker` process.
final class WorkerProcess: @unchecked Sendable {
    // @unchecked Sendable: driven only by the test that owns it.
    let process = Process()

    init(port: Int, arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: DaemonProcess.executable("coordinate-worker"))
        process.arguments = ["--address", "127.0.0.1:\(port)", "--poll-interval", "0.05"] + arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        // Not a pipe: a command left running by a killed worker would hold it open, and Foundation reports the
        // worker's exit only once its output pipes close.
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for exit; the status, or nil after `timeout` seconds.
    func waitForExit(timeout: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit {
        if process.isRunning {
            signal(SIGKILL)
            _ = waitForExit(timeout: 5)
        }
    }
}

/// The `coordinate-worker` executable running shell-command specs.
@Suite("coordinate-worker executable")
struct WorkerExecutableTests {
    @Test("--version")
    func version() throws {
        let result = try runExecutable("coordinate-worker", ["--version"])
        #expect(result.status == 0)
        #expect(result.stdout == "coordinate-worker 0.1.0\n")
    }

    @Test("shell commands: stdin JSON and environment; exit 0 finishes, anything else fails with stderr")
    func shellCommands() async throws {
        let daemon = try DaemonProcess(arguments: ["--storage", "memory", "-q"])
        defer { daemon.stop() }
        let directory = NSTemporaryDirectory() + "coordinate-worker-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
        // List form, no shell: the command copies its stdin and environment into a file per unit.
        let script = #"f="$OUT/$COORDINATE_UNIT_KEY_BASE64"; cat > "$f.json"; echo "$COORDINATE_WORK_SPEC" > "$f.spec""#
        try await client.setWorkSpec(["name": "copy", "command": ["/bin/sh", "-c", .text(script)]])
        // String form, through /bin/sh -c.
        try await client.setWorkSpec(["name": "fails", "command": "echo 'bad thing' >&2; exit 3"])
        try await client.addWorkUnits(
            "copy",
            [
                WorkUnitSubmission(key: .text("plain"), data: .map(CBORMap([(.text("n"), 1)]))),
                WorkUnitSubmission(key: .bytes([0xff, 0x01]), data: ["bytes-key": 1]),
            ])
        try await client.addWorkUnits("fails", [WorkUnitSubmission(key: "f")])

        let worker = try WorkerProcess(port: daemon.port, arguments: ["-n", "2"], environment: ["OUT": directory])
        #expect(
            try await eventually {
                let copied = try await client.countWorkUnits("copy")
                let failed = try await client.countWorkUnits("fails")
                return copied == [.finished: 2] && failed == [.failed: 1]
            })
        worker.signal(SIGTERM)
        #expect(worker.waitForExit() == 0)

        let plain = try JSONValue.parse(
            String(contentsOfFile: "\(directory)/\(Base64.encode(Array("plain".utf8))).json", encoding: .utf8))
        #expect(plain == ["work_spec": "copy", "key": "plain", "data": ["n": 1]])
        let binary = try JSONValue.parse(
            String(contentsOfFile: "\(directory)/\(Base64.encode([0xff, 0x01])).json", encoding: .utf8))
        #expect(binary["key_base64"] == .string(Base64.encode([0xff, 0x01])))
        // Byte-string data keys are not JSON-safe: the data arrives as base64 CBOR.
        #expect(try CoordinateJSON.data(from: try #require(binary["data"])) == ["bytes-key": 1])
        let spec = try String(
            contentsOfFile: "\(directory)/\(Base64.encode(Array("plain".utf8))).spec", encoding: .utf8)
        #expect(spec == "copy\n")
        let failed = try #require(try await client.workUnitStatus("fails", keys: ["f"]).first ?? nil)
        #expect(failed.traceback == .text("bad thing\n"))
    }

    @Test("SIGTERM: running commands finish, nothing new starts, workers unregister, exit 0")
    func sigtermDrain() async throws {
        let daemon = try DaemonProcess(arguments: ["--storage", "memory", "-q"])
        defer { daemon.stop() }
        let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
        // 40 three-second commands on 4 slots would take 30 s: a prompt stop leaves most of them untouched, even
        // when a loaded machine delays the test's SIGTERM by several seconds.
        try await client.setWorkSpec(["name": "naps", "command": ["sleep", "3"]])
        try await client.addWorkUnits("naps", (0..<40).map { WorkUnitSubmission(key: .text("n\($0)")) })
        let worker = try WorkerProcess(port: daemon.port, arguments: ["-n", "4", "--worker-id", "drainer"])
        #expect(try await eventually { (try await client.countWorkUnits("naps")[.pending] ?? 0) == 4 })
        worker.signal(SIGTERM)
        #expect(worker.waitForExit() == 0)
        let counts = try await client.countWorkUnits("naps")
        #expect(counts[.pending] == nil)
        #expect((counts[.finished] ?? 0) >= 4 && (counts[.finished] ?? 0) < 40)
        #expect((counts[.finished] ?? 0) + (counts[.available] ?? 0) == 40)
        #expect(try await client.workerModes().isEmpty)
    }

    @Test("a worker killed mid-lease: its unit is granted again once the lease expires")
    func killedMidLease() async throws {
        let daemon = try DaemonProcess(arguments: ["--storage", "memory", "-q"])
        defer { daemon.stop() }
        let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
        try await client.setWorkSpec(["name": "long", "command": ["sleep", "10"]])
        try await client.addWorkUnits("long", [WorkUnitSubmission(key: "only")])
        let worker = try WorkerProcess(
            port: daemon.port, arguments: ["-n", "1", "--lease", "5", "--worker-id", "doomed"])
        #expect(try await eventually { try await client.countWorkUnits("long") == [.pending: 1] })
        worker.signal(SIGKILL)
        _ = worker.waitForExit()
        // Nobody renews any more: once the 5 s lease runs out the unit is available to others.
        #expect(try await client.getWork(workerID: "rescuer", specNames: ["long"]).isEmpty)
        #expect(
            try await eventually(15) {
                try await client.getWork(workerID: "rescuer", specNames: ["long"]).first?.key == "only"
            })
        let status = try await client.workUnitStatus("long", keys: ["only"]).first ?? nil
        #expect(status?.workerID == .text("rescuer"))
    }

    @Test("max_task_seconds from the configuration stops a command (SIGTERM) and fails its unit")
    func commandTimeout() async throws {
        let daemon = try DaemonProcess(arguments: ["--storage", "memory", "-q"])
        defer { daemon.stop() }
        let config = NSTemporaryDirectory() + "coordinate-worker-\(UUID().uuidString).yaml"
        try "coordinate:\n  worker:\n    max_task_seconds: 0.5\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let marker = "coordinate-timeout-\(UUID().uuidString)"
        let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
        // The command records that it was terminated; a command that ran to its end would not.
        let script = "trap 'echo stopped >&2; exit 143' TERM; sleep 30 & wait; echo \(marker)"
        try await client.setWorkSpec(["name": "hang", "command": .text(script)])
        try await client.addWorkUnits("hang", [WorkUnitSubmission(key: "h")])
        let worker = try WorkerProcess(port: daemon.port, arguments: ["-c", config, "-n", "1"])
        #expect(try await eventually(10) { try await client.countWorkUnits("hang") == [.failed: 1] })
        worker.signal(SIGTERM)
        #expect(worker.waitForExit() == 0)
        let status = try await client.workUnitStatus("hang", keys: ["h"]).first ?? nil
        #expect(status?.traceback == .text("task exceeded 0.5 s"))
    }
}
