import CBOR
import CoordinateRPC
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    /// Close when responses cannot be written for this long (wire-protocol.md §3.6).
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
///   next sequence number, and a response is appended to the outbound buffer only when every earlier one has
///   been appended.
/// * Responses produced while handling one read are coalesced into one outbound buffer and written with one
///   write and one flush.
/// * While more than `maxPendingResponseBytes` of responses wait for the socket (the channel's high water
///   mark), or `maxInFlightRequests` requests wait for their results, the handler neither frames further
///   buffered messages nor forwards `read`; so a peer that never reads cannot make the daemon buffer without
///   bound (beyond the one response that crossed the threshold).
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
    /// Responses that completed ahead of an earlier one, encoded (envelope included), by sequence number.
    private var finishedResponses: [UInt64: ByteBuffer] = [:]
    private var finishedBytes = 0
    /// The largest response (encoded) this connection has produced: it sizes the dispatch window and is the one
    /// response the hard bound always leaves room for.
    private var largestResponse = 0
    /// After writing the response with this sequence number, the connection closes.
    private var closeAfterSequence: UInt64?
    private var inFlight = 0
    private var readHeld = false
    private var stopped = false
    private var inChannelRead = false

    /// Responses waiting to be handed to the channel; reused between flushes.
    private var outbound: ByteBuffer
    private var scratch = CBOREncoder(reservingCapacity: 256)
    /// The envelope head of the response being written (at most 11 bytes), kept to spare an allocation each.
    private var envelopeHead = CBOREncoder(reservingCapacity: 11)

    private var lastCompleteMessage: NIODeadline = .now()
    private var unwritableSince: NIODeadline?
    private var idleTask: Scheduled<Void>?
    private var writeWatchTask: Scheduled<Void>?

    init(dispatcher: RPCDispatcher, limits: ConnectionLimits, statistics: ServerStatistics, logger: Logger) {
        self.dispatcher = dispatcher
        self.limits = limits
        self.statistics = statistics
        self.logger = logger
        self.framer = CBORStreamFramer(maxMessageBytes: limits.maxMessageBytes, maxDepth: limits.maxNestingDepth)
        self.outbound = ByteBufferAllocator().buffer(capacity: 0)
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbound = context.channel.allocator.buffer(capacity: 1024)
        if let remote = context.channel.remoteAddress { logger[metadataKey: "peer"] = "\(remote)" }
        let high = max(1, limits.maxPendingResponseBytes)
        context.channel.setOption(.writeBufferWaterMark, value: .init(low: high / 2, high: high)).whenFailure { _ in }
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
            let idle =
                nextSequence == nextToWrite && outbound.readableBytes == 0 && inFlight == 0
                && context.channel.isWritable
            if idle, let provider = context.channel as? any SocketOptionProvider {
                // Nothing is owed on this connection: reset it instead of a FIN. The Python client only retries on
                // socket errors; after a FIN its next call would read end-of-stream and fail, while after a
                // reset its send fails, it reconnects and the call goes through (to the restarted daemon).
                stopped = true
                provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
                return
            }
            if closeAfterSequence == nil { closeAfterPendingResponses(context: context) }
            flushOutbound(context: context)
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
        flushOutbound(context: context)
        // Processing may have paused on a full outbound buffer that the flush just handed to the channel.
        if cumulation != nil { resumeIfPossible(context: context) }
        context.fireChannelReadComplete()
    }

    /// Whether to stop framing and dispatching requests (and reading): responses already wait to be written,
    /// or enough requests are in flight that their responses would reach the bound. The window is the bound
    /// divided by the largest response seen so far — responses of 1 MiB allow 4 requests in flight under the
    /// default 4 MiB, small ones the full `maxInFlightRequests` — and 16 until a first response is known.
    private func isBackPressured(_ context: ChannelHandlerContext) -> Bool {
        let bound = limits.maxPendingResponseBytes
        let expected = largestResponse > 0 ? largestResponse : max(1, bound / 16)
        let window = max(1, min(limits.maxInFlightRequests, bound / expected))
        return !context.channel.isWritable || outbound.readableBytes + finishedBytes >= bound || inFlight >= window
    }

    /// The second bound: what a connection may hold in responses its client does not read — the responses
    /// waiting here and in the channel — beyond its largest response (a single large response can always be
    /// written out). Requests already in flight when reading stopped still complete; past this the client is
    /// not reading at all, and the connection is closed.
    private var hardBound: Int { 4 * limits.maxPendingResponseBytes }

    /// Closes the connection when it holds more than ``hardBound`` beyond its largest response.
    private func enforceHardBound(context: ChannelHandlerContext) {
        guard !stopped else { return }
        let here = outbound.readableBytes + finishedBytes
        // While the channel is writable it buffers less than its high-water mark (the soft bound): no need to ask.
        if context.channel.isWritable, here + limits.maxPendingResponseBytes - largestResponse <= hardBound { return }
        let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        let held = here + buffered
        guard held - largestResponse > hardBound else { return }
        logger.warning(
            """
            closing CBOR-RPC connection: its client does not read its responses (\(held) bytes held; \
            max_pending_response_bytes is \(limits.maxPendingResponseBytes))
            """)
        stopped = true
        context.close(promise: nil)
    }

    /// Frames and handles buffered messages until the buffer runs dry, back-pressure applies or the
    /// connection is closing.
    private func processBuffered(context: ChannelHandlerContext) {
        // One clock read per pass, not per message: the idle check needs seconds, not microseconds.
        var framedAny = false
        defer { if framedAny { lastCompleteMessage = .now() } }
        while !stopped, closeAfterSequence == nil, !isBackPressured(context), var buffer = cumulation,
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
                framedAny = true
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
        let budget = DecodeBudget.bytes(forMessageOf: message.readableBytes)
        let direct = message.withUnsafeReadableBytes {
            dispatcher.respond(
                toEncoded: $0, maxDepth: limits.maxNestingDepth, maxDecodedBytes: budget, on: context.eventLoop)
        }
        if let direct {
            deliver(direct, context: context)
            return
        }
        let decoded = message.withUnsafeReadableBytes {
            CBORMessage.decode($0, maxDepth: limits.maxNestingDepth, maxDecodedBytes: budget)
        }
        switch decoded {
        case .value(.null, _):
            // A null (or undefined) message: no response, close once earlier responses are out.
            closeAfterPendingResponses(context: context)
        case .value(.array(let elements), _):
            // A batch: answered element by element, its encoded size checked as it grows (wire-protocol.md §3.3).
            let sequence = nextSequence
            nextSequence += 1
            inFlight += 1
            dispatcher.respondEncoded(toBatch: elements, on: context.eventLoop, limit: hardBound)
                .hop(to: context.eventLoop).assumeIsolated()
                .whenComplete { [self] result in
                    inFlight -= 1
                    guard let context = self.context else { return }
                    guard case .success(let body?) = result else {
                        guard !stopped else { return }
                        logger.warning(
                            """
                            closing CBOR-RPC connection: the responses to a batch of \(elements.count) requests \
                            exceed \(hardBound) bytes
                            """)
                        stopped = true
                        context.close(promise: nil)
                        return
                    }
                    complete(sequence: sequence, encodedBody: body, context: context)
                    if !inChannelRead { flushOutbound(context: context) }
                    resumeIfPossible(context: context)
                }
        case .value(let request, _):
            deliver(dispatcher.respond(to: request, on: context.eventLoop), context: context)
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
        case .decodedTooLarge(let enveloped):
            statistics.malformedMessages.add(1)
            let text = "malformed request: message too large once decoded; send fewer items per call"
            if enveloped {
                respondWithError(text, context: context)
            } else {
                respondAndClose(message: text, context: context)
            }
        case .notWellFormed:
            statistics.malformedMessages.add(1)
            closeAfterPendingResponses(context: context)
        }
    }

    /// Puts the next response in order: now if it is known, else when it arrives.
    private func deliver(_ response: RPCResponse, context: ChannelHandlerContext) {
        let sequence = nextSequence
        nextSequence += 1
        if response.isResolved {
            complete(sequence: sequence, response: response, context: context)
            return
        }
        inFlight += 1
        RPCDispatcher.resolve(response, on: context.eventLoop).hop(to: context.eventLoop).assumeIsolated()
            .whenComplete { [self] result in
                inFlight -= 1
                guard let context = self.context else { return }
                let resolved: RPCResponse
                switch result {
                case .success(let value): resolved = value
                case .failure(let error):
                    resolved = .error(id: .null, message: Array("internal error: \(error)".utf8))
                }
                complete(sequence: sequence, response: resolved, context: context)
                if !inChannelRead { flushOutbound(context: context) }
                resumeIfPossible(context: context)
            }
    }

    private func respondWithError(_ text: String, context: ChannelHandlerContext) {
        let sequence = nextSequence
        nextSequence += 1
        complete(sequence: sequence, response: .error(id: .null, message: Array(text.utf8)), context: context)
    }

    private func respondAndClose(message text: String, context: ChannelHandlerContext) {
        let sequence = nextSequence
        nextSequence += 1
        closeAfterSequence = sequence
        complete(sequence: sequence, response: .error(id: .null, message: Array(text.utf8)), context: context)
        flushOutbound(context: context)
    }

    private func closeAfterPendingResponses(context: ChannelHandlerContext) {
        if nextSequence == nextToWrite {
            flushOutbound(context: context)
            stopped = true
            context.close(promise: nil)
        } else {
            closeAfterSequence = nextSequence - 1
        }
    }

    // MARK: - Ordered responses

    private func complete(sequence: UInt64, response: RPCResponse, context: ChannelHandlerContext) {
        scratch.bytes.removeAll(keepingCapacity: true)
        response.encode(into: &scratch)
        complete(sequence: sequence, encodedBody: scratch.bytes, context: context)
        if scratch.bytes.count > 1 << 20 {
            // Do not keep a huge scratch buffer alive for the rest of the connection.
            scratch = CBOREncoder(reservingCapacity: 256)
        }
    }

    /// Takes the encoded response with sequence number `sequence`: onto the outbound buffer when every earlier
    /// one is there, else aside until they are.
    private func complete(sequence: UInt64, encodedBody body: [UInt8], context: ChannelHandlerContext) {
        largestResponse = max(largestResponse, body.count)
        guard sequence == nextToWrite else {
            var buffer = context.channel.allocator.buffer(capacity: body.count + 9)
            writeEnvelope(body, to: &buffer)
            finishedBytes += buffer.readableBytes
            finishedResponses[sequence] = buffer
            enforceHardBound(context: context)
            return
        }
        append(context: context) { writeEnvelope(body, to: &$0) }
        while !finishedResponses.isEmpty, var next = finishedResponses.removeValue(forKey: nextToWrite) {
            finishedBytes -= next.readableBytes
            append(context: context) { $0.writeBuffer(&next) }
        }
        enforceHardBound(context: context)
    }

    /// Writes `body` inside a tag-24 envelope, its head encoded in a buffer kept for the purpose.
    private func writeEnvelope(_ body: [UInt8], to buffer: inout ByteBuffer) {
        envelopeHead.bytes.removeAll(keepingCapacity: true)
        envelopeHead.writeEnvelopeHead(contentLength: body.count)
        buffer.writeBytes(envelopeHead.bytes)
        buffer.writeBytes(body)
    }

    /// Appends the response with sequence number `nextToWrite` (written by `write`) to the outbound buffer.
    private func append(context: ChannelHandlerContext, _ write: (inout ByteBuffer) -> Void) {
        let sequence = nextToWrite
        nextToWrite += 1
        guard !stopped else { return }
        write(&outbound)
        if let closeAfter = closeAfterSequence, sequence >= closeAfter {
            // The last response before closing: everything earlier is ahead of it in the same stream, so
            // closing once it is on the wire loses nothing.
            stopped = true
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            let buffer = outbound
            outbound = context.channel.allocator.buffer(capacity: 0)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: promise)
        }
    }

    private func flushOutbound(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0, !stopped else { return }
        let buffer = outbound
        outbound = context.channel.allocator.buffer(capacity: min(max(1024, buffer.readableBytes), 65536))
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    // MARK: - Back-pressure on reads

    func read(context: ChannelHandlerContext) {
        if isBackPressured(context) || stopped {
            readHeld = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            unwritableSince = nil
            resumeIfPossible(context: context)
        } else {
            unwritableSince = .now()
            scheduleWriteWatch(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func resumeIfPossible(context: ChannelHandlerContext) {
        guard !isBackPressured(context), !stopped else { return }
        if cumulation != nil, closeAfterSequence == nil {
            processBuffered(context: context)
            flushOutbound(context: context)
        }
        if readHeld, !isBackPressured(context) {
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
            if NIODeadline.now() - lastCompleteMessage >= idle, inFlight == 0, context.channel.isWritable,
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
        let timeout = limits.writeTimeout
        writeWatchTask = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            writeWatchTask = nil
            guard let context = self.context, !stopped, let since = unwritableSince else { return }
            if NIODeadline.now() - since >= timeout {
                logger.debug("closing connection: responses could not be written for \(timeout)")
                stopped = true
                context.close(promise: nil)
            } else {
                scheduleWriteWatch(context: context)
            }
        }
    }
}
