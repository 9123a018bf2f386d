import CBOR
import CoordinateConfig
import CoordinateEngine
import CoordinateServer
import Foundation
import Logging
import TestSupport

/// A daemon with the built-in JobQueue and LockService modules on a loopback ephemeral port.
struct TestDaemon {
    let daemon: Daemon
    let port: Int

    /// The storage backends every protocol test runs against.
    static let backends: [StorageKind] = [.memory, .sqlite, .postgres].filter { TestBackends.enabled($0.rawValue) }

    static func start(
        storage: StorageKind = .memory, clock: any EngineClock = SystemClock(),
        configure: (inout CoordinateConfiguration) -> Void = { _ in }
    ) async throws -> TestDaemon {
        var configuration = CoordinateConfiguration()
        configuration.server.port = 0
        configuration.server.httpPort = 0
        configuration.server.storage = storage
        configuration.server.dataDir = NSTemporaryDirectory() + "coordinate-test-\(UUID().uuidString)"
        if storage == .postgres {
            configuration.server.postgresURL = try TestPostgres.url()
            configuration.server.postgresSchema = TestPostgres.freshSchema()
            configuration.server.postgresPoolSize = 4
        }
        configure(&configuration)
        var logger = Logger(label: "test-daemon")
        logger.logLevel = .critical
        // Tests that pass a clock drive time by hand, on PostgreSQL too.
        let daemon = try Daemon(
            configuration: configuration, logger: logger, clock: clock, clockOverridesDatabase: !(clock is SystemClock),
            eventLoopThreads: 2)
        let address = try await daemon.start()
        try await daemon.initializeStorage()
        return TestDaemon(daemon: daemon, port: address.port!)
    }

    func connect() throws -> RawConnection { try RawConnection(port: port) }

    func stop() async { await daemon.shutdown(grace: .seconds(1)) }
}
