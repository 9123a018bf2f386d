import CBOR
import CoordinateConfig
import CoordinateEngine
import CoordinateHTTP
import CoordinateMetrics
import CoordinateRPC
import Foundation
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

/// Where a started daemon listens.
public struct ListeningAddresses: Sendable {
    /// The CBOR-RPC listener.
    public let cborRPC: SocketAddress
    /// The HTTP listener; nil when it is disabled.
    public let http: SocketAddress?
}

/// The running daemon: its event loops, its CBOR-RPC listener, the engine and the RPC modules it serves.
public final class Daemon: Sendable {
    public let configuration: CoordinateConfiguration
    public let statistics = ServerStatistics()
    public let cborServer: CBORRPCServer
    public let group: MultiThreadedEventLoopGroup
    /// The engine behind the built-in modules (nil when the daemon serves only injected modules).
    public let engine: Engine?
    /// Metrics of this daemon (nil when built without the built-in engine).
    public let metrics: CoordinateMetrics?
    /// The HTTP listener (REST, metrics, health, dashboard); nil when `http_port` is 0 or there is no engine.
    public let http: HTTPListener?
    let logger: Logger
    /// The descriptor limit and the CBOR-RPC connection limit it allows (``DescriptorBudget``).
    public let descriptorBudget: DescriptorBudget

    /// Builds the daemon from its configuration: storage backend, engine and the enabled built-in modules.
    ///
    /// On PostgreSQL the database clock decides leases and expiry (storage.md §4), so `clock` is ignored there
    /// unless `clockOverridesDatabase` is set — which only tests driving time by hand do.
    ///
    /// `configurationSource` names the file the configuration came from in configuration errors found here (an
    /// unloadable TLS certificate or key, a malformed `postgres_url`).
    public convenience init(
        configuration: CoordinateConfiguration, configurationSource: String = "configuration", logger: Logger,
        catalog: ModuleCatalog = .builtIn, clock: any EngineClock = SystemClock(),
        clockOverridesDatabase: Bool = false, eventLoopThreads: Int = System.coreCount
    ) throws(DaemonStartError) {
        var tls: ServerTLS?
        if let certificate = configuration.server.tlsCertFile, let key = configuration.server.tlsKeyFile {
            do {
                tls = try ServerTLS(certificateFile: certificate, keyFile: key, source: configurationSource)
            } catch {
                throw .configuration(error)
            }
        }
        let metrics = CoordinateMetrics(
            storageBackend: configuration.server.storage.rawValue, version: CoordinateVersion.current)
        let backend = try StorageRegistry.builtIn.makeBackend(
            StorageRegistry.Context(
                configuration: configuration, configurationSource: configurationSource, logger: logger,
                metrics: metrics, clockOverridesDatabase: clockOverridesDatabase))
        let jobQueue = configuration.jobQueue
        let engine = Engine(
            backend: backend, clock: clock,
            configuration: EngineConfiguration(
                maxUnitsPerCall: configuration.server.maxUnitsPerCall,
                maxUnitDataBytes: configuration.server.maxUnitDataBytes,
                limitCompletedCount: jobQueue.limitCompletedCount,
                limitCompletedAge: jobQueue.limitCompletedAge?.doubleValue,
                workerRetention: jobQueue.workerRetention.doubleValue),
            logger: logger, observer: metrics)
        let context = ModuleContext(
            engine: engine, namespace: Identifier(text: configuration.namespace),
            configuration: configuration.effectiveTree().cborValue,
            logger: logger)
        let modules = try catalog.modules(for: configuration, context: context)
        try self.init(
            configuration: configuration, modules: modules, engine: engine,
            tls: tls, logger: logger, eventLoopThreads: eventLoopThreads,
            metrics: metrics)
    }

    /// Builds the daemon with the given RPC modules (already filtered to the enabled ones).
    /// Fails when two modules define the same method name. With `tls`, both listeners accept only TLS.
    public init(
        configuration: CoordinateConfiguration, modules: [any RPCModule], engine: Engine? = nil,
        tls: ServerTLS? = nil, logger: Logger,
        eventLoopThreads: Int = System.coreCount, metrics: CoordinateMetrics? = nil
    ) throws(DaemonStartError) {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.engine = engine
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
        let budget = DescriptorBudget(
            limit: DescriptorBudget.raiseLimit(), maxConnections: server.maxConnections,
            httpConnections: server.httpPort != 0 && engine != nil ? server.httpMaxConnections : 0,
            storageDescriptors: engine?.backend.descriptorDemand ?? 0,
            eventLoops: max(1, eventLoopThreads))
        if let warning = budget.warning { logger.warning("\(warning)") }
        self.descriptorBudget = budget
        cborServer = CBORRPCServer(
            dispatcher: RPCDispatcher(table: table, observer: metrics.map { RPCMetrics(metrics: $0, table: table) }),
            limits: limits, maxConnections: budget.maxConnections,
            allowedNetworks: server.cborrpcAllow?.compactMap(CIDR.init), tls: tls?.context, statistics: statistics,
            group: group, logger: logger)
        if let engine, server.httpPort != 0 {
            let settings = HTTPSettings(
                bindHost: server.httpHost ?? server.host, allowedHosts: server.httpAllowedHosts,
                token: server.httpToken, secureTransport: tls != nil, maxBodyBytes: server.httpMaxBodyBytes,
                maxImportBytes: server.httpMaxImportBytes,
                cborNamespace: Identifier(text: configuration.namespace), storageName: server.storage.rawValue,
                version: CoordinateVersion.current)
            let statistics = self.statistics
            var render: (@Sendable () async -> String)?
            if let metrics {
                render = {
                    let counts = CoordinateMetrics.ListenerCounts(
                        open: statistics.openConnections.value, accepted: statistics.acceptedConnections.value,
                        rejectedForLimit: statistics.rejectedForLimit.value,
                        rejectedNotAllowed: statistics.rejectedNotAllowed.value,
                        malformed: statistics.malformedMessages.value)
                    return await metrics.render(engine: engine, listener: counts)
                }
            }
            let observer: HTTPRequestObserver = { route, method, code, seconds in
                metrics?.httpRequest(route: route, method: method, code: code, seconds: seconds)
            }
            let api = HTTPAPI(engine: engine, settings: settings, logger: logger, observer: observer, metrics: render)
            http = HTTPListener(
                api: api, host: server.httpHost ?? server.host, port: max(0, server.httpPort), tls: tls?.configuration,
                limits: HTTPConnectionLimits(
                    maxConnections: server.httpMaxConnections,
                    headerTimeout: .nanoseconds(Int64(server.httpHeaderTimeout.doubleValue * 1e9)),
                    idleTimeout: .nanoseconds(Int64(server.httpIdleTimeout.doubleValue * 1e9))),
                logger: logger, eventLoopGroup: group)
        } else {
            http = nil
        }
    }

    /// Opens the listeners and returns the addresses actually bound (with port 0, or `http_port: auto`, the
    /// kernel chooses). Storage that needs initialising is initialised afterwards by ``initializeStorage()``
    /// (storage.md §5.2).
    @discardableResult
    public func start() async throws(DaemonStartError) -> ListeningAddresses {
        do throws(ListenError) {
            let address = try await cborServer.start(host: configuration.server.host, port: configuration.server.port)
            logger.info("CBOR-RPC listening on \(address)")
            var httpAddress: SocketAddress?
            if let http {
                let host = configuration.server.httpHost ?? configuration.server.host
                do {
                    let bound = try await http.start()
                    httpAddress = bound
                    logger.info("HTTP listening on \(bound)")
                } catch {
                    await cborServer.shutdown(grace: .seconds(1))
                    throw ListenError(
                        host: host, port: max(0, configuration.server.httpPort), listener: "HTTP",
                        reason: ListenError.reason(for: error))
                }
            }
            // Storage that serves from the start (memory) gets the namespace now; the rest once initialised.
            if engine?.backend.health().isAvailable == true { await createRPCNamespace() }
            return ListeningAddresses(cborRPC: address, http: httpAddress)
        } catch {
            throw .listen(error)
        }
    }

    /// Connects and migrates durable storage; until it finishes, storage-backed requests are answered
    /// `storage unavailable: initialising`. Throws only for the conditions that end the process (a schema newer
    /// than supported); other problems leave the daemon up with storage unavailable.
    public func initializeStorage() async throws(DaemonStartError) {
        guard let engine else { return }
        do throws(StorageStartError) {
            try await engine.backend.start(clock: engine.clock)
        } catch {
            throw .other(error.description)
        }
        await createRPCNamespace()
    }

    /// The CBOR-RPC namespace always exists.
    private func createRPCNamespace() async {
        guard let engine else { return }
        let namespace = Identifier(text: configuration.namespace)
        _ = try? await engine.perform(.write) { tx in _ = try tx.namespace(namespace, create: true) }
    }

    /// Periodic engine work until cancelled: the expiry sweep (every second), automatic archive passes (every
    /// `archive_interval` when a limit is configured) and the purge of inactive workers (every 60 s).
    public func runMaintenance() async {
        guard let engine else { return }
        let archiveEvery = configuration.jobQueue.archiveInterval.doubleValue
        let archiving =
            configuration.jobQueue.limitCompletedCount != nil || configuration.jobQueue.limitCompletedAge != nil
        var sinceArchive = 0.0
        var sincePurge = 0.0
        var second = 0
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .seconds(1))
            } catch {
                return
            }
            sinceArchive += 1
            sincePurge += 1
            second += 1
            guard await engine.backend.maintain(second: second) else { continue }
            do {
                // An empty operation: every operation first materializes expired leases, delays and locks.
                try await engine.perform(.write) { _ in }
                if archiving, sinceArchive >= archiveEvery {
                    sinceArchive = 0
                    let archived = try await engine.perform(.write) { tx in try tx.archiveAll() }
                    if archived > 0 { logger.debug("archived \(archived) units") }
                }
                if sincePurge >= 60 {
                    sincePurge = 0
                    let purged = try await engine.perform(.write) { tx in try tx.purgeInactiveWorkers() }
                    if purged > 0 { logger.debug("purged \(purged) inactive workers") }
                }
            } catch {
                logger.warning("maintenance failed: \(error)")
            }
        }
    }

    /// Stops accepting, finishes in-flight requests (at most `grace`), and releases the event loops.
    public func shutdown(grace: TimeAmount = .seconds(10)) async {
        logger.info("shutting down")
        await http?.shutdown()
        await cborServer.shutdown(grace: grace)
        await engine?.backend.close()
        try? await group.shutdownGracefully()
    }
}

/// Starts the daemon's listeners and runs it under swift-service-lifecycle until graceful shutdown
/// (SIGTERM/SIGINT).
///
/// The listeners open inside the service, after the service group traps the shutdown signals: a client that
/// has seen the daemon answer can rely on a SIGTERM being a graceful stop, never the default kill.
public struct DaemonService: Service {
    let daemon: Daemon
    let pidFile: String?
    let portsFile: String?

    /// - Parameters:
    ///   - pidFile: Written once the listeners are open, so a supervisor that signals the pid as soon as it
    ///     appears gets a graceful stop.
    ///   - portsFile: Written (atomically) once the listeners are open with the ports they bound, as JSON:
    ///     `{"cborrpc": 5932, "http": 5980}`, `"http": null` when HTTP is disabled. It is how a supervisor or a
    ///     test learns the ports the kernel chose for `--port 0` and `--http-port auto`.
    public init(daemon: Daemon, pidFile: String? = nil, portsFile: String? = nil) {
        self.daemon = daemon
        self.pidFile = pidFile
        self.portsFile = portsFile
    }

    /// Throws ``DaemonStartError`` when a listener cannot open.
    public func run() async throws {
        let addresses = try await daemon.start()
        if let pidFile {
            do {
                try "\(getpid())\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            } catch {
                daemon.logger.error("cannot write pid file \(pidFile): \(error)")
            }
        }
        if let portsFile {
            let http = addresses.http?.port.map(String.init) ?? "null"
            let json = #"{"cborrpc": \#(addresses.cborRPC.port ?? 0), "http": \#(http)}"# + "\n"
            do {
                try json.write(toFile: portsFile, atomically: true, encoding: .utf8)
            } catch {
                daemon.logger.error("cannot write ports file \(portsFile): \(error)")
            }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await daemon.runMaintenance() }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        await daemon.shutdown()
    }
}

/// Feeds CBOR-RPC requests into the metrics, with each method's instruments looked up once at start-up and found
/// by the method's ordinal.
struct RPCMetrics: RPCObserver {
    private let instruments: [CoordinateMetrics.RPCInstruments]
    private let unknown: CoordinateMetrics.RPCInstruments

    init(metrics: CoordinateMetrics, table: RPCMethodTable) {
        instruments = table.methods.map { metrics.rpcInstruments(module: $0.moduleName, method: $0.name) }
        unknown = metrics.rpcInstruments(module: nil, method: nil)
    }

    func requestCompleted(method: RPCMethod?, failed: Bool, startedAt: ContinuousClock.Instant) {
        let target = method.map { instruments[$0.ordinal] } ?? unknown
        target.record(failed: failed, seconds: Engine.seconds(since: startedAt))
    }
}
