import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import PostgresWire

/// Answers whatever a client sends first with fixed bytes: a server gone wrong, which a real PostgreSQL cannot be
/// made to be. The client must fail the connection with a clear error, not crash or wait forever.
private final class CannedAnswer: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let answer: [UInt8]

    init(_ answer: [UInt8]) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: answer)), promise: nil)
    }
}

/// Completes the startup without asking for a password, then answers nothing: a server gone silent with its
/// socket open.
private final class SilentAfterStartup: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let started = Atomic(false)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        // AuthenticationOk, then ReadyForQuery (idle).
        let answer: [UInt8] = [
            UInt8(ascii: "R"), 0, 0, 0, 8, 0, 0, 0, 0, UInt8(ascii: "Z"), 0, 0, 0, 5, UInt8(ascii: "I"),
        ]
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: answer)), promise: nil)
    }
}

@Suite("PostgreSQL wire client against a misbehaving server")
struct MisbehavingServerTests {
    /// Connects to a server that sends `answer` after the startup message, and returns how the connection failed.
    private func connectionError(_ answer: [UInt8], timeout: TimeAmount = .seconds(10)) async throws -> (any Error)? {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CannedAnswer(answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let configuration = WireConfiguration(
            host: "127.0.0.1", port: server.localAddress?.port ?? 0, user: "u", password: "p", database: nil,
            connectTimeout: timeout)
        var failure: (any Error)?
        do {
            let connection = try await WireConnection.connect(
                to: configuration, on: MultiThreadedEventLoopGroup.singleton.next()
            ).get()
            try await connection.close().get()
        } catch {
            failure = error
        }
        try await server.close()
        return failure
    }

    private static func message(_ type: Character, length: Int32, _ body: [UInt8] = []) -> [UInt8] {
        var bytes = [type.asciiValue!]
        withUnsafeBytes(of: length.bigEndian) { bytes += $0 }
        return bytes + body
    }

    @Test("a message longer than any PostgreSQL sends is a protocol violation, not an allocation")
    func hugeLength() async throws {
        let error = try await connectionError(Self.message("R", length: Int32.max, [0, 0, 0, 0]))
        #expect(error as? WireConnectionError == .protocolViolation("message length \(Int32.max)"))
    }

    @Test("a message no server sends during startup is a protocol violation")
    func unexpectedMessage() async throws {
        let error = try await connectionError(Self.message("Q", length: 4))
        #expect(error as? WireConnectionError == .protocolViolation("unexpected message Q"))
    }

    @Test("an authentication method the client does not speak is refused by name")
    func unsupportedAuthentication() async throws {
        // AuthenticationGSS (7).
        let error = try await connectionError(Self.message("R", length: 8, [0, 0, 0, 7]))
        #expect(error as? WireConnectionError == .authentication("unsupported authentication method 7"))
    }

    @Test("a server that stops in the middle of a message runs into the connect timeout")
    func truncated() async throws {
        // A header announcing 100 bytes, then nothing more, the socket left open. The timeout also bounds the TCP
        // connect, which a loaded test process once took longer than 300 ms to see completed: two seconds.
        let error = try await connectionError(Self.message("R", length: 100, [0, 0]), timeout: .seconds(2))
        #expect(error as? WireConnectionError == .connectTimeout)
    }

    @Test(
        "statements a silent server leaves unanswered fail after the answer timeout, and the connection closes",
        .timeLimit(.minutes(1)))
    func silentServer() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(SilentAfterStartup())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        var configuration = WireConfiguration(
            host: "127.0.0.1", port: server.localAddress?.port ?? 0, user: "u", password: nil, database: nil)
        configuration.answerTimeout = .milliseconds(500)
        let connection = try await WireConnection.connect(
            to: configuration, on: MultiThreadedEventLoopGroup.singleton.next()
        ).get()
        // Idle for longer than the timeout first: only time with a statement outstanding counts.
        try await Task.sleep(for: .milliseconds(700))
        #expect(!connection.isClosed)
        await #expect(throws: WireConnectionError.answerTimeout) { try await connection.query("SELECT 1") }
        try await connection.closeFuture.get()
        try await server.close()
    }
}
