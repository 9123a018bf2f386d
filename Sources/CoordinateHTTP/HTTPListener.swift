import CoordinateEngine
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Locking
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The HTTP listener: a Hummingbird application serving ``HTTPAPI`` on its own task, over TLS when configured.
public final class HTTPListener: Sendable {
    private let api: HTTPAPI
    private let host: String
    private let port: Int
    private let tls: TLSConfiguration?
    private let logger: Logger
    private let group: any EventLoopGroup
    private let limits: HTTPConnectionLimits
    private let running = Locked<(group: ServiceGroup, task: Task<Void, any Error>)?>(nil)

    public init(
        api: HTTPAPI, host: String, port: Int, tls: TLSConfiguration? = nil, limits: HTTPConnectionLimits = .init(),
        logger: Logger, eventLoopGroup: any EventLoopGroup
    ) {
        self.api = api
        self.host = host
        self.port = port
        self.tls = tls
        self.limits = limits
        self.logger = logger
        self.group = eventLoopGroup
    }

    /// Binds and starts serving; returns the bound address, or throws the bind error.
    public func start() async throws -> SocketAddress {
        let bound = OneShot<Result<SocketAddress, any Error>>()
        let api = self.api
        let limits = self.limits
        let table = HTTPConnectionTable(limit: limits.maxConnections, logger: logger)
        let http1 = HTTPServerBuilder.http1(
            configuration: .init(additionalChannelHandlers: [HTTPConnectionGuard(table: table, limits: limits)]))
        let server: HTTPServerBuilder = try tls.map { try .tls(http1, tlsConfiguration: $0) } ?? http1
        let application = Application(
            responder: CallbackResponder(callback: { request, context in
                await api.respond(to: request, context: context)
            }
            ),
            server: server,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                if let address = channel.localAddress {
                    bound.fulfill(.success(address))
                } else {
                    bound.fulfill(.failure(ChannelError.unknownLocalAddress))
                }
            },
            eventLoopGroupProvider: .shared(group), logger: quietLogger())
        // Our own service group, so shutdown is graceful (in-flight requests finish) rather than a cancellation.
        let group = ServiceGroup(services: [application], logger: quietLogger())
        let task = Task {
            do {
                try await group.run()
            } catch {
                bound.fulfill(.failure(error))
                throw error
            }
        }
        running.withLock { $0 = (group, task) }
        return try await bound.value.get()
    }

    /// Hummingbird logs every request at debug level; keep its logger one level quieter than ours.
    private func quietLogger() -> Logger {
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .info)
        return quiet
    }

    /// Stops accepting requests and closes the listener.
    public func shutdown() async {
        guard let (group, task) = running.withLock({ $0 }) else { return }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// A value delivered once to one waiter; later deliveries are ignored.
final class OneShot<Value: Sendable>: Sendable {
    private let state = Locked<(value: Value?, waiter: CheckedContinuation<Value, Never>?)>((nil, nil))

    func fulfill(_ value: Value) {
        let waiter = state.withLock { state -> CheckedContinuation<Value, Never>? in
            guard state.value == nil else { return nil }
            state.value = value
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: value)
    }

    var value: Value {
        get async {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Value? in
                    if let value = state.value { return value }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}
