import Foundation
import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/1.1 response as received.
public struct HTTPTestResponse: Sendable {
    public let status: Int
    /// Header names lower-cased; repeated headers joined with ", ".
    public let headers: [String: String]
    public let body: [UInt8]

    public var text: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// A deliberately plain HTTP/1.1 client over a TCP socket (or TLS): every header is exactly what the test sends
/// (a `Host` of its choice or none at all), one request per connection, chunked bodies decoded.
public struct HTTPTestClient: Sendable {
    public let port: Int
    /// When set, the request goes over TLS, trusting only the certificates in this PEM file.
    public let trustRootsFile: String?

    public init(port: Int, trustRootsFile: String? = nil) {
        self.port = port
        self.trustRootsFile = trustRootsFile
    }

    public enum Failure: Error, CustomStringConvertible {
        case connect(String)
        case malformed(String)
        public var description: String {
            switch self {
            case .connect(let detail): return "connect: \(detail)"
            case .malformed(let detail): return "malformed response: \(detail)"
            }
        }
    }

    /// Sends a request. `host` nil sends no `Host` header; `body` is sent with `Content-Length`.
    public func request(
        _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
        host: String? = "127.0.0.1"
    ) throws -> HTTPTestResponse {
        var head = "\(method) \(path) HTTP/1.1\r\n"
        if let host { head += "Host: \(host):\(port)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "Connection: close\r\n\r\n"
        var outgoing = Array(head.utf8)
        if let body { outgoing += body }
        let received = try trustRootsFile.map { try exchangeOverTLS(outgoing, trusting: $0) } ?? exchange(outgoing)
        return try Self.parse(received, method: method)
    }

    /// Writes the request on a plain socket and reads until the server closes.
    private func exchange(_ outgoing: [UInt8]) throws -> [UInt8] {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure.connect("socket") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw Failure.connect(String(cString: strerror(errno))) }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var offset = 0
        while offset < outgoing.count {
            let written = outgoing[offset...].withUnsafeBytes {
                send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw Failure.connect("send failed") }
            offset += written
        }

        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received += chunk[..<count]
        }
        return received
    }

    /// Writes the request over TLS to `127.0.0.1` (verified against the certificate's IP address) and reads
    /// until the server closes. A failed handshake throws.
    private func exchangeOverTLS(_ outgoing: [UInt8], trusting rootsFile: String) throws -> [UInt8] {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file(rootsFile)
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let done = group.any().makePromise(of: [UInt8].self)
        let channel = try ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(done: done))
                }
            }
            .connect(host: "127.0.0.1", port: port).wait()
        channel.writeAndFlush(ByteBuffer(bytes: outgoing), promise: nil)
        return try done.futureResult.wait()
    }

    /// Collects every byte until the connection ends; an error (a refused handshake) fails the collection.
    private final class ResponseCollector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<[UInt8]>
        var received: [UInt8] = []

        init(done: EventLoopPromise<[UInt8]>) { self.done = done }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += unwrapInboundIn(data).readableBytesView
        }

        func channelInactive(context: ChannelHandlerContext) { done.succeed(received) }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A server closing without close_notify after `Connection: close` is an ordinary end here.
            if let error = error as? NIOSSLError, case .uncleanShutdown = error { return }
            done.fail(error)
            context.close(promise: nil)
        }
    }

    /// Convenience for JSON requests with the preferred media type.
    public func json(
        _ method: String, _ path: String, _ body: String? = nil,
        contentType: String = "application/vnd.diffeo.coordinate.v1+json", accept: String? = nil
    ) throws -> HTTPTestResponse {
        var headers: [(String, String)] = []
        if body != nil || method == "POST" || method == "PUT" { headers.append(("Content-Type", contentType)) }
        if let accept { headers.append(("Accept", accept)) }
        return try request(
            method, path, headers: headers,
            body: body.map { Array($0.utf8) } ?? (method == "POST" || method == "PUT" ? [] : nil))
    }

    static func parse(_ bytes: [UInt8], method: String) throws -> HTTPTestResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = (0..<max(0, bytes.count - 3)).first(where: { Array(bytes[$0..<$0 + 4]) == separator }) else {
            throw Failure.malformed("no header end in \(bytes.count) bytes")
        }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure.malformed(lines[0]) }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = headers[name].map { $0 + ", " + value } ?? value
        }
        var body = Array(bytes[(end + 4)...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var decoded: [UInt8] = []
            var index = 0
            while index < body.count {
                guard let lineEnd = (index..<body.count - 1).first(where: { body[$0] == 13 && body[$0 + 1] == 10 }),
                    let size = Int(String(decoding: body[index..<lineEnd], as: UTF8.self), radix: 16)
                else { throw Failure.malformed("bad chunk") }
                if size == 0 { break }
                decoded += body[(lineEnd + 2)..<(lineEnd + 2 + size)]
                index = lineEnd + 2 + size + 2
            }
            body = decoded
        }
        return HTTPTestResponse(status: status, headers: headers, body: body)
    }
}
