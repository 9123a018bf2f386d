import CBOR
import DequeModule
import NIOCore
import NIOPosix
import NIOSSL

/// One CBOR-RPC connection with pipelining, in-order response matching and retries (wire-protocol.md §12).
///
/// Invariants:
/// * Every mutable property is read and written on `eventLoop` only; public entry points hop onto it. That
///   confinement is what makes the `@unchecked Sendable` conformance safe.
/// * `outstanding` holds every call that has not been answered, in id order; the first `written` of them have
///   been written on the current channel. A response always answers `outstanding.first`.
/// * `generation` changes whenever a channel is abandoned, so events from an old channel are ignored.
/// * A call's request bytes never change: a retry resends exactly what was sent first.
final class PipelinedConnection: @unchecked Sendable {
    private struct Outstanding {
        let id: UInt64
        let bytes: ByteBuffer
        let promise: EventLoopPromise<CBORValue>
        var retriesUsed = 0
    }

    private enum Phase {
        case idle
        case connecting
        case connected(any Channel)
        case backingOff
    }

    let eventLoop: any EventLoop
    private let settings: ClientSettings
    private var phase = Phase.idle
    private var outstanding = Deque<Outstanding>()
    private var written = 0
    private var generation = 0
    private var nextID: UInt64 = 1
    private var responseTimer: Scheduled<Void>?
    /// Built once: loading trust roots for every reconnection would cost a file read and a parse each time.
    private let tlsContext: Result<NIOSSLContext, any Error>?

    init(settings: ClientSettings, eventLoop: any EventLoop) {
        self.settings = settings
        self.eventLoop = eventLoop
        tlsContext = settings.tls.map { tls in
            Result {
                var configuration = TLSConfiguration.makeClientConfiguration()
                configuration.minimumTLSVersion = .tlsv12
                if let file = tls.trustRootsFile { configuration.trustRoots = .file(file) }
                return try NIOSSLContext(configuration: configuration)
            }
        }
    }

    /// Sends one request and returns its `result` value; throws ``CoordinateClientError``.
    func call(method: String, params: CBORValue) async throws -> CBORValue {
        // Method and params are encoded by the caller; only the id is added on the event loop, so ids follow
        // the order in which calls are written.
        var tail = CBOREncoder(reservingCapacity: 64)
        tail.encode(.bytes(Array("method".utf8)))
        tail.encode(.bytes(Array(method.utf8)))
        tail.encode(.bytes(Array("params".utf8)))
        tail.encode(params)
        let encodedTail = tail.bytes
        let promise = eventLoop.makePromise(of: CBORValue.self)
        eventLoop.execute { self.enqueue(tail: encodedTail, promise: promise) }
        return try await promise.futureResult.get()
    }

    /// Closes the connection; calls still outstanding fail with ``CoordinateClientError/closed``. The next call
    /// reconnects.
    func close() async {
        let done = eventLoop.submit { self.abandon(failing: .closed) }
        try? await done.get()
    }

    // MARK: - Event loop

    private func enqueue(tail: [UInt8], promise: EventLoopPromise<CBORValue>) {
        let id = nextID
        nextID += 1
        var buffer = ByteBufferAllocator().buffer(capacity: tail.count + 32)
        var head = CBOREncoder(reservingCapacity: 16)
        head.writeHead(major: 5, argument: 3)
        head.encode(.bytes(Array("id".utf8)))
        head.encode(.unsigned(id))
        let contentLength = head.bytes.count + tail.count
        var envelope = CBOREncoder(reservingCapacity: 16)
        envelope.writeEnvelopeHead(contentLength: contentLength)
        buffer.writeBytes(envelope.bytes)
        buffer.writeBytes(head.bytes)
        buffer.writeBytes(tail)
        outstanding.append(Outstanding(id: id, bytes: buffer, promise: promise))
        switch phase {
        case .connected(let channel):
            written += 1
            channel.writeAndFlush(buffer, promise: nil)
            if responseTimer == nil { armResponseTimer() }
        case .idle:
            connect()
        case .connecting, .backingOff:
            break  // written once the connection is up
        }
    }

    private func connect() {
        eventLoop.assertInEventLoop()
        guard let (host, port) = settings.chooseAddress() else {
            failAll(.connection("invalid address \(settings.addresses)"))
            return
        }
        let tls: NIOSSLContext?
        switch tlsContext {
        case .success(let context): tls = context
        case .failure(let error):
            // A configuration problem: retrying cannot help.
            failAll(.connection("cannot set up TLS: \(Self.describe(error))"))
            return
        case nil: tls = nil
        }
        phase = .connecting
        generation += 1
        let expected = generation
        let maxResponseBytes = settings.maxResponseBytes
        let maxDepth = settings.maxNestingDepth
        // SNI and name verification use a host name; an IP literal is verified against the connected address.
        let serverName = settings.tls?.serverName ?? (Self.isIPLiteral(host) ? nil : host)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.milliseconds(Int64(settings.connectTimeout * 1000)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ResponseHandler(
                            connection: self, generation: expected, maxResponseBytes: maxResponseBytes,
                            maxDepth: maxDepth, overTLS: tls != nil))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                self.eventLoop.assertInEventLoop()
                guard self.generation == expected else {
                    if case .success(let channel) = result { channel.close(promise: nil) }
                    return
                }
                switch result {
                case .success(let channel):
                    self.phase = .connected(channel)
                    self.written = self.outstanding.count
                    for call in self.outstanding { channel.write(call.bytes, promise: nil) }
                    channel.flush()
                    if !self.outstanding.isEmpty { self.armResponseTimer() }
                case .failure(let error):
                    self.transportFailed(
                        "cannot connect to \(host):\(port): \(Self.describe(error))", generation: expected)
                }
            }
    }

    private static func isIPLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    private func armResponseTimer() {
        responseTimer?.cancel()
        let expected = generation
        responseTimer = eventLoop.scheduleTask(in: .milliseconds(Int64(settings.timeout * 1000))) {
            self.responseTimer = nil
            self.transportFailed("no response within \(Self.seconds(self.settings.timeout))", generation: expected)
        }
    }

    /// A complete response arrived on the channel of `generation`.
    fileprivate func received(_ value: CBORValue, generation: Int) {
        guard generation == self.generation else { return }
        guard let call = outstanding.first, written > 0 else {
            protocolFailed("response with no request outstanding", generation: generation)
            return
        }
        guard let response = value.mapValue else {
            protocolFailed("response is not a map", generation: generation)
            return
        }
        guard let id = response["id"], id == .unsigned(call.id) else {
            let got = response["id"].map(PythonRepr.renderString) ?? "missing"
            protocolFailed("response id \(got) does not match request id \(call.id)", generation: generation)
            return
        }
        outstanding.removeFirst()
        written -= 1
        if outstanding.isEmpty {
            responseTimer?.cancel()
            responseTimer = nil
        } else {
            armResponseTimer()  // progress: the next response gets a full timeout
        }
        if let result = response["result"] {
            call.promise.succeed(result)
        } else if let error = response["error"] {
            let message =
                error.mapValue?["message"]?.stringOctets.map { String(decoding: $0, as: UTF8.self) }
                ?? PythonRepr.renderString(error)
            call.promise.fail(CoordinateClientError.server(message: message))
        } else {
            call.promise.fail(CoordinateClientError.protocolViolation("response has neither result nor error"))
        }
    }

    /// The channel of `generation` failed (closed, reset, write error, timeout): retry what may be retried.
    fileprivate func transportFailed(_ detail: String, generation: Int) {
        guard generation == self.generation else { return }
        dropChannel()
        var retained = Deque<Outstanding>()
        var highestRetry = 0
        while var call = outstanding.popFirst() {
            if call.retriesUsed >= settings.retries {
                call.promise.fail(CoordinateClientError.connection(detail))
            } else {
                call.retriesUsed += 1
                highestRetry = max(highestRetry, call.retriesUsed)
                retained.append(call)
            }
        }
        outstanding = retained
        written = 0
        guard !outstanding.isEmpty else {
            phase = .idle
            return
        }
        phase = .backingOff
        let delay = settings.baseRetrySeconds * Double(1 << min(highestRetry - 1, 30))
        let expected = self.generation
        eventLoop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) {
            guard self.generation == expected, case .backingOff = self.phase else { return }
            self.connect()
        }
    }

    /// The TLS handshake was refused: every outstanding call fails with a connection error, nothing is retried.
    fileprivate func handshakeFailed(_ detail: String, generation: Int) {
        guard generation == self.generation else { return }
        abandon(failing: .connection(detail))
    }

    /// The peer broke the protocol: every outstanding call fails, nothing is retried.
    fileprivate func protocolFailed(_ detail: String, generation: Int) {
        guard generation == self.generation else { return }
        abandon(failing: .protocolViolation(detail))
    }

    private func abandon(failing error: CoordinateClientError) {
        eventLoop.assertInEventLoop()
        dropChannel()
        phase = .idle
        failAll(error)
    }

    private func failAll(_ error: CoordinateClientError) {
        let failed = outstanding
        outstanding.removeAll()
        written = 0
        for call in failed { call.promise.fail(error) }
    }

    private func dropChannel() {
        generation += 1
        responseTimer?.cancel()
        responseTimer = nil
        if case .connected(let channel) = phase { channel.close(promise: nil) }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return describe(first.error)
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? ChannelError, case .connectTimeout = error { return "connect timed out" }
        return "\(error)"
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }
}

/// Frames responses from the byte stream and hands them to the connection.
///
/// Invariant: bytes of at most one partial message are buffered; a message over `maxResponseBytes` is
/// rejected as soon as its size is known.
private final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let connection: PipelinedConnection
    private let generation: Int
    private var framer: CBORStreamFramer
    private let maxDepth: Int
    private var buffer: ByteBuffer?
    /// Whether any byte has arrived on this connection (the first ones may reveal a TLS server).
    private var receivedAny: Bool

    init(connection: PipelinedConnection, generation: Int, maxResponseBytes: Int, maxDepth: Int, overTLS: Bool) {
        self.connection = connection
        self.generation = generation
        self.receivedAny = overTLS
        self.framer = CBORStreamFramer(maxMessageBytes: maxResponseBytes, maxDepth: maxDepth)
        self.maxDepth = maxDepth
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if !receivedAny {
            receivedAny = true
            // A TLS server answers plaintext with an alert or handshake record (content type 21 or 22, version
            // 3.x), which would otherwise decode as a small CBOR integer: say what actually happened.
            if let head = incoming.getBytes(at: incoming.readerIndex, length: min(2, incoming.readableBytes)),
                head.count == 2, head[0] == 21 || head[0] == 22, head[1] == 3
            {
                connection.protocolFailed("the server speaks TLS; connect with TLS", generation: generation)
                return
            }
        }
        if buffer == nil {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        while let pending = buffer, pending.readableBytes > 0 {
            let event = pending.withUnsafeReadableBytes { framer.next(in: $0) }
            switch event {
            case .needMoreData:
                return
            case .message(let length):
                framer.reset()
                let decoded = buffer!.readWithUnsafeReadableBytes { bytes in
                    (length, CBORMessage.decode(UnsafeRawBufferPointer(rebasing: bytes[..<length]), maxDepth: maxDepth))
                }
                if buffer!.readableBytes == 0 { buffer = nil } else { buffer!.discardReadBytes() }
                guard case .value(let value, _) = decoded else {
                    connection.protocolFailed("undecodable response", generation: generation)
                    return
                }
                connection.received(value, generation: generation)
            case .tooLarge:
                buffer = nil
                connection.protocolFailed("response larger than max_response_bytes", generation: generation)
                return
            case .tooDeep:
                buffer = nil
                connection.protocolFailed("response nested too deeply", generation: generation)
                return
            case .malformed(let detail):
                buffer = nil
                connection.protocolFailed("malformed response: \(detail)", generation: generation)
                return
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.transportFailed("connection closed by the server", generation: generation)
        context.fireChannelInactive()
    }

    private static func isVerificationFailure(_ error: any Error) -> Bool {
        if let error = error as? NIOSSLError, case .handshakeFailed = error { return true }
        if let error = error as? NIOSSLExtraError { return error == .failedToValidateHostname }
        return false
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if Self.isVerificationFailure(error) {
            // An untrusted certificate, a wrong name or a plaintext server: retrying cannot change the answer.
            connection.handshakeFailed("TLS handshake failed: \(error)", generation: generation)
        } else {
            connection.transportFailed(PipelinedConnection.describe(error), generation: generation)
        }
        context.close(promise: nil)
    }
}
