import CBOR
import CoordinateRPC
import Logging
import NIOCore

/// Limits applied to one CBOR-RPC connection.
public struct ConnectionLimits: Sendable {
    public var maxMessageBytes: Int
    public var maxNestingDepth: Int
    /// Stop reading while more than this many response bytes wait to be written (wire-protocol.md §3.3).
    public var maxPendingResponseBytes: Int
    /// Stop reading while this many requests have been dispatched but not yet answered.
    public var maxInFlightRequests: Int
    /// Close after this long without a complete message while nothing is pending (wire-protocol.md §1.4).
    public var idleTimeout: TimeAmount?
    /// Close when a response makes no progress towards the socket for this long (wire-protocol.md §3.6).
    public var writeTimeout: TimeAmount

    public init(
        maxMessageBytes: Int = 64 << 20, maxNestingDepth: Int = 256, maxPendingResponseBytes: Int = 4 << 20,
        maxInFlightRequests: Int = 4096, idleTimeout: TimeAmount? = nil, writeTimeout: TimeAmount = .seconds(60)
    ) {
        self.maxMessageBytes = maxMessageBytes
        self.maxNestingDepth = maxNestingDepth
        self.maxPendingResponseBytes = maxPendingResponseBytes
        self.maxInFlightRequests = maxInFlightRequests
        self.idleTimeout = idleTimeout
        self.writeTimeout = writeTimeout
    }
}

/// Serves CBOR-RPC on one connection: frames messages out of the byte stream, dispatches them, and writes the
/// responses in request order.
///
/// Invariants:
/// * Responses leave in the order their requests were framed (wire-protocol.md §3.2): each request takes the
///   next sequence number and a response is written only when every earlier one has been written.
/// * While more than `maxPendingResponseBytes` of responses wait for the socket, or `maxInFlightRequests`
///   requests wait for their results, the handler neither frames further buffered messages nor forwards `read`
///   to the channel; so a peer that never reads its responses cannot make the daemon buffer without bound.
/// * All state is touched only on the channel's event loop.
final class RPCConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let dispatcher: RPCDispatcher
    private let limits: ConnectionLimits
    private let statistics: ServerStatistics
    private var logger: Logger

    private var framer: CBORStreamFramer
    private var cumulation: ByteBuffer?
    private var context: ChannelHandlerContext?

    private var nextSequence: UInt64 = 0
    private var nextToWrite: UInt64 = 0
    private var finishedResponses: [UInt64: ByteBuffer] = [:]
    /// After writing the response with this sequence number, the connection closes.
    private var closeAfterSequence: UInt64?
    private var inFlight = 0
    private var pendingWriteBytes = 0
    private var readHeld = false
    private var stopped = false
    private var flushNeeded = false
    private var inChannelRead = false

    private var lastCompleteMessage: NIODeadline = .now()
    private var lastWriteProgress: NIODeadline = .now()
    private var idleTask: Scheduled<Void>?
    private var writeWatchTask: Scheduled<Void>?

    init(dispatcher: RPCDispatcher, limits: ConnectionLimits, statistics: ServerStatistics, logger: Logger) {
        self.dispatcher = dispatcher
        self.limits = limits
        self.statistics = statistics
        self.logger = logger
        self.framer = CBORStreamFramer(maxMessageBytes: limits.maxMessageBytes, maxDepth: limits.maxNestingDepth)
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress { logger[metadataKey: "peer"] = "\(remote)" }
        scheduleIdleCheck(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTask?.cancel()
        writeWatchTask?.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopped = true
        idleTask?.cancel()
        writeWatchTask?.cancel()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Daemon shutdown: answer what was already dispatched, take nothing new, then close.
            cumulation = nil
            if closeAfterSequence == nil { closeAfterPendingResponses(context: context) }
            flushIfNeeded(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error: \(error)")
        stopped = true
        context.close(promise: nil)
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !stopped else { return }
        var incoming = unwrapInboundIn(data)
        if cumulation == nil {
            cumulation = incoming
        } else {
            cumulation!.writeBuffer(&incoming)
        }
        inChannelRead = true
        processBuffered(context: context)
        inChannelRead = false
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    private var isBackPressured: Bool {
        pendingWriteBytes > limits.maxPendingResponseBytes || inFlight >= limits.maxInFlightRequests
    }

    /// Frames and handles buffered messages until the buffer runs dry, back-pressure applies or the
    /// connection is closing.
    private func processBuffered(context: ChannelHandlerContext) {
        while !stopped, !isBackPressured, closeAfterSequence == nil, var buffer = cumulation,
            buffer.readableBytes > 0
        {
            let event = buffer.withUnsafeReadableBytes { framer.next(in: $0) }
            switch event {
            case .needMoreData:
                // Keep memory bounded by the message in progress: drop consumed bytes once they dominate.
                if buffer.readerIndex > 0, buffer.readerIndex >= buffer.readableBytes {
                    buffer.discardReadBytes()
                    cumulation = buffer
                }
                return
            case .message(let length):
                let message = buffer.readSlice(length: length)!
                cumulation = buffer.readableBytes > 0 ? buffer : nil
                framer.reset()
                lastCompleteMessage = .now()
                handle(message: message, context: context)
            case .tooLarge:
                statistics.malformedMessages.add(1)
                logger.debug("closing connection: message too large")
                cumulation = nil
                respondAndClose(message: "malformed request: message too large", context: context)
                return
            case .tooDeep:
                statistics.malformedMessages.add(1)
                cumulation = nil
                respondAndClose(message: "malformed request: nesting too deep", context: context)
                return
            case .malformed(let reason):
                statistics.malformedMessages.add(1)
                logger.debug("closing connection: stream is not well-formed CBOR: \(reason)")
                cumulation = nil
                closeAfterPendingResponses(context: context)
                return
            }
        }
    }

    private func handle(message: ByteBuffer, context: ChannelHandlerContext) {
        let decoded = message.withUnsafeReadableBytes { CBORMessage.decode($0, maxDepth: limits.maxNestingDepth) }
        switch decoded {
        case .value(.null, _):
            // A null (or undefined) message: no response, close once earlier responses are out.
            closeAfterPendingResponses(context: context)
        case .value(let request, _):
            let sequence = nextSequence
            nextSequence += 1
            switch dispatcher.respond(to: request, on: context.eventLoop) {
            case .immediate(let response):
                complete(sequence: sequence, response: response, context: context)
            case .deferred(let future):
                inFlight += 1
                future.hop(to: context.eventLoop).assumeIsolated().whenComplete { [self] result in
                    inFlight -= 1
                    let response: CBORValue
                    switch result {
                    case .success(let value): response = value
                    case .failure(let error):
                        response = RPCDispatcher.errorResponse(id: .null, message: Array("internal error: \(error)".utf8))
                    }
                    guard let context = self.context else { return }
                    complete(sequence: sequence, response: response, context: context)
                    if !inChannelRead { flushIfNeeded(context: context) }
                    resumeIfPossible(context: context)
                }
            }
        case .invalidCBOR:
            statistics.malformedMessages.add(1)
            respondWithError("malformed request: invalid CBOR", context: context)
        case .nestingTooDeep(let enveloped):
            statistics.malformedMessages.add(1)
            if enveloped {
                respondWithError("malformed request: nesting too deep", context: context)
            } else {
                respondAndClose(message: "malformed request: nesting too deep", context: context)
            }
        case .notWellFormed:
            statistics.malformedMessages.add(1)
            closeAfterPendingResponses(context: context)
        }
    }

    private func respondWithError(_ text: String, context: ChannelHandlerContext) {
        let sequence = nextSequence
        nextSequence += 1
        complete(sequence: sequence, response: RPCDispatcher.errorResponse(id: .null, message: Array(text.utf8)), context: context)
    }

    private func respondAndClose(message text: String, context: ChannelHandlerContext) {
        let sequence = nextSequence
        nextSequence += 1
        closeAfterSequence = sequence
        complete(sequence: sequence, response: RPCDispatcher.errorResponse(id: .null, message: Array(text.utf8)), context: context)
        flushIfNeeded(context: context)
    }

    private func closeAfterPendingResponses(context: ChannelHandlerContext) {
        if nextSequence == nextToWrite {
            stopped = true
            flushIfNeeded(context: context)
            context.close(promise: nil)
        } else {
            closeAfterSequence = nextSequence - 1
        }
    }

    // MARK: - Ordered responses

    private func complete(sequence: UInt64, response: CBORValue, context: ChannelHandlerContext) {
        var encoder = CBOREncoder(reservingCapacity: 64)
        encoder.encode(response)
        var envelope = CBOREncoder(reservingCapacity: 11)
        envelope.writeEnvelopeHead(contentLength: encoder.bytes.count)
        var buffer = context.channel.allocator.buffer(capacity: envelope.bytes.count + encoder.bytes.count)
        buffer.writeBytes(envelope.bytes)
        buffer.writeBytes(encoder.bytes)
        if sequence == nextToWrite {
            write(buffer, sequence: sequence, context: context)
            while let next = finishedResponses.removeValue(forKey: nextToWrite) {
                write(next, sequence: nextToWrite, context: context)
            }
        } else {
            finishedResponses[sequence] = buffer
        }
    }

    private func write(_ buffer: ByteBuffer, sequence: UInt64, context: ChannelHandlerContext) {
        nextToWrite = sequence + 1
        guard !stopped else { return }
        let size = buffer.readableBytes
        pendingWriteBytes += size
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { [self] _ in
            pendingWriteBytes -= size
            lastWriteProgress = .now()
            if let context = self.context { resumeIfPossible(context: context) }
        }
        if let closeAfter = closeAfterSequence, sequence >= closeAfter {
            // The last response before closing: everything earlier was written before it, so closing once it
            // is on the wire loses nothing.
            stopped = true
            flushNeeded = false
            promise.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: promise)
            return
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
        flushNeeded = true
        scheduleWriteWatch(context: context)
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        if flushNeeded {
            flushNeeded = false
            context.flush()
        }
    }

    // MARK: - Back-pressure on reads

    func read(context: ChannelHandlerContext) {
        if isBackPressured || stopped {
            readHeld = true
        } else {
            context.read()
        }
    }

    private func resumeIfPossible(context: ChannelHandlerContext) {
        guard !isBackPressured, !stopped else { return }
        if cumulation != nil {
            processBuffered(context: context)
            flushIfNeeded(context: context)
        }
        if readHeld, !isBackPressured {
            readHeld = false
            context.read()
        }
    }

    // MARK: - Timers

    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        guard let idle = limits.idleTimeout else { return }
        let deadline = max(lastCompleteMessage + idle, .now() + .milliseconds(50))
        idleTask = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            guard let context = self.context, !stopped else { return }
            if NIODeadline.now() - lastCompleteMessage >= idle, inFlight == 0, pendingWriteBytes == 0,
                nextSequence == nextToWrite
            {
                logger.debug("closing idle connection")
                stopped = true
                context.close(promise: nil)
            } else {
                scheduleIdleCheck(context: context)
            }
        }
    }

    private func scheduleWriteWatch(context: ChannelHandlerContext) {
        guard writeWatchTask == nil else { return }
        lastWriteProgress = .now()
        let timeout = limits.writeTimeout
        writeWatchTask = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            writeWatchTask = nil
            guard let context = self.context, !stopped, pendingWriteBytes > 0 else { return }
            if NIODeadline.now() - lastWriteProgress >= timeout {
                logger.debug("closing connection: responses made no progress for \(timeout)")
                stopped = true
                context.close(promise: nil)
            } else {
                scheduleWriteWatch(context: context)
            }
        }
    }
}
