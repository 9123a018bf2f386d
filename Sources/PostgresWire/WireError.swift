/// An error the server reported (an `ErrorResponse`): the statement failed, the connection is still usable
/// unless the code says otherwise (class 08, 57P).
public struct WireServerError: Error, Sendable, CustomStringConvertible {
    /// The message's fields by their one-byte code (`C` SQLSTATE, `M` message, `D` detail, `S` severity, …).
    public let fields: [UInt8: String]

    public var sqlState: String? { fields[UInt8(ascii: "C")] }
    public var message: String { fields[UInt8(ascii: "M")] ?? "server error" }
    public var detail: String? { fields[UInt8(ascii: "D")] }

    public var description: String {
        var text = message
        if let sqlState { text += " (SQLSTATE \(sqlState))" }
        if let detail { text += ": " + detail }
        return text
    }
}

/// Failures of the connection itself: after one, the connection is closed and every statement on it failed.
public enum WireConnectionError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The connection closed (by either side, or the network) before the statement was answered.
    case closed
    /// The server sent something this client does not understand at this point.
    case protocolViolation(String)
    /// The server asked for an authentication method this client does not speak, or refused the password.
    case authentication(String)
    /// TLS was required and the server does not offer it.
    case tlsUnavailable
    /// The connection was not established in time.
    case connectTimeout
    /// Statements were outstanding and the server sent nothing for ``WireConfiguration/answerTimeout``.
    case answerTimeout

    public var description: String {
        switch self {
        case .closed: return "connection closed"
        case .protocolViolation(let detail): return "protocol violation: \(detail)"
        case .authentication(let detail): return "authentication failed: \(detail)"
        case .tlsUnavailable: return "the server does not offer TLS"
        case .connectTimeout: return "connection timed out"
        case .answerTimeout: return "no answer from the server in time"
        }
    }
}

/// A statement the server did not run because an earlier statement of its pipeline failed (the server skips
/// everything up to the pipeline's `Sync`). The connection is fine.
public struct WireStatementSkipped: Error, Sendable, CustomStringConvertible {
    /// The failure of the earlier statement.
    public let cause: WireServerError

    public var description: String { "not run: an earlier statement of its pipeline failed (\(cause))" }
}
