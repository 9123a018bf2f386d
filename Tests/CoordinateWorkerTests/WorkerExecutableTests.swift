import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// Runs `body` with a `coordinate-worker` process working for the daemon on `port` (polling every 50 ms); a worker
/// still running when `body` ends is killed and awaited.
func withWorker(
    port: Int, arguments: [String], environment: [String: String] = [:], _ body: (ChildProcess) async throws -> Void
) async throws {
    let worker = try await ChildProcess.spawn(
        TestBuild.executable("coordinate-worker"),
        ["--address", "127.0.0.1:\(port)", "--poll-interval", "0.05"] + arguments, environment: environment)
    try await withCleanup {
        try await body(worker)
    } cleanup: {
        await worker.stop(grace: .zero)
    }
}

/// The `coordinate-worker` executable running shell-command specs.
@Suite("coordinate-worker executable")
struct WorkerExecutableTests {
    @Test("--version")
    func version() async throws {
        let result = try await runExecutable("coordinate-worker", ["--version"])
        #expect(result.status == 0)
        #expect(result.stdout == "coordinate-worker 0.1.0\n")
    }

    @Test("shell commands: stdin JSON and environment; exit 0 finishes, anything else fails with stderr")
    func shellCommands() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let directory = NSTemporaryDirectory() + "coordinate-worker-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            // List form, no shell: the command copies its stdin and environment into a file per unit.
            let script =
                #"f="$OUT/$COORDINATE_UNIT_KEY_BASE64"; cat > "$f.json"; echo "$COORDINATE_WORK_SPEC" > "$f.spec""#
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

            try await withWorker(port: daemon.port, arguments: ["-n", "2"], environment: ["OUT": directory]) {
                worker async throws in
                #expect(
                    try await eventually {
                        let copied = try await client.countWorkUnits("copy")
                        let failed = try await client.countWorkUnits("fails")
                        return copied == [.finished: 2] && failed == [.failed: 1]
                    })
                worker.signal(SIGTERM)
                #expect(await worker.waitForExit(timeout: .seconds(60)) == .exited(0))
            }

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
    }

    @Test("SIGTERM: running commands finish, nothing new starts, workers unregister, exit 0")
    func sigtermDrain() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            // Each command waits for the gate file, so how many finish depends on the drain, not on timing.
            let gate = TestBuild.temporaryDirectory("coordinate-gate") + "/open"
            try await client.setWorkSpec([
                "name": "naps", "command": ["/bin/sh", "-c", .text("while [ ! -e \(gate) ]; do sleep 0.05; done")],
            ])
            try await client.addWorkUnits("naps", (0..<40).map { WorkUnitSubmission(key: .text("n\($0)")) })
            try await withWorker(port: daemon.port, arguments: ["-n", "4", "--worker-id", "drainer"]) {
                worker async throws in
                #expect(try await eventually { (try await client.countWorkUnits("naps")[.pending] ?? 0) == 4 })
                worker.signal(SIGTERM)
                // The worker says it takes no new work; then the running commands may end.
                #expect(await worker.waitForStderr(containing: "stopping: no new work"))
                #expect(FileManager.default.createFile(atPath: gate, contents: nil))
                #expect(await worker.waitForExit(timeout: .seconds(60)) == .exited(0))
            }
            #expect(try await client.countWorkUnits("naps") == [.finished: 4, .available: 36])
            #expect(try await client.workerModes().isEmpty)
        }
    }

    @Test("a worker killed mid-lease: its unit is granted again once the lease expires")
    func killedMidLease() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            try await client.setWorkSpec(["name": "long", "command": ["sleep", "10"]])
            try await client.addWorkUnits("long", [WorkUnitSubmission(key: "only")])
            try await withWorker(port: daemon.port, arguments: ["-n", "1", "--lease", "5", "--worker-id", "doomed"]) {
                worker async throws in
                #expect(try await eventually { try await client.countWorkUnits("long") == [.pending: 1] })
                worker.signal(SIGKILL)
                _ = await worker.terminated()
            }
            // Nobody renews any more: once the 5 s lease runs out the unit is available to others, not before. (On
            // a loaded machine the lease may have run out by now: then the unit is simply available.)
            let held = try await client.workUnitStatus("long", keys: ["only"]).first ?? nil
            var rescued = try await client.getWork(workerID: "rescuer", specNames: ["long"])
            if let deadline = held?.expiration {
                if Date().timeIntervalSince1970 < deadline {
                    #expect(rescued.isEmpty, "granted again before its lease deadline")
                }
            } else {
                #expect(held?.status == .available, "neither leased nor available: \(String(describing: held))")
            }
            if rescued.isEmpty {
                _ = try await eventually(60) {
                    rescued = try await client.getWork(workerID: "rescuer", specNames: ["long"])
                    return !rescued.isEmpty
                }
            }
            #expect(rescued.first?.key == "only")
            let status = try await client.workUnitStatus("long", keys: ["only"]).first ?? nil
            #expect(status?.workerID == .text("rescuer"))
        }
    }

    @Test("max_task_seconds from the configuration stops a command (SIGTERM) and fails its unit")
    func commandTimeout() async throws {
        try await withDaemon(arguments: ["-q"]) { daemon in
            let config = try TestBuild.temporaryFile(
                "coordinate:\n  worker:\n    max_task_seconds: 0.5\n", prefix: "coordinate-worker")
            defer { try? FileManager.default.removeItem(atPath: config) }
            let marker = "coordinate-timeout-\(UUID().uuidString)"
            let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:\(daemon.port)"))
            // The command records that it was terminated; a command that ran to its end would not.
            let script = "trap 'echo stopped >&2; exit 143' TERM; sleep 30 & wait; echo \(marker)"
            try await client.setWorkSpec(["name": "hang", "command": .text(script)])
            try await client.addWorkUnits("hang", [WorkUnitSubmission(key: "h")])
            try await withWorker(port: daemon.port, arguments: ["-c", config, "-n", "1"]) { worker async throws in
                #expect(try await eventually(60) { try await client.countWorkUnits("hang") == [.failed: 1] })
                worker.signal(SIGTERM)
                #expect(await worker.waitForExit(timeout: .seconds(60)) == .exited(0))
            }
            let status = try await client.workUnitStatus("hang", keys: ["h"]).first ?? nil
            #expect(status?.traceback == .text("task exceeded 0.5 s"))
        }
    }
}
