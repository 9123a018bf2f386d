import CoordinateConfig
import CoordinateRPC
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Why the daemon cannot start. Each case maps to exit status 2 and one line on stderr.
public enum DaemonStartError: Error, CustomStringConvertible {
    case configuration(ConfigurationError)
    case listen(ListenError)
    case other(String)

    public var description: String {
        switch self {
        case .configuration(let error): return "configuration error: \(error)"
        case .listen(let error): return error.description
        case .other(let text): return text
        }
    }
}

/// The running daemon: its event loops, its CBOR-RPC listener and the RPC modules it serves.
public final class Daemon: Sendable {
    public let configuration: CoordinateConfiguration
    public let statistics = ServerStatistics()
    public let cborServer: CBORRPCServer
    public let group: MultiThreadedEventLoopGroup
    private let logger: Logger

    /// Builds the daemon with the given RPC modules (already filtered to the enabled ones).
    /// Fails when two modules define the same method name.
    public init(
        configuration: CoordinateConfiguration, modules: [any RPCModule], logger: Logger,
        eventLoopThreads: Int = System.coreCount
    ) throws(DaemonStartError) {
        self.configuration = configuration
        self.logger = logger
        let table: RPCMethodTable
        do {
            table = try RPCMethodTable(modules: modules)
        } catch {
            throw .configuration(
                ConfigurationError(source: "modules", key: "coordinate.server.modules", reason: error.description))
        }
        let server = configuration.server
        let limits = ConnectionLimits(
            maxMessageBytes: server.maxMessageBytes, maxNestingDepth: server.maxNestingDepth,
            maxPendingResponseBytes: server.maxPendingResponseBytes,
            idleTimeout: server.idleTimeout.map { .nanoseconds(Int64($0.doubleValue * 1e9)) })
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, eventLoopThreads))
        cborServer = CBORRPCServer(
            dispatcher: RPCDispatcher(table: table), limits: limits, maxConnections: server.maxConnections,
            allowedNetworks: server.cborrpcAllow?.compactMap(CIDR.init), statistics: statistics, group: group,
            logger: logger)
    }

    /// Opens the listeners. Returns the CBOR-RPC address actually bound (useful with port 0).
    @discardableResult
    public func start() async throws(DaemonStartError) -> SocketAddress {
        do {
            let address = try await cborServer.start(host: configuration.server.host, port: configuration.server.port)
            logger.info("CBOR-RPC listening on \(address)")
            return address
        } catch {
            throw .listen(error)
        }
    }

    /// Stops accepting, finishes in-flight requests (at most `grace`), and releases the event loops.
    public func shutdown(grace: TimeAmount = .seconds(10)) async {
        logger.info("shutting down")
        await cborServer.shutdown(grace: grace)
        try? await group.shutdownGracefully()
    }
}

/// Runs a started daemon under swift-service-lifecycle until graceful shutdown (SIGTERM/SIGINT).
public struct DaemonService: Service {
    let daemon: Daemon

    public init(daemon: Daemon) { self.daemon = daemon }

    public func run() async throws {
        try? await gracefulShutdown()
        await daemon.shutdown()
    }
}
