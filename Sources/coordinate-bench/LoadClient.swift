import CBOR
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Drives one connection with a fixed request, keeping `depth` requests outstanding, and counts responses.
/// Responses are only framed, never decoded, so the client costs the same against every server.
final class PipelinedLoadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let depth: Int
    private let counter: NIOLockedValueBox<Int>
    private var framer = CBORStreamFramer(maxMessageBytes: 1 << 30, maxDepth: 1 << 20)
    private var buffer: ByteBuffer?
    private var completedLocally = 0

    init(request: [UInt8], depth: Int, counter: NIOLockedValueBox<Int>) {
        self.request = ByteBuffer(bytes: request)
        self.depth = depth
        self.counter = counter
    }

    func channelActive(context: ChannelHandlerContext) {
        for _ in 0..<depth { context.write(wrapOutboundOut(request), promise: nil) }
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        var responses = 0
        while var current = buffer, current.readableBytes > 0 {
            let event = current.withUnsafeReadableBytes { framer.next(in: $0) }
            guard case .message(let length) = event else { break }
            current.moveReaderIndex(forwardBy: length)
            buffer = current.readableBytes > 0 ? current : nil
            framer.reset()
            responses += 1
        }
        if var current = buffer, current.readerIndex > 65536 {
            current.discardReadBytes()
            buffer = current
        }
        if responses > 0 {
            for _ in 0..<responses { context.write(wrapOutboundOut(request), promise: nil) }
            context.flush()
            completedLocally += responses
            if completedLocally >= 64 {
                let done = completedLocally
                counter.withLockedValue { $0 += done }
                completedLocally = 0
            }
        }
    }
}

/// Runs `connections` pipelined load connections against `port` and measures responses per second.
enum LoadRunner {
    static func measure(
        port: Int, request: [UInt8], connections: Int, depth: Int, warmup: Double, duration: Double,
        group: any EventLoopGroup
    ) async throws -> Double {
        let counter = NIOLockedValueBox(0)
        var channels: [any Channel] = []
        for _ in 0..<connections {
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            PipelinedLoadHandler(request: request, depth: depth, counter: counter))
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
            channels.append(channel)
        }
        try await Task.sleep(for: .seconds(warmup))
        let startCount = counter.withLockedValue { $0 }
        let start = ContinuousClock.now
        try await Task.sleep(for: .seconds(duration))
        let endCount = counter.withLockedValue { $0 }
        let elapsed = ContinuousClock.now - start
        for channel in channels { try? await channel.close() }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Double(endCount - startCount) / seconds
    }
}

/// A bare SwiftNIO server with the same framing as the daemon: it frames one CBOR item at a time and answers
/// each with a fixed tag-24 reply. It is the yardstick for what the socket layer alone costs.
final class EchoFramingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let reply: ByteBuffer
    private var framer = CBORStreamFramer(maxMessageBytes: 64 << 20, maxDepth: 256)
    private var buffer: ByteBuffer?
    private var wrote = false

    init(reply: [UInt8]) { self.reply = ByteBuffer(bytes: reply) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        while var current = buffer, current.readableBytes > 0 {
            let event = current.withUnsafeReadableBytes { framer.next(in: $0) }
            guard case .message(let length) = event else { break }
            current.moveReaderIndex(forwardBy: length)
            buffer = current.readableBytes > 0 ? current : nil
            framer.reset()
            context.write(wrapOutboundOut(reply), promise: nil)
            wrote = true
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wrote {
            wrote = false
            context.flush()
        }
    }
}

enum EchoServer {
    static func start(reply: [UInt8], group: any EventLoopGroup) async throws -> (any Channel, Int) {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoFramingHandler(reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (channel, channel.localAddress!.port!)
    }
}

/// The socket-layer ceiling for the get+finish cycle: a bare NIO server with the daemon's framing that answers
/// the i-th message of a connection with a fixed `get_work` reply when i is even and a fixed `(true, None)`
/// when i is odd, doing no job-queue work at all.
final class AlternatingReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let replies: [ByteBuffer]
    private var framer = CBORStreamFramer(maxMessageBytes: 64 << 20, maxDepth: 256)
    private var buffer: ByteBuffer?
    private var count = 0
    private var wrote = false

    init(replies: [[UInt8]]) { self.replies = replies.map { ByteBuffer(bytes: $0) } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        while var current = buffer, current.readableBytes > 0 {
            let event = current.withUnsafeReadableBytes { framer.next(in: $0) }
            guard case .message(let length) = event else { break }
            current.moveReaderIndex(forwardBy: length)
            buffer = current.readableBytes > 0 ? current : nil
            framer.reset()
            context.write(wrapOutboundOut(replies[count % replies.count]), promise: nil)
            count += 1
            wrote = true
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wrote {
            wrote = false
            context.flush()
        }
    }
}

enum CeilingServer {
    static func start(group: any EventLoopGroup) async throws -> (any Channel, Int) {
        let getWork = CBOREncoder.encodeEnvelope(
            .map(
                CBORMap([
                    ("id", 1), ("result", .tuple([.tuple(["bench", "u0000000", .map(CBORMap([("x", 1)]))]), .null])),
                ])))
        let done = CBOREncoder.encodeEnvelope(.map(CBORMap([("id", 2), ("result", .tuple([true, .null]))])))
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AlternatingReplyHandler(replies: [getWork, done]))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (channel, channel.localAddress!.port!)
    }
}
