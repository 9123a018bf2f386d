import Locking
import Logging
import NIOCore
import NIOHTTPTypes

/// Limits of the HTTP listener (docs/security.md): how many connections it holds, and how long a connection may
/// take to deliver a request head.
public struct HTTPConnectionLimits: Sendable {
    /// Open connections at most (`http_max_connections`).
    public var maxConnections: Int
    /// Time a new connection has to deliver its first complete request head (`http_header_timeout`).
    public var headerTimeout: TimeAmount
    /// Time a connection has, after a response, to deliver the next complete request head (`http_idle_timeout`).
    public var idleTimeout: TimeAmount

    public init(
        maxConnections: Int = 256, headerTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(60)
    ) {
        self.maxConnections = maxConnections
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }
}

/// The HTTP connections open on one listener, for ``HTTPConnectionLimits/maxConnections``.
///
/// At the limit, a new connection takes the place of the oldest one that is still waiting for a request head —
/// a slow or idle client, which is what fills the table in a slowloris attack — so `/healthz` and real clients
/// keep being served. Only when every connection is busy with a request is the new one closed.
final class HTTPConnectionTable: Sendable {
    private struct Entry {
        let channel: any Channel
        let opened: NIODeadline
        var awaitingHead: Bool
    }

    private let limit: Int
    private let logger: Logger
    private let entries = Locked<(byID: [ObjectIdentifier: Entry], lastRefusal: NIODeadline?)>(([:], nil))

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    /// Registers `channel`; false when it must be closed instead. May close another connection to make room.
    func admit(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let now = NIODeadline.now()
        let (admitted, evicted, report) = entries.withLock { state -> (Bool, (any Channel)?, Bool) in
            var evicted: (any Channel)?
            if state.byID.count >= limit {
                guard
                    let oldest = state.byID.filter({ $0.value.awaitingHead }).min(by: {
                        $0.value.opened < $1.value.opened
                    })
                else {
                    let report = state.lastRefusal.map { now - $0 >= .seconds(10) } ?? true
                    if report { state.lastRefusal = now }
                    return (false, nil, report)
                }
                state.byID.removeValue(forKey: oldest.key)
                evicted = oldest.value.channel
            }
            state.byID[id] = Entry(channel: channel, opened: now, awaitingHead: true)
            return (true, evicted, false)
        }
        evicted?.close(promise: nil)
        if report {
            logger.warning("HTTP connection refused: http_max_connections (\(limit)) reached, every one busy")
        }
        return admitted
    }

    func setAwaitingHead(_ channel: any Channel, _ awaiting: Bool) {
        entries.withLock { $0.byID[ObjectIdentifier(channel)]?.awaitingHead = awaiting }
    }

    func remove(_ channel: any Channel) {
        _ = entries.withLock { $0.byID.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// One HTTP connection's guard: admits it into the ``HTTPConnectionTable`` and closes it when a client is too
/// slow — its request head must arrive within the header timeout of opening, or within the idle timeout of the
/// previous response; a request's body within the idle timeout of its head. Trickling bytes resets neither clock
/// (it did reset the plain idle timeout). While the daemon works on a request, no clock runs — except that a
/// response the client stops reading (the connection stays unwritable for the idle timeout) closes it, so a
/// client cannot pin what a streamed response holds (an export's storage snapshot) by never reading.
final class HTTPConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let table: HTTPConnectionTable
    private let limits: HTTPConnectionLimits
    private var deadline: Scheduled<Void>?
    /// Armed while the connection is unwritable.
    private var stalled: Scheduled<Void>?
    /// Requests received in full and not yet answered in full.
    private var unanswered = 0
    private var receivingBody = false

    init(table: HTTPConnectionTable, limits: HTTPConnectionLimits) {
        self.table = table
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard table.admit(context.channel) else {
            context.close(promise: nil)
            return
        }
        closeUnlessDone(context: context, within: limits.headerTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        stalled?.cancel()
        table.remove(context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        stalled?.cancel()
        table.remove(context.channel)
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stalled?.cancel()
            stalled = nil
        } else if stalled == nil {
            let channel = context.channel
            stalled = context.eventLoop.scheduleTask(in: limits.idleTimeout) { channel.close(promise: nil) }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            table.setAwaitingHead(context.channel, false)
            receivingBody = true
            closeUnlessDone(context: context, within: limits.idleTimeout)
        case .end:
            receivingBody = false
            unanswered += 1
            deadline?.cancel()
            deadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            if unanswered == 0 && !receivingBody {
                table.setAwaitingHead(context.channel, true)
                closeUnlessDone(context: context, within: limits.idleTimeout)
            }
        }
        context.write(data, promise: promise)
    }

    private func closeUnlessDone(context: ChannelHandlerContext, within timeout: TimeAmount) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}
