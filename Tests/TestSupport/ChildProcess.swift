import CSpawn
import Foundation
import Locking

#if canImport(Glibc)
import Glibc
#endif

/// A program the tests run: the daemon, the CLI, the worker, `psql`, a shell script.
///
/// Every child is spawned by ``Spawner`` — one thread that lives as long as the test process — with a
/// parent-death signal (SIGKILL), so a test process that crashes or is killed leaves nothing running. Its exit
/// is collected by a thread blocked in `waitpid`, its output by threads blocked in `read`; a test only ever
/// suspends on them (``terminated()``, ``waitForExit(timeout:)``, ``output()``), never blocks a thread of
/// Swift's cooperative pool.
public final class ChildProcess: Sendable {
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        /// The exit status, or 128 + the signal number (as a shell reports it).
        public var status: Int32 {
            switch self {
            case .exited(let code): return code
            case .signalled(let signal): return 128 + signal
            }
        }

        public var description: String {
            switch self {
            case .exited(let code): return "exit status \(code)"
            case .signalled(let signal): return "signal \(signal)"
            }
        }
    }

    public struct SpawnError: Error, CustomStringConvertible {
        public let description: String
    }

    public let pid: pid_t
    public let path: String
    private let exit = OneShot<Termination>()
    private let stdoutDone = OneShot<Void>()
    private let stderrDone = OneShot<Void>()
    private let captured = Locked<(stdout: [UInt8], stderr: [UInt8])>(([], []))

    private init(pid: pid_t, path: String) {
        self.pid = pid
        self.path = path
    }

    /// Starts `path` with `arguments`; the environment is the test process's with `environment` laid over it.
    /// `stdin` is written to the child's standard input, which is then closed (empty when nil).
    public static func spawn(
        _ path: String, _ arguments: [String], environment: [String: String] = [:], stdin: [UInt8]? = nil
    ) async throws -> ChildProcess {
        var merged = ProcessInfo.processInfo.environment
        for (key, value) in environment { merged[key] = value }
        let argv = [path] + arguments
        let envp = merged.map { "\($0.key)=\($0.value)" }
        let launched = await Spawner.shared.perform { () -> Result<(pid_t, [Int32]), SpawnError> in
            Self.launch(path: path, argv: argv, envp: envp)
        }
        let (pid, parentEnds) = try launched.get()
        let child = ChildProcess(pid: pid, path: path)
        let (stdinWrite, stdoutRead, stderrRead) = (parentEnds[0], parentEnds[1], parentEnds[2])
        Self.onThread("stdin") {
            if let stdin { Self.writeAll(stdin, to: stdinWrite) }
            close(stdinWrite)
        }
        Self.onThread("stdout") {
            Self.readAll(stdoutRead) { bytes in child.captured.withLock { $0.stdout += bytes } }
            close(stdoutRead)
            child.stdoutDone.fulfill(())
        }
        Self.onThread("stderr") {
            Self.readAll(stderrRead) { bytes in child.captured.withLock { $0.stderr += bytes } }
            close(stderrRead)
            child.stderrDone.fulfill(())
        }
        Self.onThread("waitpid") {
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            let signal = raw & 0x7f
            child.exit.fulfill(signal == 0 ? .exited((raw >> 8) & 0xff) : .signalled(signal))
        }
        return child
    }

    /// Runs on the spawner thread: makes the three pipes (close-on-exec on the parent's side, so no other child
    /// inherits them) and spawns. Returns the pid and the parent's ends: stdin's write end, stdout's and
    /// stderr's read ends.
    private static func launch(path: String, argv: [String], envp: [String]) -> Result<(pid_t, [Int32]), SpawnError> {
        var pipes: [[Int32]] = []
        defer { for pair in pipes { for end in pair where end >= 0 { close(end) } } }
        for _ in 0..<3 {
            var ends: [Int32] = [-1, -1]
            guard coordinate_cloexec_pipe(&ends) == 0 else {
                return .failure(SpawnError(description: "pipe: \(String(cString: strerror(errno)))"))
            }
            pipes.append(ends)
        }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnvp = envp.map { strdup($0) } + [nil]
        defer {
            cArgv.forEach { free($0) }
            cEnvp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = path.withCString { cPath in
            cArgv.withUnsafeBufferPointer { argvBuffer in
                cEnvp.withUnsafeBufferPointer { envpBuffer in
                    var options = coordinate_spawn_options(
                        path: cPath, argv: argvBuffer.baseAddress, envp: envpBuffer.baseAddress,
                        stdin_fd: pipes[0][0], stdout_fd: pipes[1][1], stderr_fd: pipes[2][1],
                        parent_death_signal: SIGKILL, new_process_group: 0)
                    return coordinate_spawn(&options, &pid)
                }
            }
        }
        guard result == 0 else {
            return .failure(SpawnError(description: "cannot run \(path): \(String(cString: strerror(result)))"))
        }
        let parentEnds = [pipes[0][1], pipes[1][0], pipes[2][0]]
        // The parent's ends stay open (the deferred close skips them); the child's ends close here.
        pipes[0][1] = -1
        pipes[1][0] = -1
        pipes[2][0] = -1
        return .success((pid, parentEnds))
    }

    /// Sends `signal` to the child (nothing once it has been reaped: the pid may belong to another process).
    public func signal(_ signal: Int32) {
        guard exit.value == nil else { return }
        kill(pid, signal)
    }

    /// How the child ended, or nil while it runs.
    public var termination: Termination? { exit.value }

    public var isRunning: Bool { exit.value == nil }

    /// Suspends until the child has exited.
    public func terminated() async -> Termination {
        while true {
            if let termination = await exit.wait() { return termination }
            // Only a cancelled task gets nil: report the exit if there is one, else keep the promise of waiting.
            if let termination = exit.value { return termination }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// How the child ended, or nil if it still runs after `timeout`.
    public func waitForExit(timeout: Duration) async -> Termination? {
        await exit.wait(timeout: timeout)
    }

    /// SIGTERM, then SIGKILL if the child is still running after `grace`; returns how it ended.
    @discardableResult
    public func stop(grace: Duration = .seconds(15)) async -> Termination {
        signal(SIGTERM)
        if let termination = await waitForExit(timeout: grace) { return termination }
        signal(SIGKILL)
        return await terminated()
    }

    /// Everything the child wrote to standard output so far.
    public var stdout: String { captured.withLock { String(decoding: $0.stdout, as: UTF8.self) } }

    /// Everything the child wrote to standard error so far.
    public var stderr: String { captured.withLock { String(decoding: $0.stderr, as: UTF8.self) } }

    /// Waits for the child to exit and for its output to end (a process it left behind may hold the pipes open:
    /// then what arrived within `drain` after the exit), and returns the result.
    public func result(drain: Duration = .seconds(2)) async -> CommandResult {
        let termination = await terminated()
        _ = await stdoutDone.wait(timeout: drain)
        _ = await stderrDone.wait(timeout: drain)
        return CommandResult(status: termination.status, stdout: stdout, stderr: stderr)
    }

    /// Suspends until standard error contains `text` (true), or the child exits or `timeout` passes without it.
    public func waitForStderr(containing text: String, timeout: Duration = .seconds(30)) async -> Bool {
        await eventually(timeout) { self.stderr.contains(text) || !self.isRunning } && stderr.contains(text)
    }

    private static func onThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = "child-\(name)"
        thread.stackSize = 256 << 10
        thread.start()
    }

    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 && errno == EINTR { continue }
                // A child that exits without reading its input costs only an EPIPE here (SIGPIPE is ignored).
                if written <= 0 { return }
                offset += written
            }
        }
    }

    private static func readAll(_ descriptor: Int32, into sink: ([UInt8]) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count > 0 {
                sink(Array(buffer[..<count]))
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }
}

/// The outcome of a program run to completion.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs a program to completion and returns its status and output.
public func runProgram(
    _ path: String, _ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]
) async throws -> CommandResult {
    let child = try await ChildProcess.spawn(
        path, arguments, environment: environment, stdin: stdin.map { Array($0.utf8) })
    return await child.result()
}

/// Runs one of our executables (built next to the tests) to completion.
public func runExecutable(
    _ name: String, _ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]
) async throws -> CommandResult {
    try await runProgram(TestBuild.executable(name), arguments, stdin: stdin, environment: environment)
}

/// Runs `command` with `/bin/sh -c` and returns its exit status.
@discardableResult
public func shell(_ command: String) async throws -> Int32 {
    try await runProgram("/bin/sh", ["-c", command]).status
}

/// The one thread every child is spawned from.
///
/// A parent-death signal fires when the *thread* that spawned the child ends, not the process; threads of the
/// cooperative pool and of Dispatch come and go, so spawning from them would kill children at random. This
/// thread never ends.
final class Spawner: Sendable {
    static let shared = Spawner()

    private let jobs = Locked<[@Sendable () -> Void]>([])
    private let wakeUp = DispatchSemaphore(value: 0)

    private init() {
        let thread = Thread { [self] in
            while true {
                wakeUp.wait()
                let batch = jobs.withLock { pending in
                    defer { pending.removeAll() }
                    return pending
                }
                for job in batch { job() }
            }
        }
        thread.name = "child-spawner"
        thread.start()
    }

    /// Runs `job` on the spawner thread and returns its result.
    func perform<T: Sendable>(_ job: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            jobs.withLock { $0.append { continuation.resume(returning: job()) } }
            wakeUp.signal()
        }
    }
}

/// A value that arrives once, which any number of tasks can await, each with its own timeout or cancellation.
public final class OneShot<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiters: [UInt64: CheckedContinuation<Value?, Never>] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Locked(State())

    public init() {}

    /// The value, once it arrived.
    public var value: Value? { state.withLock { $0.value } }

    /// Delivers the value to every waiter, present and future. Only the first call counts.
    public func fulfill(_ value: Value) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value?, Never>] in
            guard state.value == nil else { return [] }
            state.value = value
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value once it arrives; nil if the waiting task is cancelled first.
    public func wait() async -> Value? {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let immediate: Value?? = state.withLock { state in
                    if let value = state.value { return .some(value) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[id] = continuation
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }

    /// The value, or nil if it has not arrived within `timeout`.
    public func wait(timeout: Duration) async -> Value? {
        if let value { return value }
        let first = await withTaskGroup(of: Value?.self) { group in
            group.addTask { await self.wait() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        return first ?? value
    }
}
