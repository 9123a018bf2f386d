import CBOR
import CoordinateClient
import Foundation
import Synchronization
import TestSupport

/// Several real `coordinated` processes over one PostgreSQL schema (storage.md §7.3): each test gets a fresh
/// schema in the test script's cluster, or a private cluster when it stops and restarts the server.
final class PostgresFleet: Sendable {
    let url: String
    let schema: String
    let configFile: String
    let group: DaemonGroup
    private let started = Mutex<[DaemonProcess]>([])

    init(url: String, schema: String, configFile: String, group: DaemonGroup) {
        self.url = url
        self.schema = schema
        self.configFile = configFile
        self.group = group
    }

    /// The daemons started so far, in order.
    var daemons: [DaemonProcess] { started.withLock { $0 } }

    /// Starts one more daemon on the shared schema; `waitForStorage` waits until it answers from the database.
    @discardableResult
    func start(
        extra: [String] = [], environment: [String: String] = [:], http: Bool = false, waitForStorage: Bool = true
    ) async throws -> DaemonProcess {
        // `storage: nil`: the fleet's own configuration names the database and the shared schema.
        let daemon = try await group.start(
            storage: nil, arguments: ["--storage", "postgres", "--config", configFile, "-q"] + extra,
            environment: environment, http: http, waitForStorage: false)
        started.withLock { $0.append(daemon) }
        if waitForStorage { try await daemon.waitForStorage(available: true) }
        return daemon
    }

    func client(_ index: Int, timeout: Double = 30) -> CoordinateClient {
        CoordinateClient(
            settings: ClientSettings(address: "127.0.0.1:\(daemons[index].port)", retries: 0, timeout: timeout))
    }

    /// Runs SQL against the fleet's database with `psql` (the server's own client), in the fleet's schema.
    func psql(_ sql: String) async throws -> String {
        try await PostgresTools.psql(url: url, sql: "SET search_path TO \(schema); \(sql)")
    }
}

/// Runs `body` with a fleet on a fresh schema of `url` (default: the test cluster); every daemon it started is
/// stopped and awaited when `body` ends.
func withPostgresFleet<R>(
    url: String? = nil, schema: String = TestPostgres.freshSchema(), poolSize: Int = 4,
    _ body: (PostgresFleet) async throws -> R
) async throws -> R {
    let url = try url ?? TestPostgres.url()
    let yaml = """
        coordinate:
          server:
            storage: postgres
            postgres_url: "\(url)"
            postgres_schema: "\(schema)"
            postgres_pool_size: \(poolSize)

        """
    let configFile = try TestBuild.temporaryFile(yaml, prefix: "coordinate-pg")
    defer { try? FileManager.default.removeItem(atPath: configFile) }
    return try await withDaemons { group in
        try await body(PostgresFleet(url: url, schema: schema, configFile: configFile, group: group))
    }
}

/// A private PostgreSQL cluster that a case may stop and restart without disturbing the shared one.
struct PrivateCluster: Sendable {
    let name: String
    let url: String

    func pause(_ mode: String = "fast") async throws { try await PostgresTools.cluster(name, "pause", mode) }
    func resume() async throws { try await PostgresTools.cluster(name, "resume") }
    func restart(_ mode: String = "immediate") async throws { try await PostgresTools.cluster(name, "restart", mode) }
}

/// Runs `body` with a private cluster, destroyed when `body` ends.
func withPrivateCluster<R>(_ body: (PrivateCluster) async throws -> R) async throws -> R {
    let name = "pg-private-" + UUID().uuidString.prefix(8).lowercased()
    let cluster = PrivateCluster(name: name, url: try await PostgresTools.cluster(name, "start"))
    return try await withCleanup {
        try await body(cluster)
    } cleanup: {
        _ = try? await PostgresTools.cluster(name, "destroy")
    }
}

/// The PostgreSQL command-line tools the failure cases use.
enum PostgresTools {
    static var psqlPath: String {
        let candidates =
            ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).sorted().reversed()
            .map { "/usr/lib/postgresql/\($0)/bin/psql" } + ["/usr/bin/psql"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "psql"
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func psql(url: String, sql: String) async throws -> String {
        let result = try await runProgram(
            psqlPath, ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        guard result.status == 0 else { throw Failure(description: "psql failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs `scripts/postgres-cluster COMMAND` on the private cluster `name`; returns its stdout. (The server it
    /// starts lives on with the pipes' other ends redirected, so the result does not wait for them to close.)
    @discardableResult
    static func cluster(_ name: String, _ arguments: String...) async throws -> String {
        let child = try await ChildProcess.spawn(
            TestPaths.repositoryRoot.appendingPathComponent("scripts/postgres-cluster").path, arguments,
            environment: ["COORDINATE_PG_CLUSTER": name])
        let result = await child.result(drain: .milliseconds(200))
        guard result.status == 0 else {
            throw Failure(description: "postgres-cluster \(arguments.joined(separator: " ")): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
