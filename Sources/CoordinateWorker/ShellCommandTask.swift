import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation
import Locking
import Synchronization

/// Runs a unit as a child process, for specs with a `command` key (README "Worker runtime and CLI behaviour").
///
/// * `command: ["prog", "arg"]` runs `prog` directly; `command: "prog arg | other"` runs `/bin/sh -c`.
/// * stdin receives one JSON object `{"work_spec": NAME, "key": KEY, "key_base64"?: …, "data": DATA}` in the
///   JSON mapping of rest-api.md §1.2–§1.4 (`key_base64` only when the key is not valid UTF-8).
/// * The environment adds `COORDINATE_WORK_SPEC` (the spec name) and `COORDINATE_UNIT_KEY_BASE64`.
/// * Exit status 0 finishes the unit; anything else fails it with the last 64 KiB of stderr as the traceback.
/// * Cancellation sends SIGTERM, then SIGKILL after 10 s.
/// * stdout is passed through to the worker's stdout.
public struct ShellCommandTask: Sendable {
    /// Largest stderr tail kept as a traceback.
    public static let tracebackLimit = 64 * 1024
    /// Seconds between SIGTERM and SIGKILL when a task is cancelled.
    public static let killGrace: Double = 10

    /// The program and its arguments.
    public let arguments: [String]

    /// Reads a spec's `command` value: a list of strings, or a string for `/bin/sh -c`. Nil for anything else.
    public init?(command: CBORValue) {
        if let text = command.stringValue {
            arguments = ["/bin/sh", "-c", text]
        } else if let items = command.listElements, !items.isEmpty {
            let strings = items.compactMap(\.stringValue)
            guard strings.count == items.count else { return nil }
            arguments = strings
        } else {
            return nil
        }
    }

    /// The failure a non-zero exit reports.
    public struct CommandFailed: Error, CustomStringConvertible {
        public let description: String
    }

    func run(_ context: TaskContext) async throws -> CBORValue? {
        let keyOctets = context.key.stringOctets ?? []
        let specOctets = context.unit.specName.stringOctets ?? []
        var members: [(String, JSONValue)] = [("work_spec", .string(String(decoding: specOctets, as: UTF8.self)))]
        members += CoordinateJSON.nameMembers(keyOctets, field: "key")
        members.append(("data", CoordinateJSON.data(context.data)))
        let input = Data((JSONValue.object(members).serialized() + "\n").utf8)

        var environment = ProcessInfo.processInfo.environment
        environment["COORDINATE_WORK_SPEC"] = String(decoding: specOctets, as: UTF8.self)
        environment["COORDINATE_UNIT_KEY_BASE64"] = Base64.encode(keyOctets)

        let child = ChildProcess(arguments: arguments, environment: environment)
        let status = try await withTaskCancellationHandler {
            try await child.run(input: input)
        } onCancel: {
            child.terminate(grace: Self.killGrace)
        }
        try Task.checkCancellation()
        switch status {
        case .exited(0):
            return nil
        case .exited(let code):
            throw CommandFailed(description: child.stderrTail(orElse: "command exited with status \(code)"))
        case .signalled(let signal):
            throw CommandFailed(description: child.stderrTail(orElse: "command killed by signal \(signal)"))
        }
    }
}

/// One child process, spawned with `posix_spawn` so that it starts clean: an empty signal mask and default
/// signal dispositions (the spawning thread may block signals and the worker may ignore some; a command must
/// still stop on SIGTERM), its own process group (so cancellation reaches a shell's children too), and only
/// its own pipe ends (close-on-exec elsewhere, so another command spawned at the same moment cannot hold this
/// one's stderr open).
private final class ChildProcess: Sendable {
    enum Status {
        case exited(Int32)
        case signalled(Int32)
    }

    private let arguments: [String]
    private let environment: [String: String]
    /// The child's pid once spawned; 0 before, -1 once reaped.
    private let pid = Locked<pid_t>(0)
    private let stderr = Locked<[UInt8]>([])

    init(arguments: [String], environment: [String: String]) {
        self.arguments = arguments
        self.environment = environment
    }

    func run(input: Data) async throws -> Status {
        var stdinPipe: [Int32] = [0, 0]
        var stderrPipe: [Int32] = [0, 0]
        let spawned: pid_t = try Self.spawnLock.withLock { _ in
            // Pipes become close-on-exec before any other command is spawned (spawns take this lock), so no
            // sibling inherits them.
            guard Self.makePipe(&stdinPipe) else { throw failure("cannot create a pipe") }
            guard Self.makePipe(&stderrPipe) else {
                stdinPipe.forEach { close($0) }
                throw failure("cannot create a pipe")
            }
            do {
                return try spawn(stdin: stdinPipe[0], stderr: stderrPipe[1])
            } catch {
                stdinPipe.forEach { close($0) }
                stderrPipe.forEach { close($0) }
                throw error
            }
        }
        close(stdinPipe[0])
        close(stderrPipe[1])
        pid.withLock { $0 = spawned }
        // Cancelled before the child existed: the cancellation handler found nothing to stop.
        if Task.isCancelled { terminate(grace: ShellCommandTask.killGrace) }

        let writeEnd = stdinPipe[1]
        Thread.detachNewThread {
            // A child that never reads its stdin only costs this thread an EPIPE (SIGPIPE is handled).
            input.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = write(writeEnd, buffer.baseAddress! + offset, buffer.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
            close(writeEnd)
        }
        let exited = Locked(false)
        let readEnd = stderrPipe[0]
        let stderrDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            self.collectStderr(from: readEnd, exited: exited)
            close(readEnd)
            stderrDone.signal()
        }
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var raw: Int32 = 0
                while waitpid(spawned, &raw, 0) < 0 && errno == EINTR {}
                self.pid.withLock { $0 = -1 }
                exited.withLock { $0 = true }
                stderrDone.wait()
                let status = raw & 0x7f
                continuation.resume(returning: status == 0 ? .exited((raw >> 8) & 0xff) : .signalled(status))
            }
        }
    }

    private static let spawnLock = Locked(())

    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc module does not
    /// export; looked up at run time.
    private static let closeFrom: CloseFrom? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else {
            return nil
        }
        return unsafeBitCast(symbol, to: CloseFrom.self)
    }()

    /// The process's open descriptors, from /proc/self/fd (the fallback when closefrom is not available).
    private static func openDescriptors() -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int32($0) }
    }

    private static func makePipe(_ ends: inout [Int32]) -> Bool {
        guard pipe(&ends) == 0 else { return false }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return true
    }

    private func spawn(stdin: Int32, stderr: Int32) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        // Nothing else of the worker's leaks into the command: an inherited descriptor would outlive the worker
        // in any process the command leaves behind.
        if let closeFrom = Self.closeFrom {
            _ = closeFrom(&actions, 3)
        } else {
            for descriptor in Self.openDescriptors() where descriptor > 2 {
                posix_spawn_file_actions_addclose(&actions, descriptor)
            }
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in Int32(1)..<32 where signal != SIGKILL && signal != SIGSTOP { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result =
            arguments[0].contains("/")
            ? posix_spawn(&child, arguments[0], &actions, &attributes, argv, envp)
            : posix_spawnp(&child, arguments[0], &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw failure("cannot run \(arguments[0]): \(String(cString: strerror(result)))")
        }
        return child
    }

    /// Reads stderr to end-of-file, or until shortly after the child exited when a process it left behind
    /// still holds the pipe open.
    private func collectStderr(from descriptor: Int32, exited: borrowing Locked<Bool>) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        var quietAfterExit = 0
        while true {
            let ready = poll(&poller, 1, 50)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 {
                if exited.withLock({ $0 }) {
                    quietAfterExit += 1
                    if quietAfterExit >= 2 { return }
                }
                continue
            }
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { return }
            stderr.withLock { buffer in
                buffer += chunk[..<count]
                if buffer.count > 2 * ShellCommandTask.tracebackLimit {
                    buffer.removeFirst(buffer.count - ShellCommandTask.tracebackLimit)
                }
            }
        }
    }

    /// SIGTERM to the child's process group, then SIGKILL after `grace` seconds if it is still there.
    func terminate(grace: Double) {
        let target = pid.withLock { $0 }
        guard target > 0 else { return }
        kill(-target, SIGTERM)
        DispatchQueue.global().asyncAfter(deadline: .now() + grace) { [self] in
            if pid.withLock({ $0 }) == target { kill(-target, SIGKILL) }
        }
    }

    func stderrTail(orElse fallback: String) -> String {
        let tail = stderr.withLock { Array($0.suffix(ShellCommandTask.tracebackLimit)) }
        return tail.isEmpty ? fallback : String(decoding: tail, as: UTF8.self)
    }

    private func failure(_ detail: String) -> ShellCommandTask.CommandFailed {
        ShellCommandTask.CommandFailed(description: detail)
    }
}
