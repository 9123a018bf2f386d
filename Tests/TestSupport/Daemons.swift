import CBOR
import CoordinateConfig
import CoordinateServer
import Foundation
import Locking

#if canImport(Glibc)
import Glibc
#endif

/// Where the executables built with the tests live.
public enum TestBuild {
    /// The directory holding `coordinated` and the other products (the test bundle's directory, or
    /// `COORDINATE_BUILD_DIR`).
    public static let directory: URL = {
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
    }()

    /// Absolute path of one of our executables (never a same-named program on PATH).
    public static func executable(_ name: String) -> String {
        directory.appendingPathComponent(name).path
    }

    /// A fresh, empty directory under the system's temporary directory.
    public static func temporaryDirectory(_ prefix: String = "coordinate-test") -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A new file under the system's temporary directory holding `text` (usually a daemon's configuration); the
    /// caller removes it.
    public static func temporaryFile(
        _ text: String, prefix: String = "coordinate-test", suffix: String = ".yaml"
    ) throws -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)\(suffix)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

/// A `coordinated` process of a test: started by ``DaemonGroup/start(storage:arguments:environment:http:port:waitForStorage:)``
/// inside ``withDaemons(_:)`` or ``withDaemon(storage:arguments:environment:http:waitForStorage:_:)``, which stop
/// it when their scope ends.
///
/// The daemon binds its own ports (`--port 0`, `--http-port auto`) and reports them in its `--ports-file`, so no
/// port is ever probed by the test and then bound by another process. It dies with the test process (a
/// parent-death signal, see ``ChildProcess``).
public final class DaemonProcess: Sendable {
    public let child: ChildProcess
    /// The CBOR-RPC port.
    public let port: Int
    /// The HTTP port, when the HTTP listener is on.
    public let httpPort: Int?
    /// Every argument the daemon was started with.
    public let arguments: [String]
    /// The storage backend it runs on.
    public let storage: String

    init(child: ChildProcess, port: Int, httpPort: Int?, arguments: [String], storage: String) {
        self.child = child
        self.port = port
        self.httpPort = httpPort
        self.arguments = arguments
        self.storage = storage
    }

    /// A new CBOR-RPC connection to the daemon.
    public func connect(receiveTimeout: Double = 30) async throws -> RawConnection {
        try await RawConnection(port: port, receiveTimeout: receiveTimeout)
    }

    /// An HTTP client for the daemon's HTTP listener (started with `http: true`).
    public var http: HTTPTestClient {
        guard let httpPort else { preconditionFailure("the daemon was started without its HTTP listener") }
        return HTTPTestClient(port: httpPort)
    }

    public var isRunning: Bool { child.isRunning }

    public func signal(_ number: Int32) { child.signal(number) }

    /// SIGKILL, and returns once the process is gone.
    public func kill() async {
        child.signal(SIGKILL)
        _ = await child.terminated()
    }

    /// SIGTERM, SIGKILL after `grace`; returns how the daemon ended.
    @discardableResult
    public func stop(grace: Duration = .seconds(15)) async -> ChildProcess.Termination {
        await child.stop(grace: grace)
    }

    /// How the daemon ended, or nil if it still runs after `timeout`.
    public func waitForExit(timeout: Duration = .seconds(30)) async -> ChildProcess.Termination? {
        await child.waitForExit(timeout: timeout)
    }

    public var stderr: String { child.stderr }
    public var stdout: String { child.stdout }

    /// Polls until a storage-backed request is answered with something other than `storage unavailable:
    /// initialising` (durable storage initialises after the listeners open, storage.md §5.2) — or, with
    /// `available`, until it is answered without an error at all (a database that comes back).
    public func waitForStorage(available: Bool = false, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = "no answer"
        while ContinuousClock.now < deadline {
            guard isRunning else { break }
            if let connection = try? await connect(receiveTimeout: 5) {
                do {
                    let response = try await connection.call("list_work_specs", [.map(CBORMap())])
                    guard let message = response.errorMessage else { return }
                    if !available && !message.hasPrefix("storage unavailable: initialising") { return }
                    last = message
                } catch {
                    last = "\(error)"
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw DaemonFailure(
            description: "storage of the daemon on \(port) not ready within \(timeout) (\(last)); stderr: \(stderr)")
    }
}

public struct DaemonFailure: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// The daemons started within one ``withDaemons(_:)`` scope; each is stopped (and awaited) when it ends.
public final class DaemonGroup: Sendable {
    private let started = Locked<[DaemonProcess]>([])
    private let cleanup = Locked<[String]>([])

    init() {}

    /// Starts a daemon and waits until its listeners are open (and, with `waitForStorage`, its storage answers).
    ///
    /// - Parameters:
    ///   - storage: `memory`, `sqlite` (a fresh data directory unless `arguments` name one) or `postgres` (the
    ///     test cluster, a fresh schema, unless `arguments` give a `--config`); nil leaves the choice to
    ///     `arguments`.
    ///   - port: a CBOR-RPC port to bind (a restart on the port of an earlier daemon); default: any free port.
    ///   - http: whether to open the HTTP listener (on any free port).
    ///   - descriptorLimit: the daemon runs with this `ulimit -n` (soft and hard), as on a host with a low limit.
    public func start(
        storage: String? = "memory", arguments: [String] = [], environment: [String: String] = [:],
        http: Bool = false, port: Int? = nil, waitForStorage: Bool = true, descriptorLimit: Int? = nil
    ) async throws -> DaemonProcess {
        var full = arguments
        if let storage, !arguments.contains("--storage") {
            full += ["--storage", storage]
            if storage == "sqlite" && !arguments.contains("--data-dir") {
                let directory = TestBuild.temporaryDirectory("coordinate-daemon")
                cleanup.withLock { $0.append(directory) }
                full += ["--data-dir", directory]
            }
            if storage == "postgres" {
                // The test cluster and a fresh schema, merged into the test's own configuration file if it has one.
                let given = full.firstIndex { $0 == "--config" || $0 == "-c" }
                let file = try Self.postgresConfiguration(
                    schema: TestPostgres.freshSchema(), mergedInto: given.map { full[$0 + 1] })
                cleanup.withLock { $0.append(file) }
                if let given { full.removeSubrange(given...(given + 1)) }
                full += ["--config", file]
            }
        }
        // Never touch the user's default data directory.
        if !full.contains("--data-dir") {
            let directory = TestBuild.temporaryDirectory("coordinate-daemon")
            cleanup.withLock { $0.append(directory) }
            full += ["--data-dir", directory]
        }
        if !full.contains("--port") && !full.contains("-p") { full += ["--port", String(port ?? 0)] }
        if !full.contains("--http-port") { full += ["--http-port", http ? "auto" : "0"] }
        let portsFile: String
        if let given = full.firstIndex(of: "--ports-file").map({ full[$0 + 1] }) {
            portsFile = given
        } else {
            portsFile = NSTemporaryDirectory() + "coordinate-ports-\(UUID().uuidString).json"
            cleanup.withLock { $0.append(portsFile) }
            full += ["--ports-file", portsFile]
        }

        let child: ChildProcess
        if let descriptorLimit {
            // The shell sets the limit and then becomes the daemon (same pid).
            child = try await ChildProcess.spawn(
                "/bin/sh",
                ["-c", "ulimit -n \(descriptorLimit) && exec \"$0\" \"$@\"", TestBuild.executable("coordinated")]
                    + full,
                environment: environment)
        } else {
            child = try await ChildProcess.spawn(TestBuild.executable("coordinated"), full, environment: environment)
        }
        let ports: (Int, Int?)
        do {
            ports = try await Self.readPorts(portsFile, of: child)
        } catch {
            await child.stop(grace: .seconds(5))
            throw error
        }
        let daemon = DaemonProcess(
            child: child, port: ports.0, httpPort: ports.1, arguments: full,
            storage: full.firstIndex(of: "--storage").map { full[$0 + 1] } ?? "sqlite")
        started.withLock { $0.append(daemon) }
        // The memory backend is ready with the listeners (and a TLS-only daemon would not answer the plain probe).
        if waitForStorage && daemon.storage != "memory" { try await daemon.waitForStorage() }
        return daemon
    }

    /// Kills `daemon` (SIGKILL, or SIGTERM when `gracefully`) and starts it again with the same arguments
    /// (plus `extra`) on the same CBOR-RPC port when that can still be bound, else on a new one.
    public func restart(
        _ daemon: DaemonProcess, gracefully: Bool = false, extra: [String] = [], environment: [String: String] = [:],
        waitForStorage: Bool = true
    ) async throws -> DaemonProcess {
        if gracefully { await daemon.stop() } else { await daemon.kill() }
        var arguments: [String] = []
        var index = 0
        while index < daemon.arguments.count {
            let argument = daemon.arguments[index]
            // The group adds a fresh ports file and the port; everything else is kept.
            if argument == "--ports-file" || argument == "--port" || argument == "-p" {
                index += 2
                continue
            }
            arguments.append(argument)
            index += 1
        }
        arguments += extra
        do {
            return try await start(
                storage: nil, arguments: arguments, environment: environment, port: daemon.port,
                waitForStorage: waitForStorage)
        } catch {
            // Another socket took the port in the moment it was free.
            return try await start(
                storage: nil, arguments: arguments, environment: environment, waitForStorage: waitForStorage)
        }
    }

    /// A configuration file naming the test cluster and `schema` (the daemon has no command-line option for
    /// them), with every other setting of the file `mergedInto` when given.
    public static func postgresConfiguration(
        schema: String, poolSize: Int = 4, mergedInto original: String? = nil
    ) throws -> String {
        var configuration = CoordinateConfiguration()
        if let original {
            var warnings: [String] = []
            configuration = try CoordinateConfiguration.load(path: original, warnings: &warnings)
        }
        configuration.server.postgresURL = try TestPostgres.url()
        configuration.server.postgresSchema = schema
        configuration.server.postgresPoolSize = poolSize
        return try TestBuild.temporaryFile(configuration.effectiveTree(redacted: false).yaml(), prefix: "coordinate-pg")
    }

    /// Waits for the daemon's ports file; throws with its stderr if it exits first or takes over a minute.
    private static func readPorts(_ path: String, of child: ChildProcess) async throws -> (Int, Int?) {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let data = FileManager.default.contents(atPath: path),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let port = object["cborrpc"] as? Int
            {
                return (port, object["http"] as? Int)
            }
            if let termination = child.termination {
                let result = await child.result(drain: .milliseconds(500))
                throw DaemonFailure(
                    description: "coordinated ended (\(termination)) before listening: \(result.stderr)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw DaemonFailure(description: "coordinated did not report its ports within 60 s: \(child.stderr)")
    }

    /// Stops every daemon still running (concurrently) and removes the files made for them.
    func stopAll() async {
        let daemons = started.withLock { $0 }
        await withTaskGroup(of: Void.self) { group in
            for daemon in daemons where daemon.isRunning {
                group.addTask { await daemon.stop() }
            }
        }
        for path in cleanup.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// Runs `body` with a ``DaemonGroup``; every daemon started in it is stopped, and its exit awaited, before this
/// returns or rethrows.
public func withDaemons<R>(_ body: (DaemonGroup) async throws -> R) async throws -> R {
    let group = DaemonGroup()
    do {
        let result = try await body(group)
        await group.stopAll()
        return result
    } catch {
        await group.stopAll()
        throw error
    }
}

/// Runs `body` with one daemon (see ``DaemonGroup/start(storage:arguments:environment:http:port:waitForStorage:)``),
/// stopped and awaited when `body` ends.
public func withDaemon<R>(
    storage: String? = "memory", arguments: [String] = [], environment: [String: String] = [:], http: Bool = false,
    waitForStorage: Bool = true, _ body: (DaemonProcess) async throws -> R
) async throws -> R {
    try await withDaemons { group in
        let daemon = try await group.start(
            storage: storage, arguments: arguments, environment: environment, http: http,
            waitForStorage: waitForStorage)
        return try await body(daemon)
    }
}

/// Runs `body` with a daemon in the test process — for tests that inject RPC modules or drive the engine's
/// clock — listening on a loopback port it chose itself, its storage initialised; shut down and awaited when
/// `body` ends.
public func withInProcessDaemon<R>(
    _ make: () throws -> Daemon, initializeStorage: Bool = true, _ body: (Daemon, Int) async throws -> R
) async throws -> R {
    let daemon = try make()
    do {
        let port = try await daemon.start().cborRPC.port!
        if initializeStorage { try await daemon.initializeStorage() }
        let result = try await body(daemon, port)
        await daemon.shutdown(grace: .seconds(1))
        return result
    } catch {
        await daemon.shutdown(grace: .seconds(1))
        throw error
    }
}

/// Runs `body` with a loopback port that is bound but not listening: nothing else can take it while `body` runs,
/// and connections to it are refused.
public func withUnusedPort<R>(_ body: (Int) async throws -> R) async throws -> R {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw DaemonFailure(description: "socket: \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0
        }
    }
    guard bound else { throw DaemonFailure(description: "bind: \(String(cString: strerror(errno)))") }
    return try await body(Int(UInt16(bigEndian: address.sin_port)))
}
