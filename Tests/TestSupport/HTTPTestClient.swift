import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// One HTTP/1.1 response as received.
public struct HTTPTestResponse: Sendable {
    public let status: Int
    /// Header names lower-cased; repeated headers joined with ", ".
    public let headers: [String: String]
    public let body: [UInt8]

    public var text: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// A deliberately plain HTTP/1.1 client over TCP (or TLS): every header is exactly what the test sends (a `Host`
/// of its choice or none at all), one request per connection, chunked bodies decoded. It runs on SwiftNIO, so a
/// request suspends the calling task rather than blocking a thread.
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
    ) async throws -> HTTPTestResponse {
        var head = "\(method) \(path) HTTP/1.1\r\n"
        if let host { head += "Host: \(host):\(port)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "Connection: close\r\n\r\n"
        var outgoing = Array(head.utf8)
        if let body { outgoing += body }
        return try Self.parse(try await exchange(outgoing), method: method)
    }

    /// Writes the request (over TLS to `127.0.0.1`, verified against the certificate's IP address, when
    /// `trustRootsFile` is set) and reads until the server closes. A refused handshake throws.
    private func exchange(_ outgoing: [UInt8]) async throws -> [UInt8] {
        let context = try trustRootsFile.map { file in
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .file(file)
            return try NIOSSLContext(configuration: configuration)
        }
        let inbound = InboundBytes()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let context {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: context, serverHostname: nil))
                        }
                        // A server closing without close_notify after `Connection: close` is an ordinary end.
                        try channel.pipeline.syncOperations.addHandler(
                            InboundBytes.Handler(inbound) { error in
                                if let error = error as? NIOSSLError, case .uncleanShutdown = error { return true }
                                return false
                            })
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
        } catch {
            throw Failure.connect("\(error)")
        }
        defer { channel.close(promise: nil) }
        // A server may answer (413, say) and close before it has read a large body: then the write fails, and
        // the answer is still there to read.
        var writeError: (any Error)?
        do {
            try await channel.writeAndFlush(ByteBuffer(bytes: outgoing))
        } catch {
            writeError = error
        }
        let deadline = ContinuousClock.now + .seconds(60)
        var received: [UInt8] = []
        while true {
            switch await inbound.next(until: deadline) {
            case .bytes(let bytes): received += bytes
            case .ended(.endOfStream), .ended(.reset):
                if received.isEmpty, let writeError { throw Failure.connect("send failed: \(writeError)") }
                return received
            case .ended(.failed(let reason)): throw Failure.connect(reason)
            case .timedOut: throw Failure.malformed("no end of response within 60 s (\(received.count) bytes)")
            }
        }
    }

    /// Convenience for JSON requests with the preferred media type.
    public func json(
        _ method: String, _ path: String, _ body: String? = nil,
        contentType: String = "application/vnd.diffeo.coordinate.v1+json", accept: String? = nil
    ) async throws -> HTTPTestResponse {
        var headers: [(String, String)] = []
        if body != nil || method == "POST" || method == "PUT" { headers.append(("Content-Type", contentType)) }
        if let accept { headers.append(("Accept", accept)) }
        return try await request(
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
