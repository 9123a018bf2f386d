/// Everything a ``CoordinateClient`` call can fail with.
public enum CoordinateClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The daemon could not be reached, or the connection failed, after every retry (wire-protocol.md §12.7).
    case connection(String)
    /// The daemon answered something the protocol does not allow (a response for another request, an
    /// undecodable or oversized response). Never retried.
    case protocolViolation(String)
    /// The daemon answered with an error response; `message` is its text, exactly.
    case server(message: String)
    /// A method reported a failure in its result (`(false, message)`).
    case failed(message: String)
    /// The named work spec does not exist.
    case noSuchWorkSpec(String)
    /// The unit's lease is gone: the daemon says it is no longer pending, or another worker holds it.
    case lostLease(String)
    /// The client was closed while the call was outstanding.
    case closed
    /// The daemon's answer did not have the shape the method documents.
    case unexpectedResult(method: String, detail: String)

    public var description: String {
        switch self {
        case .connection(let detail): return "cannot reach coordinated: \(detail)"
        case .protocolViolation(let detail): return "protocol error: \(detail)"
        case .server(let message): return message
        case .failed(let message): return message
        case .noSuchWorkSpec(let name): return "no such work spec \(name)"
        case .lostLease(let detail): return "lost lease: \(detail)"
        case .closed: return "client closed"
        case .unexpectedResult(let method, let detail): return "unexpected result from \(method): \(detail)"
        }
    }
}
