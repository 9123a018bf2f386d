import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A `coordinated` process started from the binary built next to the test bundle, on a loopback port.
public final class DaemonProcess: @unchecked Sendable {
    // @unchecked Sendable: the Process and pipes are only driven by the test that owns this object.
    public let process: Process
    public let port: Int
    public let arguments: [String]
    private let stderrPipe = Pipe()
    private let stdoutPipe = Pipe()
    private let captured = CapturedOutput()

    /// Collects a pipe's output as it arrives, so a chatty daemon never blocks on a full pipe.
    final class CapturedOutput: @unchecked Sendable {
        // @unchecked Sendable: every access goes through `lock`.
        private let lock = NSLock()
        private var stderr = Data()
        private var stdout = Data()
        func append(stderr data: Data) { lock.lock(); stderr.append(data); lock.unlock() }
        func append(stdout data: Data) { lock.lock(); stdout.append(data); lock.unlock() }
        var stderrText: String { lock.lock(); defer { lock.unlock() }; return String(decoding: stderr, as: UTF8.self) }
        var stdoutText: String { lock.lock(); defer { lock.unlock() }; return String(decoding: stdout, as: UTF8.self) }
    }

    /// Directory holding the executables built with the tests (the test bundle's directory).
    public static var buildDirectory: URL {
        if let override = ProcessInfo.processInfo.environment["COORDINATE_BUILD_DIR"] {
            return URL(fileURLWithPath: override)
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // swift-testing may run from inside the .xctest bundle directory on some layouts.
        while directory.path != "/"
            && !FileManager.default.fileExists(atPath: directory.appendingPathComponent("coordinated").path)
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory
    }

    /// Absolute path of one of our executables (never a same-named program on PATH).
    public static func executable(_ name: String) -> String {
        buildDirectory.appendingPathComponent(name).path
    }

    /// A TCP port that was free a moment ago, below the kernel's ephemeral range, and never handed out before in
    /// this test process. A port the kernel hands out for port 0 may be taken again at once as the local end of
    /// an outgoing connection (the daemons' many PostgreSQL connections did so) before the daemon binds it; and
    /// two concurrent tests must never get the same port, or the second test's daemon fails to bind while the
    /// test connects to the first one's.
    public static func freePort() -> Int {
        let (low, _) = ephemeralRange
        let ceiling = max(low, 1_025)
        while true {
            let candidate = Int.random(in: 1_024..<ceiling)
            guard handedOut.withLock({ $0.insert(candidate).inserted }) else { continue }
            if canBind(candidate) { return candidate }
        }
    }

    private static let handedOut = Mutex<Set<Int>>([])

    /// The kernel's ephemeral port range (Linux's default when it cannot be read).
    private static let ephemeralRange: (Int, Int) = {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let bounds = text.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        return bounds.count == 2 ? (bounds[0], bounds[1]) : (32_768, 60_999)
    }()

    private static func canBind(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Reads `pipe` to its end on a thread of its own, handing each chunk to `sink`.
    ///
    /// A blocking read loop rather than `FileHandle.readabilityHandler`: tearing that handler's dispatch source
    /// down races the descriptor's close inside libdispatch on Linux and crashed the test process in
    /// `_dispatch_event_loop_drain` (swift-corelibs-libdispatch#949). The thread reads its own duplicate of the
    /// descriptor, so closing the pipe can never hand it another file; it ends when the process has exited and
    /// the pipe is drained.
    static func drain(_ pipe: Pipe, into sink: @escaping @Sendable (Data) -> Void) {
        let descriptor = dup(pipe.fileHandleForReading.fileDescriptor)
        guard descriptor >= 0 else { return }
        Thread.detachNewThread {
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count > 0 {
                    sink(Data(buffer[..<count]))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }

    /// Launches `coordinated` with `arguments` plus `--port`/`--http-port` (unless given) and waits until the
    /// CBOR-RPC port accepts connections.
    public init(
        arguments: [String], port: Int? = nil, environment: [String: String] = [:], waitForListener: Bool = true
    ) throws {
        self.port = port ?? Self.freePort()
        var full = arguments
        if !arguments.contains("--port") && !arguments.contains("-p") { full += ["--port", String(self.port)] }
        if !arguments.contains("--http-port") { full += ["--http-port", "0"] }
        // Never touch the user's default data directory: each daemon gets its own unless told otherwise.
        if !arguments.contains("--data-dir") && !arguments.contains("--storage") {
            full += ["--data-dir", NSTemporaryDirectory() + "coordinate-daemon-\(UUID().uuidString)"]
        }
        self.arguments = full
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executable("coordinated"))
        process.arguments = full
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        process.standardError = stderrPipe
        process.standardOutput = stdoutPipe
        let captured = self.captured
        try process.run()
        Self.drain(stderrPipe) { captured.append(stderr: $0) }
        Self.drain(stdoutPipe) { captured.append(stdout: $0) }
        if waitForListener { try waitUntilListening() }
    }

    /// The HTTP port given with `--http-port`, unless it is 0 (disabled).
    public var httpPort: Int? {
        guard let index = arguments.firstIndex(of: "--http-port"), index + 1 < arguments.count,
            let port = Int(arguments[index + 1]), port != 0
        else { return nil }
        return port
    }

    /// Polls until TCP connections to the CBOR-RPC port (and the HTTP port, if any) succeed, or the process
    /// exits.
    public func waitUntilListening(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !process.isRunning {
                throw RawConnection.ConnectionError(
                    description: "coordinated exited with \(process.terminationStatus): \(stderrText())")
            }
            if (try? RawConnection(port: port, receiveTimeout: 1)) != nil {
                // The HTTP listener opens just after the CBOR-RPC one: wait for it too when there is one.
                guard let httpPort else { return }
                if (try? RawConnection(port: httpPort, receiveTimeout: 1)) != nil { return }
            }
            usleep(20_000)
        }
        throw RawConnection.ConnectionError(description: "coordinated did not listen on \(port) within \(timeout) s")
    }

    public func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for the process to exit and returns its status, or nil on timeout.
    @discardableResult
    public func waitForExit(timeout: Double = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Everything written to stderr so far.
    public func stderrText() -> String {
        if !process.isRunning { usleep(50_000) }
        return captured.stderrText
    }

    /// Everything written to stdout so far.
    public func stdoutText() -> String {
        if !process.isRunning { usleep(50_000) }
        return captured.stdoutText
    }

    /// Stops the daemon: SIGTERM, then SIGKILL if it lingers.
    public func stop() {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if waitForExit(timeout: 15) == nil {
            signal(SIGKILL)
            waitForExit(timeout: 5)
        }
    }

    deinit { stop() }
}

/// Runs one of our executables to completion and captures its output.
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

public func runExecutable(
    _ name: String, _ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]
) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: DaemonProcess.executable(name))
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (key, value) in environment { env[key] = value }
    process.environment = env
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    // Read both pipes to the end before waiting, so a chatty child cannot block on a full pipe.
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data()
    nonisolated(unsafe) var errData = Data()
    // nonisolated(unsafe): each buffer is written by exactly one reader block and read after group.wait().
    group.enter()
    DispatchQueue.global().async {
        outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave()
    }
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave()
    }
    group.wait()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}
