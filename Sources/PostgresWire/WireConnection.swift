import NIOCore
import NIOPosix
import NIOSSL

/// How to reach and authenticate to a PostgreSQL server.
public struct WireConfiguration: Sendable {
    public enum TLS: Sendable {
        case disable
        /// TLS or no connection (`sslmode=require` and stricter).
        case require(NIOSSLContext, serverHostname: String?)
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String?
    public var tls: TLS
    /// Time allowed for TCP connect, TLS and authentication together.
    public var connectTimeout: TimeAmount
    /// How long statements may be outstanding with nothing received from the server before the connection is
    /// declared dead and closed, failing them: only a server gone silent without closing the socket runs into it
    /// (a statement waiting for a row lock legitimately takes long, so the default is generous).
    public var answerTimeout: TimeAmount = .seconds(300)
    public var applicationName: String

    public init(
        host: String, port: Int = 5432, user: String, password: String?, database: String?, tls: TLS = .disable,
        connectTimeout: TimeAmount = .seconds(10), applicationName: String = "coordinated"
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.applicationName = applicationName
    }
}

/// A statement to run: SQL with `$n` parameters, and what to do with its answer.
public struct WireRequest: Sendable {
    public var sql: String
    public var parameters: [WireParameter]
    /// Run as a named statement, parsed once per connection and reused (for the fixed statements an
    /// application runs over and over); otherwise parsed and planned on every execution.
    public var prepared: Bool
    /// The data of a `COPY … FROM STDIN` statement, sent right behind it in the same write: the server reads it
    /// once the statement has started, so the statement costs no round trip of its own (nil for any other
    /// statement; a `COPY … FROM STDIN` without it fails, see ``WireHandler``).
    public var copyData: ByteBuffer?
    /// Called on the connection's event loop with the rows, or with the server's error (``WireServerError``)
    /// or the connection's (``WireConnectionError``).
    public var completion: @Sendable (Result<[WireRow], any Error>) -> Void

    public init(
        sql: String, parameters: [WireParameter] = [], prepared: Bool = true, copyData: ByteBuffer? = nil,
        completion: @escaping @Sendable (Result<[WireRow], any Error>) -> Void
    ) {
        self.sql = sql
        self.parameters = parameters
        self.prepared = prepared
        self.copyData = copyData
        self.completion = completion
    }
}

/// One connection to PostgreSQL over its frontend/backend protocol (version 3), pipelining statements.
///
/// Why not postgres-nio: it sends a statement only after the previous one is answered, so a transaction of
/// seven statements costs seven round trips even when none depends on the answer of another. Here the statements
/// handed over together (one ``submit(_:)``) are one *pipeline*: one write, `Parse`/`Bind`/`Execute` for each and
/// a single `Sync` at the end, so the server runs them back to back and answers them all in one flush (a `Sync`
/// per statement would make it flush, and the client wake, once per statement). Each statement still gets its own
/// rows or error, in order. Pipeline semantics are the protocol's (and libpq's pipeline mode): statements that
/// are not inside a `BEGIN`…`COMMIT` of their own run as one implicit transaction, and after a failure the server
/// skips the rest of the pipeline, which fail with ``WireStatementSkipped``.
///
/// The protocol subset: startup with cleartext, MD5 or SCRAM-SHA-256 passwords, optional TLS; `Parse`/`Bind`/
/// `Execute`/`Sync` with binary parameters and binary results; `COPY … FROM STDIN` with its data sent along
/// (``WireRequest/copyData``). No `COPY … TO STDOUT`, no notifications, no cancellation.
public final class WireConnection: Sendable {
    public let channel: any Channel
    private let handler: NIOLoopBound<WireHandler>

    init(channel: any Channel, handler: WireHandler) {
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Distinct named statements one connection keeps; further ones run unnamed (parsed on every execution).
    /// An application's fixed statements fit many times over; the limit bounds statements built with varying text.
    public static let preparedStatementLimit = 256

    /// Whether the connection has closed (or is closing): no statement can run on it any more.
    public var isClosed: Bool { !channel.isActive }

    /// Completes when the connection has closed, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Connects, negotiates TLS if configured, and authenticates.
    public static func connect(
        to configuration: WireConfiguration, on eventLoop: any EventLoop
    ) -> EventLoopFuture<WireConnection> {
        let ready = eventLoop.makePromise(of: WireConnection.self)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(configuration.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        WireHandler(configuration: configuration, ready: ready))
                }
            }
        // A failed TCP connect closes the channel, and the handler fails `ready` as it is removed.
        return bootstrap.connect(host: configuration.host, port: configuration.port).flatMap { _ in ready.futureResult }
    }

    /// Sends `requests` as one pipeline (see the type's documentation) in one write. Each is answered through its
    /// completion, in order. Callable from any thread; from another than the event loop it costs one hand-off for
    /// all of them.
    public func submit(_ requests: [WireRequest]) {
        if eventLoop.inEventLoop {
            handler.value.submit(requests)
        } else {
            let handler = handler
            eventLoop.execute { handler.value.submit(requests) }
        }
    }

    /// Runs one statement, unprepared, and returns its rows: for statements run once (set-up, tests, tools).
    public func query(_ sql: String, _ parameters: [WireParameter] = []) async throws -> [WireRow] {
        try await withCheckedThrowingContinuation { continuation in
            submit([
                WireRequest(sql: sql, parameters: parameters, prepared: false) { continuation.resume(with: $0) }
            ])
        }
    }

    /// Says goodbye to the server and closes the socket. Statements still unanswered fail with
    /// ``WireConnectionError/closed``.
    @discardableResult
    public func close() -> EventLoopFuture<Void> {
        let channel = channel
        var terminate = channel.allocator.buffer(capacity: 5)
        terminate.writeInteger(UInt8(ascii: "X"))
        terminate.writeInteger(Int32(4))
        return channel.writeAndFlush(terminate).flatMapError { _ in channel.eventLoop.makeSucceededVoidFuture() }
            .flatMap { channel.close() }.flatMapError { _ in channel.eventLoop.makeSucceededVoidFuture() }
    }
}

/// The protocol state machine of one connection; lives on the connection's event loop.
final class WireHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        /// Waiting for the one-byte answer to `SSLRequest`.
        case tlsRequested
        case authenticating
        case ready
        case closed
    }

    /// A statement sent and not yet answered (its `CommandComplete` or error not yet received).
    private struct InFlight {
        let completion: @Sendable (Result<[WireRow], any Error>) -> Void
        /// The prepared-statement key this request parsed, forgotten again should it fail or be skipped.
        var parsedKey: String?
        /// Whether this is the last statement of its pipeline (the one the `Sync` follows).
        var endsPipeline = false
        /// Whether its `COPY … FROM STDIN` data went out behind it.
        var sentCopyData = false
    }

    private let configuration: WireConfiguration
    private var ready: EventLoopPromise<WireConnection>?
    private var state = State.authenticating
    private var context: ChannelHandlerContext?
    private var inbound: ByteBuffer?
    private var scram: SCRAMClient?
    private var timeout: Scheduled<Void>?
    private var inFlight = CircularBuffer<InFlight>(initialCapacity: 16)
    /// When the server last sent anything, or statements were last handed over to an idle connection.
    private var lastHeard = NIODeadline.now()
    /// The timer that checks for ``WireConfiguration/answerTimeout`` while statements are outstanding.
    private var answerWatch: Scheduled<Void>?
    /// The rows received so far for the statement at the head of `inFlight`. Kept here rather than in the
    /// element: `CircularBuffer`'s subscript copies an element out and back, so appending to an array inside it
    /// copied every row received before (quadratic in the rows of one answer; a bulk add's `RETURNING` spent
    /// more than half the daemon's time there).
    private var headRows: [WireRow] = []
    /// Named statements this connection has parsed, by parameter types and text; `confirmed` once the server
    /// acknowledged the `Parse` (until then a later pipeline parses the statement unnamed: should the `Parse` fail
    /// or be skipped, the name would not exist).
    private var preparedNames: [String: (name: String, confirmed: Bool)] = [:]
    private var statementNumber = 0

    /// The longest message accepted from the server.
    static let maxMessageLength: Int32 = 1 << 30

    init(configuration: WireConfiguration, ready: EventLoopPromise<WireConnection>) {
        self.configuration = configuration
        self.ready = ready
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        fail(WireConnectionError.closed)
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: configuration.connectTimeout) { [self] in
            fail(WireConnectionError.connectTimeout)
        }
        if case .require = configuration.tls {
            state = .tlsRequested
            var request = context.channel.allocator.buffer(capacity: 8)
            request.writeInteger(Int32(8))
            request.writeInteger(Int32(80_877_103))
            context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        } else {
            sendStartup(context: context)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(WireConnectionError.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastHeard = .now()
        var bytes = unwrapInboundIn(data)
        if state == .tlsRequested {
            guard let answer = bytes.readInteger(as: UInt8.self) else { return }
            guard answer == UInt8(ascii: "S"), case .require(let tls, let hostname) = configuration.tls else {
                return fail(WireConnectionError.tlsUnavailable)
            }
            do {
                let handler = try NIOSSLClientHandler(context: tls, serverHostname: hostname)
                try context.pipeline.syncOperations.addHandler(handler, position: .before(self))
            } catch {
                return fail(error)
            }
            state = .authenticating
            sendStartup(context: context)
            guard bytes.readableBytes == 0 else {
                return fail(WireConnectionError.protocolViolation("data after the TLS answer"))
            }
            return
        }
        var continuing = false
        if var buffered = inbound.take() {
            buffered.writeBuffer(&bytes)
            bytes = buffered
            continuing = true
        }
        while bytes.readableBytes >= 5 {
            let start = bytes.readerIndex
            guard let type = bytes.getInteger(at: start, as: UInt8.self),
                let length = bytes.getInteger(at: start + 1, as: Int32.self)
            else { break }
            // The server never sends a message above 1 GiB (its allocation limit): a larger length is garbage.
            guard length >= 4, length <= Self.maxMessageLength else {
                return fail(WireConnectionError.protocolViolation("message length \(length)"))
            }
            guard bytes.readableBytes >= 1 + Int(length) else { break }
            bytes.moveReaderIndex(forwardBy: 5)
            guard var body = bytes.readSlice(length: Int(length) - 4) else { break }
            continuing = false
            do {
                try handle(type, &body, context: context)
            } catch {
                return fail(error)
            }
            if state == .closed { return }
        }
        if continuing {
            // Still the one incomplete message of the buffer below.
            inbound = bytes
        } else if bytes.readableBytes > 0 {
            // The start of a message whose rest is still to come. It moves to a buffer of its own, sized for the
            // whole message when the header is in: appending the rest then neither copies what is there again
            // (the read buffer is shared with the rows sliced from it) nor grows the buffer step by step, and
            // the rows already answered do not keep this message's bytes alive, nor it theirs.
            let length = bytes.getInteger(at: bytes.readerIndex + 1, as: Int32.self).map { Int($0) + 1 } ?? 5
            var own = context.channel.allocator.buffer(capacity: max(min(length, 64 << 20), bytes.readableBytes))
            own.writeBuffer(&bytes)
            inbound = own
        }
    }

    // MARK: - Sending

    func submit(_ requests: [WireRequest]) {
        guard state == .ready, let context else {
            let error = WireConnectionError.closed
            for request in requests { request.completion(.failure(error)) }
            return
        }
        if inFlight.isEmpty { lastHeard = .now() }
        var buffer = context.channel.allocator.buffer(capacity: 256 * requests.count)
        for request in requests {
            var entry = InFlight(completion: request.completion)
            var name = ""
            var parse = true
            if request.prepared {
                var key = request.sql
                for parameter in request.parameters { key += ",\(parameter.type)" }
                if let known = preparedNames[key] {
                    if known.confirmed {
                        name = known.name
                        parse = false
                    }
                } else if preparedNames.count < WireConnection.preparedStatementLimit {
                    statementNumber += 1
                    name = "w\(statementNumber)"
                    preparedNames[key] = (name, false)
                    entry.parsedKey = key
                }
            }
            if parse {
                Self.message(UInt8(ascii: "P"), into: &buffer) { body in
                    body.writeNullTerminatedString(name)
                    body.writeNullTerminatedString(request.sql)
                    body.writeInteger(Int16(request.parameters.count))
                    for parameter in request.parameters { body.writeInteger(parameter.type) }
                }
            }
            Self.message(UInt8(ascii: "B"), into: &buffer) { body in
                body.writeNullTerminatedString("")
                body.writeNullTerminatedString(name)
                body.writeInteger(Int16(1))
                body.writeInteger(Int16(1))
                body.writeInteger(Int16(request.parameters.count))
                for parameter in request.parameters {
                    if var value = parameter.value {
                        body.writeInteger(Int32(value.readableBytes))
                        body.writeBuffer(&value)
                    } else {
                        body.writeInteger(Int32(-1))
                    }
                }
                body.writeInteger(Int16(1))
                body.writeInteger(Int16(1))
            }
            Self.message(UInt8(ascii: "E"), into: &buffer) { body in
                body.writeNullTerminatedString("")
                body.writeInteger(Int32(0))
            }
            if var data = request.copyData {
                // The server reads this once the statement runs. Should the statement fail first, the server
                // ignores copy messages outside a copy, as the protocol asks of it.
                while data.readableBytes > 0, var piece = data.readSlice(length: min(data.readableBytes, 1 << 20)) {
                    Self.message(UInt8(ascii: "d"), into: &buffer) { $0.writeBuffer(&piece) }
                }
                Self.message(UInt8(ascii: "c"), into: &buffer) { _ in }
                entry.sentCopyData = true
            }
            inFlight.append(entry)
        }
        guard !requests.isEmpty else { return }
        inFlight[inFlight.index(before: inFlight.endIndex)].endsPipeline = true
        Self.message(UInt8(ascii: "S"), into: &buffer) { _ in }
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        if answerWatch == nil { watchAnswers(on: context.eventLoop) }
    }

    /// Appends one frontend message: its type, its length, then what `body` writes.
    private static func message(_ type: UInt8, into buffer: inout ByteBuffer, _ body: (inout ByteBuffer) -> Void) {
        buffer.writeInteger(type)
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(Int32(0))
        body(&buffer)
        buffer.setInteger(Int32(buffer.writerIndex - lengthIndex), at: lengthIndex)
    }

    private func sendStartup(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 128)
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(Int32(0))
        buffer.writeInteger(Int32(196_608))
        var parameters = [("user", configuration.user), ("client_encoding", "UTF8")]
        parameters.append(("application_name", configuration.applicationName))
        if let database = configuration.database { parameters.append(("database", database)) }
        for (key, value) in parameters {
            buffer.writeNullTerminatedString(key)
            buffer.writeNullTerminatedString(value)
        }
        buffer.writeInteger(UInt8(0))
        buffer.setInteger(Int32(buffer.writerIndex - lengthIndex), at: lengthIndex)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func sendPassword(_ bytes: [UInt8], context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: bytes.count + 8)
        Self.message(UInt8(ascii: "p"), into: &buffer) { $0.writeBytes(bytes) }
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    // MARK: - Receiving

    private func handle(_ type: UInt8, _ body: inout ByteBuffer, context: ChannelHandlerContext) throws {
        switch type {
        case UInt8(ascii: "D"):
            guard !inFlight.isEmpty else { throw WireConnectionError.protocolViolation("row without a statement") }
            headRows.append(try Self.row(&body))
        case UInt8(ascii: "Z"):
            if state == .authenticating {
                state = .ready
                timeout?.cancel()
                timeout = nil
                ready?.succeed(WireConnection(channel: context.channel, handler: self))
                ready = nil
                return
            }
        // The end of a pipeline, whose statements were all answered or skipped by now.
        case UInt8(ascii: "C"), UInt8(ascii: "I"):
            guard let answered = inFlight.popFirst() else {
                throw WireConnectionError.protocolViolation("CommandComplete without a statement")
            }
            let rows = headRows
            headRows = []
            answered.completion(.success(rows))
        case UInt8(ascii: "E"):
            let error = WireServerError(fields: Self.fields(&body))
            if state == .authenticating { throw error }
            guard let failed = inFlight.popFirst() else { throw error }
            headRows = []
            if let key = failed.parsedKey { preparedNames[key] = nil }
            failed.completion(.failure(error))
            // The server skips the rest of the pipeline, up to its Sync.
            var last = failed.endsPipeline
            while !last, let skipped = inFlight.popFirst() {
                last = skipped.endsPipeline
                if let key = skipped.parsedKey { preparedNames[key] = nil }
                skipped.completion(.failure(WireStatementSkipped(cause: error)))
            }
        case UInt8(ascii: "R"):
            try authenticate(&body, context: context)
        case UInt8(ascii: "1"):
            // ParseComplete of the statement at the head: its name exists now.
            if let key = inFlight.first?.parsedKey { preparedNames[key]?.confirmed = true }
        case UInt8(ascii: "G"):
            // CopyInResponse. A `COPY … FROM STDIN` sent without its data (a caller's mistake) would wait for
            // data forever: the server passes over the pipeline's Sync during a copy. It is told the copy failed,
            // which fails the statement, and sent the Sync it then waits for. (Were other statements behind it,
            // the server has read them as copy messages already, and ends the connection.)
            guard inFlight.first?.sentCopyData == false else { break }
            var buffer = context.channel.allocator.buffer(capacity: 64)
            Self.message(UInt8(ascii: "f"), into: &buffer) {
                $0.writeNullTerminatedString("COPY FROM STDIN without data (WireRequest.copyData)")
            }
            Self.message(UInt8(ascii: "S"), into: &buffer) { _ in }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        case UInt8(ascii: "2"), UInt8(ascii: "3"), UInt8(ascii: "n"), UInt8(ascii: "t"), UInt8(ascii: "T"),
            UInt8(ascii: "s"),
            // Notices, run-time parameter reports, the cancellation key and notifications concern no statement.
            UInt8(ascii: "N"), UInt8(ascii: "S"), UInt8(ascii: "K"), UInt8(ascii: "A"):
            break
        default:
            throw WireConnectionError.protocolViolation("unexpected message \(Character(Unicode.Scalar(type)))")
        }
    }

    private func authenticate(_ body: inout ByteBuffer, context: ChannelHandlerContext) throws {
        guard state == .authenticating, let code = body.readInteger(as: Int32.self) else {
            throw WireConnectionError.protocolViolation("authentication request out of place")
        }
        func password() throws -> String {
            guard let password = configuration.password else {
                throw WireConnectionError.authentication("the server asks for a password and none is configured")
            }
            return password
        }
        switch code {
        case 0:
            break
        case 3:
            sendPassword(Array(try password().utf8) + [0], context: context)
        case 5:
            guard let salt = body.readBytes(length: 4) else {
                throw WireConnectionError.protocolViolation("MD5 request without salt")
            }
            let answer = md5PasswordMessage(user: configuration.user, password: try password(), salt: salt)
            sendPassword(answer + [0], context: context)
        case 10:
            var mechanisms: [String] = []
            while let mechanism = body.readNullTerminatedString(), !mechanism.isEmpty { mechanisms.append(mechanism) }
            guard mechanisms.contains(SCRAMClient.mechanism) else {
                throw WireConnectionError.authentication("unsupported SASL mechanisms \(mechanisms)")
            }
            let client = SCRAMClient(password: try password())
            scram = client
            var buffer = context.channel.allocator.buffer(capacity: 64)
            Self.message(UInt8(ascii: "p"), into: &buffer) { message in
                message.writeNullTerminatedString(SCRAMClient.mechanism)
                message.writeInteger(Int32(client.clientFirstMessage.count))
                message.writeBytes(client.clientFirstMessage)
            }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        case 11:
            guard var client = scram else { throw WireConnectionError.protocolViolation("SASL continue out of place") }
            let final = try client.clientFinalMessage(serverFirst: Array(body.readableBytesView))
            scram = client
            sendPassword(final, context: context)
        case 12:
            guard let client = scram else { throw WireConnectionError.protocolViolation("SASL final out of place") }
            try client.verify(serverFinal: Array(body.readableBytesView))
            scram = nil
        default:
            throw WireConnectionError.authentication("unsupported authentication method \(code)")
        }
    }

    private static func row(_ body: inout ByteBuffer) throws -> WireRow {
        guard let count = body.readInteger(as: Int16.self), count >= 0 else {
            throw WireConnectionError.protocolViolation("malformed DataRow")
        }
        var cells: [ByteBuffer?] = []
        cells.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let length = body.readInteger(as: Int32.self) else {
                throw WireConnectionError.protocolViolation("malformed DataRow")
            }
            if length < 0 {
                cells.append(nil)
            } else {
                guard let cell = body.readSlice(length: Int(length)) else {
                    throw WireConnectionError.protocolViolation("malformed DataRow")
                }
                cells.append(cell)
            }
        }
        return WireRow(cells: cells)
    }

    private static func fields(_ body: inout ByteBuffer) -> [UInt8: String] {
        var fields: [UInt8: String] = [:]
        while let code = body.readInteger(as: UInt8.self), code != 0, let value = body.readNullTerminatedString() {
            fields[code] = value
        }
        return fields
    }

    /// Ends the connection after a failure: the connection attempt and every unanswered statement fail.
    /// Checks, ``WireConfiguration/answerTimeout`` after the server was last heard from, that it has been heard
    /// from since or that nothing is outstanding; one timer per connection, rescheduled only when it fires.
    private func watchAnswers(on eventLoop: any EventLoop) {
        answerWatch = eventLoop.assumeIsolated().scheduleTask(deadline: lastHeard + configuration.answerTimeout) {
            [self] in
            answerWatch = nil
            guard state != .closed, !inFlight.isEmpty else { return }
            if NIODeadline.now() - lastHeard >= configuration.answerTimeout {
                fail(WireConnectionError.answerTimeout)
            } else {
                watchAnswers(on: eventLoop)
            }
        }
    }

    private func fail(_ error: any Error) {
        let wasOpen = state != .closed
        state = .closed
        timeout?.cancel()
        timeout = nil
        answerWatch?.cancel()
        answerWatch = nil
        if let ready {
            self.ready = nil
            ready.fail(error)
        }
        let unanswered = inFlight
        inFlight.removeAll()
        headRows = []
        let reported =
            error is WireServerError || error as? WireConnectionError == .answerTimeout
            ? error : WireConnectionError.closed
        for statement in unanswered { statement.completion(.failure(reported)) }
        if wasOpen { context?.close(promise: nil) }
    }
}
