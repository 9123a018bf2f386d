import CBOR
import CoordinateClient
import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Several real `coordinated` processes over one PostgreSQL schema (storage.md §7.3): each test gets a fresh
/// schema in the test script's cluster, or a private cluster when it stops and restarts the server.
struct PostgresFleet {
    let url: String
    let schema: String
    let configFile: String
    private(set) var daemons: [DaemonProcess] = []

    init(url: String? = nil, schema: String = TestPostgres.freshSchema(), poolSize: Int = 4) throws {
        self.url = try url ?? TestPostgres.url()
        self.schema = schema
        configFile = NSTemporaryDirectory() + "coordinate-pg-\(UUID().uuidString).yaml"
        let yaml = """
            coordinate:
              server:
                storage: postgres
                postgres_url: "\(self.url)"
                postgres_schema: "\(schema)"
                postgres_pool_size: \(poolSize)

            """
        try yaml.write(toFile: configFile, atomically: true, encoding: .utf8)
    }

    /// Starts one more daemon on the shared schema; `waitForStorage` waits until it answers from the database.
    @discardableResult
    mutating func start(
        extra: [String] = [], environment: [String: String] = [:], waitForStorage: Bool = true
    ) throws -> DaemonProcess {
        let daemon = try DaemonProcess(
            arguments: ["--storage", "postgres", "--config", configFile, "-q"] + extra, environment: environment)
        daemons.append(daemon)
        if waitForStorage { try Self.waitForStorage(port: daemon.port) }
        return daemon
    }

    /// Polls until a storage-backed method succeeds (initialisation and migrations run in the background).
    static func waitForStorage(port: Int, timeout: Double = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            if let connection = try? RawConnection(port: port, receiveTimeout: 5),
                let response = try? connection.call("list_work_specs", [.map(CBORMap())])
            {
                if response["error"] == nil || response["error"] == .null { return }
                last = response.errorMessage ?? last
            }
            usleep(50_000)
        }
        throw PostgresTools.Failure(description: "storage did not become available on \(port): \(last)")
    }

    func client(_ index: Int, timeout: Double = 30) -> CoordinateClient {
        CoordinateClient(
            settings: ClientSettings(address: "127.0.0.1:\(daemons[index].port)", retries: 0, timeout: timeout))
    }

    func stopAll() {
        for daemon in daemons { daemon.stop() }
        try? FileManager.default.removeItem(atPath: configFile)
    }

    /// Runs SQL against the fleet's database with `psql` (the server's own client), in the fleet's schema.
    func psql(_ sql: String) throws -> String {
        try PostgresTools.psql(url: url, sql: "SET search_path TO \(schema); \(sql)")
    }
}

/// The PostgreSQL command-line tools the failure cases use.
enum PostgresTools {
    static var repositoryRoot: URL {
        var directory = DaemonProcess.buildDirectory
        while directory.path != "/"
            && !FileManager.default.fileExists(
                atPath: directory.appendingPathComponent("scripts/postgres-cluster").path)
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory
    }

    static var psqlPath: String {
        let candidates =
            ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).sorted().reversed()
            .map { "/usr/lib/postgresql/\($0)/bin/psql" } + ["/usr/bin/psql"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "psql"
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func psql(url: String, sql: String) throws -> String {
        let result = try run(psqlPath, ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        guard result.status == 0 else { throw Failure(description: "psql failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs `scripts/postgres-cluster COMMAND` on the private cluster `name`; returns its stdout.
    @discardableResult
    static func cluster(_ name: String, _ arguments: String...) throws -> String {
        let result = try run(
            repositoryRoot.appendingPathComponent("scripts/postgres-cluster").path, arguments,
            environment: ["COORDINATE_PG_CLUSTER": name])
        guard result.status == 0 else {
            throw Failure(description: "postgres-cluster \(arguments.joined(separator: " ")): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs a program to completion with posix_spawn and waitpid. (Foundation's `Process` did not notice the
    /// exit of a script whose grandchild, the PostgreSQL server, lives on; waiting on the pid directly does.)
    static func run(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> CommandResult
    {
        let output = NSTemporaryDirectory() + "coordinate-cmd-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: output + ".out")
            try? FileManager.default.removeItem(atPath: output + ".err")
        }
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, output + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard spawned == 0 else {
            throw Failure(description: "cannot run \(path): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        return CommandResult(
            status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f),
            stdout: (try? String(contentsOfFile: output + ".out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? "")
    }
}
