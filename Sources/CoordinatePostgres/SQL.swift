import CoordinateEngine
import Logging
import NIOCore
import PostgresNIO

/// A bind value of a query.
enum SQLValue {
    case int(Int64?)
    case int16(Int16?)
    case double(Double?)
    case bool(Bool?)
    case bytes([UInt8]?)
    case text(String?)
}

/// One blocking query channel over a postgres-nio connection. Used only on the worker thread that owns it:
/// blocking there on the connection's futures is what makes the engine's synchronous storage API work.
final class SQLChannel: @unchecked Sendable {
    // @unchecked Sendable: a channel has one user at a time. It moves between pool threads only through the
    // backend's idle list (checked out and in under its mutex), and its state is the connection, which is
    // itself thread-safe.
    let connection: PostgresConnection
    let logger: Logger

    init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// Runs a statement with `$n` parameters and returns every row.
    @discardableResult
    func query(_ sql: String, _ values: [SQLValue] = []) throws -> [SQLRow] {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .int(let number): if let number { bindings.append(number) } else { bindings.appendNull() }
            case .int16(let number): if let number { bindings.append(number) } else { bindings.appendNull() }
            case .double(let number): if let number { bindings.append(number) } else { bindings.appendNull() }
            case .bool(let flag): if let flag { bindings.append(flag) } else { bindings.appendNull() }
            case .bytes(let octets):
                if let octets { bindings.append(ByteBuffer(bytes: octets)) } else { bindings.appendNull() }
            case .text(let string): if let string { bindings.append(string) } else { bindings.appendNull() }
            }
        }
        let result = try connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger).wait()
        return result.rows.map { SQLRow(cells: $0.makeRandomAccess()) }
    }

    /// Runs statements without parameters through the simple protocol (several statements allowed).
    @discardableResult
    func simple(_ sql: String) throws -> [SQLRow] {
        try connection.simpleQuery(sql).wait().map { SQLRow(cells: $0.makeRandomAccess()) }
    }
}

/// Typed access to one result row.
struct SQLRow {
    let cells: PostgresRandomAccessRow

    func int64(_ index: Int) throws -> Int64 { try cells[index].decode(Int64.self) }
    func optionalInt64(_ index: Int) throws -> Int64? { try cells[index].decode(Int64?.self) }
    func int(_ index: Int) throws -> Int { Int(try int64(index)) }
    func double(_ index: Int) throws -> Double { try cells[index].decode(Double.self) }
    func bool(_ index: Int) throws -> Bool { try cells[index].decode(Bool.self) }
    func optionalBool(_ index: Int) throws -> Bool? { try cells[index].decode(Bool?.self) }
    func int16(_ index: Int) throws -> Int16 { try cells[index].decode(Int16.self) }
    func bytes(_ index: Int) throws -> [UInt8] { Array(try cells[index].decode(ByteBuffer.self).readableBytesView) }
    func optionalBytes(_ index: Int) throws -> [UInt8]? {
        try cells[index].decode(ByteBuffer?.self).map { Array($0.readableBytesView) }
    }
    func identifier(_ index: Int, kind: Int) throws -> Identifier {
        Identifier(octets: try bytes(index), isText: try bool(kind))
    }
    func optionalIdentifier(_ index: Int, kind: Int) throws -> Identifier? {
        guard let octets = try optionalBytes(index) else { return nil }
        return Identifier(octets: octets, isText: try optionalBool(kind) ?? false)
    }
}

/// SQLSTATE of a server error, if the error came from the server.
func sqlState(_ error: any Error) -> String? {
    guard let error = error as? PSQLError, error.code == .server else { return nil }
    return error.serverInfo?[.sqlState]
}

/// The server's message for an error, or a description of a client-side failure.
func describe(_ error: any Error) -> String {
    if let error = error as? PSQLError {
        if let message = error.serverInfo?[.message] { return message }
        if error.code == .connectionError || error.code == .serverClosedConnection
            || error.code == .clientClosedConnection || error.code == .uncleanShutdown
        {
            if let underlying = error.underlying { return "connection lost: \(underlying)" }
            return "connection lost"
        }
        return "\(error.code)"
    }
    if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
    return "\(error)"
}
