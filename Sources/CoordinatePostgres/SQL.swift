import CoordinateEngine
import Logging
import NIOConcurrencyHelpers
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
    /// Whether the connection has closed, and how to fail the statement waiting on it at that moment. One
    /// callback on the close future serves every statement (a callback per statement would pile up there for
    /// the connection's lifetime).
    private let closing = NIOLockedValueBox<(closed: Bool, failWaiter: (@Sendable () -> Void)?)>((false, nil))

    init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
        let closing = closing
        connection.closeFuture.whenComplete { _ in
            let waiter = closing.withLockedValue { state in
                defer { state = (true, nil) }
                return state.failWaiter
            }
            waiter?()
        }
    }

    /// Runs a statement with `$n` parameters and returns every row.
    @discardableResult
    func query(_ sql: String, _ values: [SQLValue] = []) throws -> [SQLRow] {
        let pending = send(sql, values)
        if !deferred.isEmpty {
            // A failed deferred statement aborts the transaction, and this one then fails only with "current
            // transaction is aborted": report the original failure (it decides retries).
            do {
                try finishDeferred()
            } catch {
                _ = try? finish(pending)
                throw error
            }
        }
        return try finish(pending)
    }

    /// Statements sent without waiting whose answers are checked later (at the next `query`, or by
    /// ``finishDeferred()`` before the commit).
    private var deferred: [EventLoopFuture<PostgresQueryResult>] = []

    /// Sends a statement whose answer nobody needs now; at most 512 stay outstanding.
    func sendDeferred(_ sql: String, _ values: [SQLValue] = []) throws {
        deferred.append(send(sql, values))
        if deferred.count >= 512 { try finishDeferred() }
    }

    /// Waits for every deferred statement, throwing the first failure.
    func finishDeferred() throws {
        let pending = deferred
        deferred.removeAll()
        var first: (any Error)?
        for future in pending {
            do { try finish(future) } catch { if first == nil { first = error } }
        }
        if let first { throw first }
    }

    /// Sends a statement without waiting for its answer, so that the next one travels in the same round trip
    /// (postgres-nio queues statements on a connection and answers them in order). Every sent statement must be
    /// finished with ``finish(_:)``.
    func send(_ sql: String, _ values: [SQLValue] = []) -> EventLoopFuture<PostgresQueryResult> {
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
        return connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
    }

    /// Waits for the answer of a statement sent with ``send(_:_:)``.
    @discardableResult
    func finish(_ pending: EventLoopFuture<PostgresQueryResult>) throws -> [SQLRow] {
        try wait(pending).rows.map { SQLRow(cells: $0.makeRandomAccess()) }
    }

    /// Runs one statement without parameters. (postgres-nio sends it through the extended protocol too: one
    /// statement per call.)
    @discardableResult
    func simple(_ sql: String) throws -> [SQLRow] {
        try wait(connection.simpleQuery(sql)).map { SQLRow(cells: $0.makeRandomAccess()) }
    }

    /// Closes the connection without waiting (a connection the server dropped may never finish closing).
    func close() {
        let connection = connection
        // postgres-nio requires a connection to stay alive until its close completes.
        connection.close().whenComplete { _ in _ = connection }
    }

    /// How long one statement may take before the connection is declared dead. Statements take milliseconds,
    /// but one may legitimately wait that long and more for a row lock behind other writers of the same keys;
    /// this bounds only the case where the server vanished without closing the socket: a pool thread must
    /// never wait forever. (A connection the server terminates ends its waits at once, see `closing`.)
    static let statementTimeoutSeconds = 300.0

    private func wait<T: Sendable>(_ future: EventLoopFuture<T>) throws -> T {
        // A condition the worker thread waits on with a deadline, rather than a promise and a timer: scheduling and
        // cancelling a timer from this thread would wake the event loop twice more for every statement.
        let outcome = Outcome<T>()
        future.whenComplete { outcome.settle($0) }
        // postgres-nio 1.33 can leave a query that raced the connection's closing (the server terminated it)
        // pending forever; once the channel is closed no answer can come, so the wait ends there.
        let failOnClose: @Sendable () -> Void = { outcome.settle(.failure(SQLChannelError.connectionClosed)) }
        let alreadyClosed = closing.withLockedValue { state -> Bool in
            if state.closed { return true }
            state.failWaiter = failOnClose
            return false
        }
        if alreadyClosed { failOnClose() }
        defer { closing.withLockedValue { $0.failWaiter = nil } }
        guard let result = outcome.wait(seconds: Self.statementTimeoutSeconds) else {
            close()
            throw SQLChannelError.timedOut
        }
        return try result.get()
    }

}

/// The result of one statement, handed from the event loop to the worker thread waiting for it. The first
/// settlement wins (an answer, or the connection closing).
private final class Outcome<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `result` is read and written only while holding `condition`.
    private let condition = ConditionLock(value: 0)
    private var result: Result<T, any Error>?

    func settle(_ result: Result<T, any Error>) {
        condition.lock()
        guard self.result == nil else { return condition.unlock() }
        self.result = result
        condition.unlock(withValue: 1)
    }

    /// The result, or nil when none arrived within `seconds`.
    func wait(seconds: Double) -> Result<T, any Error>? {
        guard condition.lock(whenValue: 1, timeoutSeconds: seconds) else { return nil }
        defer { condition.unlock() }
        return result
    }
}

/// Failures of a channel that are not errors reported by the server.
enum SQLChannelError: Error, CustomStringConvertible {
    case timedOut
    case connectionClosed

    var description: String {
        switch self {
        case .timedOut:
            return "no answer from the server within \(Int(SQLChannel.statementTimeoutSeconds)) s"
        case .connectionClosed: return "connection closed"
        }
    }
}

/// Whether `error` means the connection is unusable (rather than the statement failing on a healthy one):
/// client-side connection failures, a timeout, and the server's own connection-ending errors (class 08,
/// connection exception; class 57P, operator intervention such as `pg_ctl stop` or a crash shutdown).
func isConnectionFailure(_ error: any Error) -> Bool {
    if error is SQLChannelError { return true }
    guard error is PSQLError else { return false }
    guard let code = sqlState(error) else { return true }
    return code.hasPrefix("08") || code.hasPrefix("57P")
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
    if let error = error as? SQLChannelError { return error.description }
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
