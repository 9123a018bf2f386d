import CoordinateConfig
import CoordinateRPC
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// A listener could not be opened; rendered as the spec's startup error line.
public struct ListenError: Error, CustomStringConvertible, Sendable {
    public let host: String
    public let port: Int
    public let listener: String
    public let reason: String

    public var description: String { "cannot listen on \(host):\(port) (\(listener)): \(reason)" }

    /// A human-readable reason for a bind failure (for example `Address already in use`).
    public static func reason(for error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? SocketAddressError {
            switch error {
            case .unknown(let host, _): return "cannot resolve host \(host)"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }
}

/// The CBOR-RPC TCP listener (wire-protocol.md §1): accepts connections up to `maxConnections`, optionally only
/// from allowed networks, optionally only over TLS, and serves each with an ``RPCConnectionHandler``.
public final class CBORRPCServer: Sendable {
    public let dispatcher: RPCDispatcher
    public let limits: ConnectionLimits
    public let maxConnections: Int
    public let allowedNetworks: [CIDR]?
    /// When set, every connection must complete a TLS handshake; a plaintext peer is closed by the TLS handler.
    public let tls: NIOSSLContext?
    public let statistics: ServerStatistics
    private let group: any EventLoopGroup
    /// One dispatcher per event loop (``RPCDispatcher/replica()``), so a connection's requests count references
    /// only on objects of its own thread.
    private let dispatchers: [ObjectIdentifier: RPCDispatcher]
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
    }

    public init(
        dispatcher: RPCDispatcher, limits: ConnectionLimits, maxConnections: Int, allowedNetworks: [CIDR]?,
        tls: NIOSSLContext? = nil, statistics: ServerStatistics, group: any EventLoopGroup, logger: Logger
    ) {
        self.dispatcher = dispatcher
        self.limits = limits
        self.maxConnections = maxConnections
        self.allowedNetworks = allowedNetworks
        self.tls = tls
        self.statistics = statistics
        self.group = group
        self.logger = logger
        var dispatchers: [ObjectIdentifier: RPCDispatcher] = [:]
        for loop in group.makeIterator() { dispatchers[ObjectIdentifier(loop)] = dispatcher.replica() }
        self.dispatchers = dispatchers
    }

    /// Binds the listener. Throws ``ListenError`` when the address cannot be bound.
    @discardableResult
    public func start(host: String, port: Int) async throws(ListenError) -> SocketAddress {
        let logger = self.logger
        let lastReport = NIOLockedValueBox<NIODeadline?>(nil)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                // Out of descriptors (EMFILE/ENFILE): stop accepting for a second instead of spinning on a socket
                // that stays readable, and say so at most once every 10 s.
                let backoff = AcceptBackoffHandler(shouldForwardIOErrorCaught: false) { error in
                    let now = NIODeadline.now()
                    let report = lastReport.withLockedValue { last -> Bool in
                        guard last.map({ now - $0 >= .seconds(10) }) ?? true else { return false }
                        last = now
                        return true
                    }
                    if report {
                        logger.error(
                            "cannot accept CBOR-RPC connections: \(error) (out of descriptors?); pausing accepts for 1 s"
                        )
                    }
                    return .seconds(1)
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(backoff)
                }
            }
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                acceptConnection(channel)
            }
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            state.withLockedValue { $0.listener = channel }
            return channel.localAddress!
        } catch {
            throw ListenError(host: host, port: port, listener: "CBOR-RPC", reason: ListenError.reason(for: error))
        }
    }

    /// The bound address, once started.
    public var localAddress: SocketAddress? { state.withLockedValue { $0.listener?.localAddress } }

    private func acceptConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
        if let allowed = allowedNetworks, !Self.peer(channel.remoteAddress, isIn: allowed) {
            statistics.rejectedNotAllowed.add(1)
            logger.info(
                "rejected CBOR-RPC connection from \(channel.remoteAddress.map { "\($0)" } ?? "?"): not allowed")
            return channel.close()
        }
        guard statistics.openConnections.incrementIfBelow(maxConnections) else {
            statistics.rejectedForLimit.add(1)
            logger.warning("rejected CBOR-RPC connection: max_connections (\(maxConnections)) reached")
            return channel.close()
        }
        statistics.acceptedConnections.add(1)
        let id = ObjectIdentifier(channel)
        state.withLockedValue { $0.connections[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            statistics.openConnections.add(-1)
            _ = state.withLockedValue { $0.connections.removeValue(forKey: id) }
        }
        let handler = RPCConnectionHandler(
            dispatcher: dispatchers[ObjectIdentifier(channel.eventLoop)] ?? dispatcher, limits: limits,
            statistics: statistics, logger: logger)
        do {
            // The allow-list and connection limit above are checked before any TLS work is spent on a peer.
            if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
            try channel.pipeline.syncOperations.addHandler(handler)
            return channel.eventLoop.makeSucceededVoidFuture()
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    static func peer(_ address: SocketAddress?, isIn networks: [CIDR]) -> Bool {
        guard let address else { return false }
        let octets: [UInt8]
        switch address {
        case .v4(let v4):
            octets = withUnsafeBytes(of: v4.address.sin_addr.s_addr) { Array($0) }
        case .v6(let v6):
            octets = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default:
            return true
        }
        return networks.contains { $0.contains(octets) }
    }

    /// Stops accepting, lets every connection finish the requests it has already received, and closes what is
    /// still open after `grace`.
    public func shutdown(grace: TimeAmount = .seconds(10)) async {
        let (listener, connections) = state.withLockedValue { ($0.listener, Array($0.connections.values)) }
        try? await listener?.close()
        for connection in connections {
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = NIODeadline.now() + grace
        while NIODeadline.now() < deadline {
            if state.withLockedValue({ $0.connections.isEmpty }) { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
        for connection in state.withLockedValue({ Array($0.connections.values) }) {
            try? await connection.close()
        }
    }
}
