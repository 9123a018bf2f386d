import CBOR
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Requests encoded exactly as the Python `coordinate` client encodes them: a tag-24 envelope around
/// `{b'params': […], b'id': n, b'method': b'…'}` with byte-string keys, method and names.
enum PythonStyle {
    static func request(_ method: String, _ params: [CBORValue], id: UInt64) -> [UInt8] {
        CBOREncoder.encodeEnvelope(
            .map(CBORMap([("params", .array(params)), ("id", .unsigned(id)), ("method", .bytes(method))])))
    }
}

/// A minimal asynchronous CBOR-RPC client over one NIO channel: one request at a time, like the Python client.
final class BenchConnection: @unchecked Sendable {
    // @unchecked Sendable: `pending` is only touched on the channel's event loop (handler callbacks) and by
    // `call`, which hops there before touching it.
    let channel: any Channel
    private let handler: ResponseHandler
    private var nextID: UInt64 = 1

    private init(channel: any Channel, handler: ResponseHandler) {
        self.channel = channel
        self.handler = handler
    }

    static func connect(host: String, port: Int, group: any EventLoopGroup) async throws -> BenchConnection {
        let handler = ResponseHandler()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: host, port: port).get()
        return BenchConnection(channel: channel, handler: handler)
    }

    /// Sends one request and returns the decoded `result` (throws on an error response).
    func call(_ method: String, _ params: [CBORValue]) async throws -> CBORValue {
        let id = nextID
        nextID += 1
        let bytes = PythonStyle.request(method, params, id: id)
        let promise = channel.eventLoop.makePromise(of: CBORValue.self)
        let handler = self.handler
        channel.eventLoop.execute { handler.enqueue(promise) }
        channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
        let response = try await promise.futureResult.get()
        guard case .map(let map) = response else { throw BenchError("response is not a map") }
        if let result = map["result"] { return result }
        throw BenchError("error response: \(PythonRepr.renderString(map["error"] ?? .null))")
    }

    func close() async { try? await channel.close() }

    /// Frames responses and completes the oldest outstanding promise with each.
    final class ResponseHandler: ChannelInboundHandler, @unchecked Sendable {
        // @unchecked Sendable: every member is used only on the channel's event loop.
        typealias InboundIn = ByteBuffer
        private var framer = CBORStreamFramer(maxMessageBytes: 1 << 30, maxDepth: 1 << 16)
        private var buffer: ByteBuffer?
        private var waiting: [EventLoopPromise<CBORValue>] = []
        private var head = 0

        func enqueue(_ promise: EventLoopPromise<CBORValue>) { waiting.append(promise) }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
            while var current = buffer, current.readableBytes > 0 {
                let event = current.withUnsafeReadableBytes { framer.next(in: $0) }
                guard case .message(let length) = event else { break }
                let message = current.readSlice(length: length)!
                buffer = current.readableBytes > 0 ? current : nil
                framer.reset()
                let decoded = message.withUnsafeReadableBytes { CBORMessage.decode($0, maxDepth: 1 << 16) }
                guard head < waiting.count else { continue }
                let promise = waiting[head]
                head += 1
                if head > 1024 {
                    waiting.removeFirst(head)
                    head = 0
                }
                if case .value(let value, _) = decoded {
                    promise.succeed(value)
                } else {
                    promise.fail(BenchError("undecodable response"))
                }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            for promise in waiting[head...] { promise.fail(BenchError("connection closed")) }
            waiting.removeAll()
            head = 0
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Latency samples in nanoseconds.
struct LatencyRecorder: Sendable {
    var samples: [Int64] = []

    mutating func record(_ duration: Duration) {
        samples.append(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    static func percentile(_ samples: [Int64], _ fraction: Double) -> Double {
        guard !samples.isEmpty else { return .nan }
        let sorted = samples.sorted()
        let index = min(sorted.count - 1, Int(Double(sorted.count - 1) * fraction))
        return Double(sorted[index]) / 1e6
    }
}

/// The reference workload's unit keys, `u%07d` as bytes, without going through `String(format:)`.
enum ReferenceKeys {
    static func key(_ index: Int) -> [UInt8] {
        var key: [UInt8] = [UInt8(ascii: "u"), 0, 0, 0, 0, 0, 0, 0]
        var value = index
        for position in stride(from: 7, through: 1, by: -1) {
            key[position] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
        }
        return key
    }
}
