import CoordinateEngine
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresWire
import Synchronization

/// A bind value of a query.
enum SQLValue {
    case int(Int64?)
    case int16(Int16?)
    case double(Double?)
    case bool(Bool?)
    case bytes([UInt8]?)
    case text(String?)
    /// A one-dimensional array of values of one type (a column of a multi-row statement, see
    /// ``SQLChannel/maxRowsPerStatement``).
    indirect case array([SQLValue], element: SQLValue)

    /// The column `index` of `rows` as an array parameter; every row has a value of the same case there.
    static func column(_ index: Int, of rows: [[SQLValue]]) -> SQLValue {
        .array(rows.map { $0[index] }, element: rows[0][index])
    }

    /// The type of a scalar value (an array's element type for an array).
    private var scalarType: UInt32 {
        switch self {
        case .int: return WireType.int8
        case .int16: return WireType.int2
        case .double: return WireType.float8
        case .bool: return WireType.bool
        case .bytes: return WireType.bytea
        case .text: return WireType.text
        case .array(_, let element): return element.scalarType
        }
    }

    /// The value as a statement parameter, in the server's binary format.
    var parameter: WireParameter {
        if case .array(let values, _) = self {
            let element = scalarType
            var buffer = ByteBuffer()
            buffer.writeWireArray(elementType: element, count: values.count) { buffer, index in
                values[index].write(into: &buffer)
            }
            return WireParameter(type: WireType.array(of: element)!, value: buffer)
        }
        var buffer = ByteBuffer()
        return WireParameter(type: scalarType, value: write(into: &buffer) ? buffer : nil)
    }

    /// Appends a scalar value in the server's binary format; false (nothing written) for NULL.
    fileprivate func write(into buffer: inout ByteBuffer) -> Bool {
        switch self {
        case .int(let number):
            guard let number else { return false }
            buffer.writeInteger(number)
        case .int16(let number):
            guard let number else { return false }
            buffer.writeInteger(number)
        case .double(let number):
            guard let number else { return false }
            buffer.writeInteger(number.bitPattern)
        case .bool(let flag):
            guard let flag else { return false }
            buffer.writeInteger(flag ? 1 : 0, as: UInt8.self)
        case .bytes(let octets):
            guard let octets else { return false }
            buffer.writeBytes(octets)
        case .text(let string):
            guard let string else { return false }
            buffer.writeString(string)
        case .array:
            preconditionFailure("arrays of arrays are not statement parameters")
        }
        return true
    }
}

/// Rows for `COPY … FROM STDIN (FORMAT binary)`: the format's header, then each row as its number of fields and
/// each field as a length (-1 for NULL) and its value in the binary format of its column's type (the same bytes
/// as a parameter of that type), then the trailer (``data``).
struct SQLCopyRows {
    private var buffer = ByteBuffer()
    private(set) var count = 0

    init() {
        buffer.writeBytes(Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00])
        buffer.writeInteger(Int32(0))  // flags: no OIDs
        buffer.writeInteger(Int32(0))  // no header extension
    }

    /// Appends one row, whose values are in the order of the statement's column list.
    mutating func append(_ row: [SQLValue]) {
        buffer.writeInteger(Int16(row.count))
        for value in row {
            let lengthIndex = buffer.writerIndex
            buffer.writeInteger(Int32(-1))
            if value.write(into: &buffer) {
                buffer.setInteger(Int32(buffer.writerIndex - lengthIndex - 4), at: lengthIndex)
            }
        }
        count += 1
    }

    /// The whole copy data, trailer included.
    var data: ByteBuffer {
        var data = buffer
        data.writeInteger(Int16(-1))
        return data
    }
}

/// One blocking query channel over a pipelining connection (``WireConnection``). Used only on the worker
/// thread that owns it: blocking there on the connection's answers is what makes the engine's synchronous storage
/// API work.
final class SQLChannel: @unchecked Sendable {
    // @unchecked Sendable: a channel has one user at a time. It moves between pool threads only through the
    // backend's idle list (checked out and in under its mutex), and its state is the connection, which is
    // itself thread-safe.
    let connection: WireConnection
    let logger: Logger
    /// Counts the times a thread waited here for an answer that was not in yet (shared by a backend's channels).
    let threadWaits: ThreadWaits

    init(connection: WireConnection, logger: Logger, threadWaits: ThreadWaits = ThreadWaits()) {
        self.connection = connection
        self.logger = logger
        self.threadWaits = threadWaits
    }

    /// Runs a statement with `$n` parameters and returns every row.
    @discardableResult
    func query(_ sql: String, _ values: [SQLValue] = []) throws -> [SQLRow] {
        try finishAfterDeferred(send(sql, values))
    }

    /// Waits for a statement sent with ``send(_:_:)`` after the deferred ones still outstanding, and for them.
    ///
    /// Answers come in order, so once this one is in, every deferred one is too: one wake-up for the whole round
    /// trip instead of one per answer. A failed deferred statement aborts the transaction, and this one then
    /// fails only with "current transaction is aborted": the original failure is reported (it decides retries).
    func finishAfterDeferred(_ pending: Pending) throws -> [SQLRow] {
        guard !deferred.isEmpty else { return try finish(pending) }
        let answer = Result { try finish(pending) }
        try finishDeferred()
        return try answer.get()
    }

    /// Statements sent without waiting whose answers are checked later (at the next `query`, or by
    /// ``finishDeferred()`` before the commit).
    private var deferred: [Pending] = []

    /// Sends a statement whose answer nobody needs now; at most 512 stay outstanding.
    ///
    /// A data-modifying statement that changes one row, named by `touching`, may travel inside one statement
    /// with its neighbours of that kind (``combined(_:)``): the server executes, plans and answers one statement
    /// instead of three (the round trip is shared either way, see ``send(_:_:)``).
    func sendDeferred(_ sql: String, _ values: [SQLValue] = [], touching row: RowKey? = nil) throws {
        if let row {
            let answer = Pending()
            combining.append((sql, values, answer, row))
            deferred.append(answer)
        } else {
            deferred.append(send(sql, values))
        }
        if deferred.count >= 512 { try finishDeferred() }
    }

    /// Checks the answer of a statement already sent with the deferred ones (whose rows nobody needs any more).
    func finishLater(_ pending: Pending) {
        deferred.append(pending)
    }

    /// The one row a deferred write changes: writes of distinct rows may share a statement.
    struct RowKey: Hashable {
        enum Table: UInt8 {
            case unit, attempt
        }
        let table: Table
        let id: Int64
    }

    /// Deferred one-row writes not yet made into statements (``sealCombined()``).
    private var combining: [(sql: String, values: [SQLValue], answer: Pending, row: RowKey)] = []

    /// Writes that share one statement at most.
    static let maxCombined = 16

    /// Turns the collected one-row writes into statements, in order: each run of writes of distinct rows (at
    /// most ``maxCombined``) becomes one, in which every write is a data-modifying `WITH` item. The items of one
    /// statement all see the state before it, which is why a row written twice starts a new statement.
    private func sealCombined() {
        guard !combining.isEmpty else { return }
        let writes = combining
        combining.removeAll(keepingCapacity: true)
        var start = 0
        while start < writes.count {
            var rows: Set<RowKey> = [writes[start].row]
            var end = start + 1
            while end < writes.count, end - start < Self.maxCombined, rows.insert(writes[end].row).inserted { end += 1 }
            if end - start == 1 {
                enqueue(writes[start].sql, writes[start].values, answers: [writes[start].answer])
            } else {
                let group = writes[start..<end]
                let (sql, values) = Self.combined(group.map { ($0.sql, $0.values) })
                enqueue(sql, values, answers: group.map(\.answer))
            }
            start = end
        }
    }

    /// Data-modifying statements as one: `WITH w0 AS (…), w1 AS (…) SELECT 1`, parameters renumbered.
    /// PostgreSQL runs every data-modifying `WITH` item exactly once, read or not.
    static func combined(_ statements: [(sql: String, values: [SQLValue])]) -> (String, [SQLValue]) {
        var sql = "WITH "
        var values: [SQLValue] = []
        for (index, statement) in statements.enumerated() {
            if index > 0 { sql += ", " }
            sql += "w\(index) AS (" + renumbered(statement.sql, by: values.count) + ")"
            values += statement.values
        }
        return (sql + " SELECT 1", values)
    }

    /// `sql` with every parameter `$n` made `$(n + offset)` (scanned as UTF-8: the statements are ASCII where
    /// it matters, and character-wise scanning of every write was measurable).
    static func renumbered(_ sql: String, by offset: Int) -> String {
        guard offset > 0 else { return sql }
        var result: [UInt8] = []
        result.reserveCapacity(sql.utf8.count + 16)
        var bytes = sql.utf8.makeIterator()
        var pending: UInt8? = nil
        while let byte = pending ?? bytes.next() {
            pending = nil
            guard byte == UInt8(ascii: "$") else {
                result.append(byte)
                continue
            }
            var number = 0
            var digits = 0
            while let next = bytes.next() {
                if next >= UInt8(ascii: "0"), next <= UInt8(ascii: "9") {
                    number = number * 10 + Int(next - UInt8(ascii: "0"))
                    digits += 1
                } else {
                    pending = next
                    break
                }
            }
            result.append(UInt8(ascii: "$"))
            if digits > 0 { result.append(contentsOf: Array(String(number + offset).utf8)) }
        }
        return String(decoding: result, as: UTF8.self)
    }

    /// Rows per multi-row statement (each parameter the array of one column, unnested by the statement): large
    /// enough that a bulk add is a handful of statements, small enough that one statement's parameters stay well
    /// below the protocol's limits. One statement of 1 000 rows costs the server far less than 1 000 statements
    /// of one row (one execution, one round of parameter parsing).
    static let maxRowsPerStatement = 1000

    /// Drops statements not yet sent (the transaction is being rolled back); whoever still waits for one of
    /// them learns that it never ran.
    func discardUnsent() {
        for write in combining { write.answer.settle(.failure(SQLChannelError.notSent)) }
        combining.removeAll()
        let dropped = unsubmitted
        unsubmitted.removeAll()
        for statement in dropped { statement.completion(.failure(SQLChannelError.notSent)) }
    }

    /// Waits for every deferred statement, throwing the first failure.
    func finishDeferred() throws {
        let pending = deferred
        deferred.removeAll()
        // The last answer settles after all the others: wait for it alone, then read the rest without waiting.
        if let last = pending.last { _ = try? wait(for: last) }
        var first: (any Error)?
        for future in pending {
            do { try finish(future) } catch { if first == nil { first = error } }
        }
        if let first { throw first }
    }

    /// Sends a statement without waiting for its answer, so that the next ones travel with it and are waited
    /// for together: statements collect here until something waits for an answer (``flush()``), then go to the
    /// event loop in one task and to the server in one write, which runs them back to back and answers them in
    /// order (``WireConnection``). Statements that do not depend on each other's answers thus share one round
    /// trip and one thread hand-off. Every sent statement must be finished with ``finish(_:)``.
    ///
    /// Statements run as named prepared statements, parsed once per connection: an unnamed statement is parsed
    /// and planned by the server on every execution, which was half of the server's time per get+finish cycle.
    /// Parameters are declared with the types of their values, so the binary values sent are read as such.
    func send(_ sql: String, _ values: [SQLValue] = []) -> Pending {
        sealCombined()
        let answer = Pending()
        enqueue(sql, values, answers: [answer])
        return answer
    }

    /// Sends a `COPY … FROM STDIN (FORMAT binary)` statement with its rows, like ``send(_:_:)``: the rows travel
    /// in the same write, so the copy shares the round trip of the statements around it.
    func sendCopy(_ sql: String, _ rows: SQLCopyRows) -> Pending {
        sealCombined()
        let answer = Pending()
        enqueue(sql, [], answers: [answer], copyData: rows.data)
        return answer
    }

    /// Hands every collected statement to the connection and calls `callback` on the connection's event loop,
    /// once the last of them is answered (after the event that answered it), without a thread waiting for it.
    /// Their answers are then taken with ``finish(_:)`` and the like, which no longer wait.
    func whenAnswered(_ callback: @escaping @Sendable () -> Void) {
        flush()
        guard let last = lastSent else { return callback() }
        let eventLoop = connection.eventLoop
        // Not from inside the connection's handling of the answer: the callback may send more.
        last.whenSettled { _ in eventLoop.execute(callback) }
    }

    /// The answer of the statement handed over last.
    private var lastSent: Pending?

    /// Makes a statement ready to send; its answer settles every one of `answers`.
    private func enqueue(
        _ sql: String, _ values: [SQLValue], answers: [Pending], prepared: Bool = true, copyData: ByteBuffer? = nil
    ) {
        lastSent = answers.last
        unsubmitted.append(
            WireRequest(sql: sql, parameters: values.map(\.parameter), prepared: prepared, copyData: copyData) {
                result in
                for answer in answers { answer.settle(result) }
            })
    }

    /// Statements made but not yet handed to the connection, in order.
    private var unsubmitted: [WireRequest] = []

    /// Hands every collected statement to the connection at once (one thread wake-up, one write).
    func flush() {
        sealCombined()
        guard !unsubmitted.isEmpty else { return }
        let batch = unsubmitted
        unsubmitted.removeAll(keepingCapacity: true)
        connection.submit(batch)
    }

    /// The answer of a sent statement: its rows, settled on the event loop.
    typealias Pending = Outcome<[WireRow]>

    /// Waits for the answer of a statement sent with ``send(_:_:)``.
    @discardableResult
    func finish(_ pending: Pending) throws -> [SQLRow] {
        try wait(for: pending).map { SQLRow(cells: $0) }
    }

    /// Runs one statement without parameters whose rows, if any, nobody reads, unprepared: for DDL and other
    /// statements run once per connection or less.
    func simple(_ sql: String) throws {
        sealCombined()
        let answer = Pending()
        enqueue(sql, [], answers: [answer], prepared: false)
        try finish(answer)
    }

    /// Closes the connection without waiting (a connection the server dropped may never finish closing).
    func close() {
        connection.close()
    }

    /// How long one statement may take before the connection is declared dead. Statements take milliseconds,
    /// but one may legitimately wait that long and more for a row lock behind other writers of the same keys;
    /// this bounds only the case where the server vanished without closing the socket: a pool thread must
    /// never wait forever. (A connection that closes ends its waits at once: the connection fails every statement
    /// in flight as it closes, and any handed to it afterwards.)
    static let statementTimeoutSeconds = 300.0

    private func wait<T: Sendable>(for outcome: Outcome<T>) throws -> T {
        flush()
        if !outcome.isSettled { threadWaits.count() }
        // A condition the worker thread waits on with a deadline, rather than a promise and a timer: scheduling and
        // cancelling a timer from this thread would wake the event loop twice more for every statement.
        guard let result = outcome.wait(seconds: Self.statementTimeoutSeconds) else {
            close()
            throw SQLChannelError.timedOut
        }
        return try result.get()
    }

}

/// The result of one statement, handed from the event loop to the worker thread waiting for it, or to
/// callbacks. The first settlement wins.
final class Outcome<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `result` and `callbacks` are read and written only while holding `condition`.
    private let condition = ConditionLock(value: 0)
    private var result: Result<T, any Error>?
    private var callbacks: [@Sendable (Result<T, any Error>) -> Void] = []

    func settle(_ result: Result<T, any Error>) {
        condition.lock()
        guard self.result == nil else { return condition.unlock() }
        self.result = result
        let waiting = callbacks
        callbacks = []
        condition.unlock(withValue: 1)
        for callback in waiting { callback(result) }
    }

    /// Calls `callback` with the result once there is one: at once, on this thread, if there is already.
    func whenSettled(_ callback: @escaping @Sendable (Result<T, any Error>) -> Void) {
        condition.lock()
        if let result {
            condition.unlock()
            return callback(result)
        }
        callbacks.append(callback)
        condition.unlock()
    }

    /// Whether the result is in.
    var isSettled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return result != nil
    }

    /// The result, or nil when none arrived within `seconds`.
    func wait(seconds: Double) -> Result<T, any Error>? {
        guard condition.lock(whenValue: 1, timeoutSeconds: seconds) else { return nil }
        defer { condition.unlock() }
        return result
    }
}

/// How many times a thread has waited for the database: what the request path still costs in blocked threads
/// (``PostgresBackend/BatchStatistics/threadWaits``).
final class ThreadWaits: Sendable {
    private let waits = Atomic(0)

    func count() {
        waits.add(1, ordering: .relaxed)
    }

    var total: Int { waits.load(ordering: .relaxed) }
}

/// Failures of a channel that are not errors reported by the server.
enum SQLChannelError: Error, CustomStringConvertible {
    case timedOut
    /// The statement was dropped before it reached the server (its transaction was rolled back).
    case notSent

    var description: String {
        switch self {
        case .timedOut:
            return "no answer from the server within \(Int(SQLChannel.statementTimeoutSeconds)) s"
        case .notSent: return "statement dropped before it was sent"
        }
    }
}

/// Whether `error` means the connection is unusable (rather than the statement failing on a healthy one):
/// client-side connection failures, a timeout, and the server's own connection-ending errors (class 08,
/// connection exception; class 57P, operator intervention such as `pg_ctl stop` or a crash shutdown).
func isConnectionFailure(_ error: any Error) -> Bool {
    if let error = error as? SQLChannelError { return error != .notSent }
    if error is IOError || error is ChannelError || error is WireConnectionError { return true }
    if let code = sqlState(error) { return code.hasPrefix("08") || code.hasPrefix("57P") }
    return false
}

/// Whether `error` came from the database or the storage layer (a failed statement, a lost connection, a row
/// the backend cannot read) rather than from the operation refusing a request. After such a failure the
/// transaction cannot go on.
func isDatabaseFailure(_ error: any Error) -> Bool {
    error is StorageError || error is SQLRowError || error is WireStatementSkipped || error is PostgresConflict
        || sqlState(error) != nil || isConnectionFailure(error)
}

/// A conflict with another transaction found by the backend rather than reported by the server: the transaction
/// is rolled back and tried again (``PostgresBackend/isConflict(_:)``).
enum PostgresConflict: Error, CustomStringConvertible {
    /// Units were to go into a spec another transaction deleted since this one read it.
    case specDeleted(Int64)

    var description: String {
        switch self {
        case .specDeleted(let id): return "work spec \(id) was deleted by another transaction"
        }
    }
}

/// Typed access to one result row. Every statement asks for binary results, so cells are read in
/// PostgreSQL's binary format.
struct SQLRow {
    let cells: WireRow

    private func cell(_ index: Int) throws -> ByteBuffer? {
        guard index < cells.count else { throw SQLRowError(column: index, expected: "a column") }
        return cells[index]
    }

    func int64(_ index: Int) throws -> Int64 {
        guard let value = try optionalInt64(index) else { throw SQLRowError(column: index, expected: "an integer") }
        return value
    }
    func optionalInt64(_ index: Int) throws -> Int64? {
        guard var buffer = try cell(index) else { return nil }
        switch buffer.readableBytes {
        case 8: return buffer.readInteger(as: Int64.self)
        case 4: return buffer.readInteger(as: Int32.self).map(Int64.init)
        case 2: return buffer.readInteger(as: Int16.self).map(Int64.init)
        default: throw SQLRowError(column: index, expected: "an integer")
        }
    }
    func int(_ index: Int) throws -> Int { Int(try int64(index)) }
    func int16(_ index: Int) throws -> Int16 {
        guard let value = Int16(exactly: try int64(index)) else {
            throw SQLRowError(column: index, expected: "a 16-bit integer")
        }
        return value
    }
    func double(_ index: Int) throws -> Double {
        guard let value = try optionalDouble(index) else { throw SQLRowError(column: index, expected: "a number") }
        return value
    }
    func optionalDouble(_ index: Int) throws -> Double? {
        guard var buffer = try cell(index) else { return nil }
        switch buffer.readableBytes {
        case 8: return Double(bitPattern: buffer.readInteger(as: UInt64.self)!)
        case 4: return Double(Float(bitPattern: buffer.readInteger(as: UInt32.self)!))
        default: throw SQLRowError(column: index, expected: "a floating-point number")
        }
    }
    func bool(_ index: Int) throws -> Bool {
        guard let value = try optionalBool(index) else { throw SQLRowError(column: index, expected: "a boolean") }
        return value
    }
    func optionalBool(_ index: Int) throws -> Bool? {
        guard var buffer = try cell(index) else { return nil }
        guard buffer.readableBytes == 1, let byte = buffer.readInteger(as: UInt8.self) else {
            throw SQLRowError(column: index, expected: "a boolean")
        }
        return byte != 0
    }
    func bytes(_ index: Int) throws -> [UInt8] {
        guard let octets = try optionalBytes(index) else { throw SQLRowError(column: index, expected: "bytes") }
        return octets
    }
    func optionalBytes(_ index: Int) throws -> [UInt8]? {
        try cell(index).map { Array($0.readableBytesView) }
    }
    func identifier(_ index: Int, kind: Int) throws -> Identifier {
        Identifier(octets: try bytes(index), isText: try bool(kind))
    }
    func optionalIdentifier(_ index: Int, kind: Int) throws -> Identifier? {
        guard let octets = try optionalBytes(index) else { return nil }
        return Identifier(octets: octets, isText: try optionalBool(kind) ?? false)
    }
}

/// A result cell that is missing or not of the type the statement promises: a bug in a statement, not bad data.
struct SQLRowError: Error, CustomStringConvertible {
    let column: Int
    let expected: String
    var description: String { "result column \(column) is not \(expected)" }
}

/// SQLSTATE of a server error, if the error came from the server; for a statement the server skipped because an
/// earlier one of its pipeline failed, that failure's (so a skipped statement is judged as what broke it: a
/// terminated connection, a conflict, …).
func sqlState(_ error: any Error) -> String? {
    (error as? WireServerError)?.sqlState ?? (error as? WireStatementSkipped)?.cause.sqlState
}

/// The server's message for an error, or a description of a client-side failure.
func describe(_ error: any Error) -> String {
    switch error {
    case let error as SQLChannelError: return error.description
    case let error as WireServerError: return error.message
    case let error as WireStatementSkipped: return error.cause.message
    case let error as WireConnectionError:
        return error == .closed ? "connection lost" : error.description
    case let error as IOError: return String(cString: strerror(error.errnoCode))
    case let error as ChannelError: return "connection lost: \(error)"
    default: return "\(error)"
    }
}
