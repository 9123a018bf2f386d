import CBOR
import Foundation
import Locking
import NIOCore
import NIOPosix

/// A TCP client for protocol tests: it sends exact bytes and reads exact CBOR messages, so tests can split,
/// merge, pipeline and corrupt the stream at will.
///
/// It runs on SwiftNIO's event loops: every wait (connect, send, receive) suspends the calling task instead of
/// blocking a thread, so any number of connections can wait at once without starving Swift's cooperative pool
/// (two threads on these machines) or the in-process daemons that share it. Like a blocking socket it reads only
/// while a receive waits (no automatic reads): what the test does not read stays in the kernel's buffers, so a
/// server sees a client that does not read as exactly that.
public final class RawConnection: Sendable {
    public struct ConnectionError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    private let channel: any Channel
    private let inbound: InboundBytes
    /// How long a receive waits for the server before it throws.
    public let receiveTimeout: Duration
    private struct Reader {
        var buffer: [UInt8] = []
        var framer = CBORStreamFramer(maxMessageBytes: 1 << 30, maxDepth: 100_000)
        var nextID: UInt64 = 1
    }
    private let reader = Locked(Reader())

    /// Connects to `host:port`; receives give up after `receiveTimeout` seconds.
    public init(host: String = "127.0.0.1", port: Int, receiveTimeout: Double = 30) async throws {
        let inbound = InboundBytes()
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelOption(.autoRead, value: false)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(InboundBytes.Handler(inbound))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw ConnectionError(description: "connect to \(host):\(port): \(error)")
        }
        let channel = self.channel
        inbound.requestRead = { channel.read() }
        self.inbound = inbound
        self.receiveTimeout = .milliseconds(Int64(receiveTimeout * 1000))
    }

    deinit { channel.close(promise: nil) }

    /// Writes all bytes (suspending while the server does not read them).
    public func send(_ bytes: [UInt8]) async throws {
        do {
            try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
        } catch {
            throw ConnectionError(description: "send failed: \(error)")
        }
    }

    /// Closes the write side (end of stream for the server); receiving goes on.
    public func shutdownWrite() async {
        try? await channel.close(mode: .output)
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }

    /// The next complete message, or nil when the peer closed the connection. Throws on timeout.
    public func receiveMessage(timeout: Duration? = nil) async throws -> [UInt8]? {
        let deadline = ContinuousClock.now + (timeout ?? receiveTimeout)
        while true {
            let framed: Result<[UInt8]?, ConnectionError> = reader.withLock { reader in
                guard !reader.buffer.isEmpty else { return .success(nil) }
                let event = reader.buffer.withUnsafeBytes { reader.framer.next(in: $0) }
                switch event {
                case .message(let length):
                    let message = Array(reader.buffer[..<length])
                    reader.buffer.removeFirst(length)
                    reader.framer.reset()
                    return .success(message)
                case .needMoreData:
                    return .success(nil)
                default:
                    return .failure(ConnectionError(description: "server sent malformed CBOR: \(event)"))
                }
            }
            if let message = try framed.get() { return message }
            switch await inbound.next(until: deadline) {
            case .bytes(let bytes): reader.withLock { $0.buffer += bytes }
            case .ended: return nil
            case .timedOut: throw ConnectionError(description: "receive timed out")
            }
        }
    }

    /// The next bytes the peer sends, whatever they are (not CBOR: an HTTP response, say), as text; empty at the end
    /// of the stream. Throws on timeout.
    public func receiveRaw(timeout: Duration? = nil) async throws -> String {
        let buffered = reader.withLock { reader in
            defer { reader.buffer.removeAll() }
            return reader.buffer
        }
        if !buffered.isEmpty { return String(decoding: buffered, as: UTF8.self) }
        switch await inbound.next(until: ContinuousClock.now + (timeout ?? receiveTimeout)) {
        case .bytes(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .ended: return ""
        case .timedOut: throw ConnectionError(description: "receive timed out")
        }
    }

    /// Everything the peer sends until it closes the connection, nothing arrives for `timeout`, or what arrived
    /// ends with `terminator`; `ended` tells whether the peer closed.
    public func receiveAll(
        timeout: Duration? = nil, until terminator: [UInt8]? = nil
    ) async -> (
        bytes: [UInt8], ended: Bool
    ) {
        var received = reader.withLock { reader in
            defer { reader.buffer.removeAll() }
            return reader.buffer
        }
        while true {
            if let terminator, received.count >= terminator.count,
                received.suffix(terminator.count).elementsEqual(terminator)
            {
                return (received, false)
            }
            switch await inbound.next(until: ContinuousClock.now + (timeout ?? receiveTimeout)) {
            case .bytes(let bytes): received += bytes
            case .ended: return (received, true)
            case .timedOut: return (received, false)
            }
        }
    }

    /// The next message, decoded (wrapped or bare), or nil when the peer closed.
    public func receiveValue(timeout: Duration? = nil) async throws -> CBORValue? {
        guard let message = try await receiveMessage(timeout: timeout) else { return nil }
        let decoded = message.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 100_000) }
        guard case .value(let value, _) = decoded else { throw ConnectionError(description: "undecodable: \(decoded)") }
        return value
    }

    /// Whether the server closes the connection (end of stream or reset) within the receive timeout, without
    /// sending anything further.
    public func closedByPeer(timeout: Duration? = nil) async -> Bool {
        (try? await receiveMessage(timeout: timeout)) == .some(nil)
    }

    /// Whether the server reset the connection (rather than closing it with end-of-stream) within the receive
    /// timeout, without sending anything further.
    public func resetByPeer(timeout: Duration? = nil) async -> Bool {
        let deadline = ContinuousClock.now + (timeout ?? receiveTimeout)
        guard case .ended(let reason) = await inbound.next(until: deadline) else { return false }
        return reason == .reset
    }

    /// Builds a request the way the Python client does: byte-string keys and method, tag-24 envelope.
    public func request(_ method: String, _ params: CBORValue = .array([]), id: UInt64? = nil) -> [UInt8] {
        let requestID = reader.withLock { reader in
            let requestID = id ?? reader.nextID
            reader.nextID = max(reader.nextID, requestID) + 1
            return requestID
        }
        return CBOREncoder.encodeEnvelope(
            .map(CBORMap([("method", .bytes(method)), ("params", params), ("id", .unsigned(requestID))])))
    }

    /// Sends one request and returns the decoded response map.
    public func call(_ method: String, _ params: CBORValue = .array([])) async throws -> CBORMap {
        try await send(request(method, params))
        guard let response = try await receiveValue() else { throw ConnectionError(description: "connection closed") }
        guard case .map(let map) = response else { throw ConnectionError(description: "response is not a map") }
        return map
    }

    /// Sends one request and returns its `result`, failing on an error response.
    public func result(_ method: String, _ params: CBORValue = .array([])) async throws -> CBORValue {
        let response = try await call(method, params)
        if let error = response["error"] {
            throw ConnectionError(description: "error response: \(PythonRepr.renderString(error))")
        }
        guard let result = response["result"] else { throw ConnectionError(description: "no result key") }
        return result
    }
}

/// Bytes a connection received, handed from its event loop to the task reading them.
final class InboundBytes: Sendable {
    enum Ending: Sendable, Equatable {
        case endOfStream
        case reset
        case failed(String)
    }

    enum Event: Sendable {
        case bytes([UInt8])
        case ended(Ending)
        case timedOut
    }

    private struct State {
        var pending: [UInt8] = []
        var ending: Ending?
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Locked(State())
    /// Asks the channel for more bytes, when it does not read on its own (set before any read).
    nonisolated(unsafe) var requestRead: (@Sendable () -> Void)?
    // nonisolated(unsafe): written once, by the owner, before the first `next`; only read afterwards.

    /// What arrived since the last call, or the end of the stream; suspends until one of them or `deadline`.
    func next(until deadline: ContinuousClock.Instant) async -> Event {
        while true {
            if let event = take() { return event }
            if ContinuousClock.now >= deadline { return .timedOut }
            requestRead?()
            await waitForArrival(until: deadline)
        }
    }

    private func take() -> Event? {
        state.withLock { state in
            if !state.pending.isEmpty {
                defer { state.pending.removeAll(keepingCapacity: true) }
                return .bytes(state.pending)
            }
            return state.ending.map(Event.ended)
        }
    }

    /// Returns when something arrives or at `deadline`, whichever is first.
    private func waitForArrival(until deadline: ContinuousClock.Instant) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let ready = self.state.withLock { state in
                            if !state.pending.isEmpty || state.ending != nil || Task.isCancelled { return true }
                            state.waiter = continuation
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                } onCancel: {
                    self.state.withLock { state in
                        defer { state.waiter = nil }
                        return state.waiter
                    }?.resume()
                }
            }
            group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
            await group.next()
            group.cancelAll()
        }
    }

    private func wake(_ change: (inout State) -> Void) {
        state.withLock { state in
            change(&state)
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }

    /// Feeds an ``InboundBytes`` from the channel.
    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let inbound: InboundBytes
        /// Errors that only mean the peer went away (a TLS peer closing without close_notify, say).
        let endsStream: @Sendable (any Error) -> Bool

        init(_ inbound: InboundBytes, endsStream: @escaping @Sendable (any Error) -> Bool = { _ in false }) {
            self.inbound = inbound
            self.endsStream = endsStream
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            inbound.wake { $0.pending += bytes }
        }

        func channelInactive(context: ChannelHandlerContext) {
            inbound.wake { if $0.ending == nil { $0.ending = .endOfStream } }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            let ending: Ending =
                (error as? IOError)?.errnoCode == ECONNRESET
                ? .reset : endsStream(error) ? .endOfStream : .failed("\(error)")
            inbound.wake { if $0.ending == nil { $0.ending = ending } }
            context.close(promise: nil)
        }
    }
}

extension CBORMap {
    /// The error message of an error response, as a string.
    public var errorMessage: String? {
        guard case .map(let error)? = self["error"], let message = error["message"]?.stringOctets else { return nil }
        return String(decoding: message, as: UTF8.self)
    }
}
