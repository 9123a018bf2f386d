import CBOR
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client for protocol tests: it sends exact bytes and reads exact CBOR messages, so tests can
/// split, merge, pipeline and corrupt the stream at will.
public final class RawConnection: @unchecked Sendable {
    // @unchecked Sendable: a connection is used by one test task at a time; the descriptor is set only in init.
    public private(set) var descriptor: Int32
    private var buffer: [UInt8] = []
    private var framer = CBORStreamFramer(maxMessageBytes: 1 << 30, maxDepth: 100_000)
    private var nextID: UInt64 = 1

    public struct ConnectionError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(host: String = "127.0.0.1", port: Int, receiveTimeout: Double = 30) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ConnectionError(description: "socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(descriptor)
            // A class whose init throws after every property is set still runs deinit: never close twice (the
            // number may already belong to someone else, such as an in-process NIO channel).
            descriptor = -1
            throw ConnectionError(description: "connect to \(host):\(port): \(String(cString: strerror(code)))")
        }
        var one: Int32 = 1
        setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setTimeout(receiveTimeout)
    }

    deinit { if descriptor >= 0 { Glibc.close(descriptor) } }

    public func setTimeout(_ seconds: Double) {
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1e6))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes all bytes.
    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else {
                throw ConnectionError(description: "send failed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }

    /// Closes the write side (end of stream for the server).
    public func shutdownWrite() { shutdown(descriptor, Int32(SHUT_WR)) }

    /// The next complete message, or nil when the peer closed the connection. Throws on timeout.
    public func receiveMessage() throws -> [UInt8]? {
        while true {
            if !buffer.isEmpty {
                let event = buffer.withUnsafeBytes { framer.next(in: $0) }
                switch event {
                case .message(let length):
                    let message = Array(buffer[..<length])
                    buffer.removeFirst(length)
                    framer.reset()
                    return message
                case .needMoreData: break
                default: throw ConnectionError(description: "server sent malformed CBOR: \(event)")
                }
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let received = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if received == 0 { return nil }
            if received < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { throw ConnectionError(description: "receive timed out") }
                if errno == ECONNRESET { return nil }
                throw ConnectionError(description: "recv failed: \(String(cString: strerror(errno)))")
            }
            buffer.append(contentsOf: chunk[..<received])
        }
    }

    /// The next message, decoded (wrapped or bare), or nil when the peer closed.
    public func receiveValue() throws -> CBORValue? {
        guard let message = try receiveMessage() else { return nil }
        let decoded = message.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 100_000) }
        guard case .value(let value, _) = decoded else { throw ConnectionError(description: "undecodable: \(decoded)") }
        return value
    }

    /// Whether the server closes the connection (end of stream or reset) within the receive timeout, without
    /// sending anything further.
    public func closedByPeer() -> Bool {
        (try? receiveMessage()) == .some(nil)
    }

    /// Whether the server reset the connection (rather than closing it with end-of-stream) within the receive
    /// timeout, without sending anything further.
    public func resetByPeer() -> Bool {
        var byte: UInt8 = 0
        let received = recv(descriptor, &byte, 1, 0)
        return received < 0 && errno == ECONNRESET
    }

    /// Builds a request the way the Python client does: byte-string keys and method, tag-24 envelope.
    public func request(_ method: String, _ params: CBORValue = .array([]), id: UInt64? = nil) -> [UInt8] {
        let requestID = id ?? nextID
        nextID = max(nextID, requestID) + 1
        return CBOREncoder.encodeEnvelope(
            .map(CBORMap([("method", .bytes(method)), ("params", params), ("id", .unsigned(requestID))])))
    }

    /// Sends one request and returns the decoded response map.
    public func call(_ method: String, _ params: CBORValue = .array([])) throws -> CBORMap {
        try send(request(method, params))
        guard let response = try receiveValue() else { throw ConnectionError(description: "connection closed") }
        guard case .map(let map) = response else { throw ConnectionError(description: "response is not a map") }
        return map
    }

    /// Sends one request and returns its `result`, failing on an error response.
    public func result(_ method: String, _ params: CBORValue = .array([])) throws -> CBORValue {
        let response = try call(method, params)
        if let error = response["error"] {
            throw ConnectionError(description: "error response: \(PythonRepr.renderString(error))")
        }
        guard let result = response["result"] else { throw ConnectionError(description: "no result key") }
        return result
    }
}

extension RawConnection {
    // Async forms of the round trips. An async test that made hundreds of blocking calls in a row would hold a
    // thread of the cooperative pool (two on these machines) for the whole sequence and starve every other
    // test's clients and in-process daemons; these run each blocking round trip on a dispatch thread instead.

    /// Sends one request and returns the decoded response map, without blocking the cooperative pool.
    public func call(_ method: String, _ params: CBORValue = .array([])) async throws -> CBORMap {
        try await offCooperativePool { try self.call(method, params) as CBORMap }
    }

    /// Sends one request and returns its `result`, without blocking the cooperative pool.
    public func result(_ method: String, _ params: CBORValue = .array([])) async throws -> CBORValue {
        try await offCooperativePool { try self.result(method, params) as CBORValue }
    }
}

/// Runs a blocking `body` on a dispatch thread and returns its result.
public func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}

extension CBORMap {
    /// The error message of an error response, as a string.
    public var errorMessage: String? {
        guard case .map(let error)? = self["error"], let message = error["message"]?.stringOctets else { return nil }
        return String(decoding: message, as: UTF8.self)
    }
}

/// Runs `body(index)` on `count` dedicated threads at once (blocking socket clients must not occupy the
/// cooperative pool) and returns the results in index order. Errors are rethrown after all threads finish.
public func runOnThreads<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) async throws -> [T] {
    let results = ThreadResults<T>(count)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            let thread = Thread {
                results.values[index] = Result { try body(index) }
                group.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.notify(queue: .global()) { continuation.resume() }
    }
    return try results.values.map { try $0!.get() }
}

/// Result slots filled by ``runOnThreads(_:_:)``.
final class ThreadResults<T>: @unchecked Sendable {
    // @unchecked Sendable: each slot is written by exactly one thread, and read after all threads finished.
    var values: [Result<T, any Error>?]
    init(_ count: Int) { values = Array(repeating: nil, count: count) }
}
