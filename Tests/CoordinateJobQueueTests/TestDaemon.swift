import CBOR
import CoordinateConfig
import CoordinateEngine
import CoordinateServer
import Foundation
import Logging
import TestSupport

/// A daemon in the test process with the built-in JobQueue and LockService modules, on a loopback port it chose
/// itself.
struct TestDaemon: Sendable {
    let daemon: Daemon
    let port: Int

    /// The storage backends every protocol test runs against.
    static let backends: [StorageKind] = [.memory, .sqlite, .postgres].filter { TestBackends.enabled($0.rawValue) }

    /// Runs `body` with a daemon on `storage` (a fresh data directory or PostgreSQL schema), shut down when it
    /// ends. A `clock` other than the system's drives time by hand, on PostgreSQL too.
    static func with<R>(
        storage: StorageKind = .memory, clock: any EngineClock = SystemClock(),
        configure: (inout CoordinateConfiguration) -> Void = { _ in }, _ body: (TestDaemon) async throws -> R
    ) async throws -> R {
        var configuration = CoordinateConfiguration()
        configuration.server.port = 0
        configuration.server.httpPort = 0
        configuration.server.storage = storage
        let dataDirectory = TestBuild.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDirectory) }
        configuration.server.dataDir = dataDirectory
        if storage == .postgres {
            configuration.server.postgresURL = try TestPostgres.url()
            configuration.server.postgresSchema = TestPostgres.freshSchema()
            configuration.server.postgresPoolSize = 4
        }
        configure(&configuration)
        var logger = Logger(label: "test-daemon")
        logger.logLevel = .critical
        return try await withInProcessDaemon({
            try Daemon(
                configuration: configuration, logger: logger, clock: clock,
                clockOverridesDatabase: !(clock is SystemClock), eventLoopThreads: 2)
        }) { daemon, port in
            try await body(TestDaemon(daemon: daemon, port: port))
        }
    }

    func connect() async throws -> RawConnection { try await RawConnection(port: port) }
}
