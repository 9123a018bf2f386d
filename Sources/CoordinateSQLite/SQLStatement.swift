import CoordinateEngine
import Foundation
import GRDB
import GRDBSQLite

/// A thin layer over a prepared `sqlite3_stmt` taken from GRDB's statement cache: binding and reading through
/// the C API avoids building argument arrays and rows for every query on the request path. Every use starts
/// with ``reset()``, so GRDB and this code never see each other's half-finished statement state.
struct SQLStatement {
    let handle: OpaquePointer
    let connection: OpaquePointer

    init(_ database: Database, _ sql: String) throws {
        let statement = try database.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
        connection = database.sqliteConnection!
        reset()
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    private func check(_ code: Int32) throws {
        if code != SQLITE_OK { throw SQLiteFailure(connection: connection, code: code) }
    }

    func bind(_ index: Int32, _ value: Int64) throws { try check(sqlite3_bind_int64(handle, index, value)) }
    func bind(_ index: Int32, _ value: Int64?) throws {
        if let value { try bind(index, value) } else { try check(sqlite3_bind_null(handle, index)) }
    }
    func bind(_ index: Int32, _ value: Int) throws { try bind(index, Int64(value)) }
    func bind(_ index: Int32, _ value: Bool) throws { try bind(index, Int64(value ? 1 : 0)) }
    func bind(_ index: Int32, _ value: Double) throws { try check(sqlite3_bind_double(handle, index, value)) }
    func bind(_ index: Int32, _ bytes: [UInt8]) throws {
        let code = bytes.withUnsafeBytes { buffer in
            // SQLITE_TRANSIENT (-1): SQLite copies the bytes before returning.
            sqlite3_bind_blob(
                handle, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(buffer.count),
                unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self))
        }
        try check(code)
    }
    func bind(_ index: Int32, _ bytes: [UInt8]?) throws {
        if let bytes { try bind(index, bytes) } else { try check(sqlite3_bind_null(handle, index)) }
    }

    /// Runs a statement that returns no rows.
    func run() throws {
        let code = sqlite3_step(handle)
        defer { sqlite3_reset(handle) }
        guard code == SQLITE_DONE || code == SQLITE_ROW else { throw SQLiteFailure(connection: connection, code: code) }
    }

    /// Steps to the next row; false at the end.
    func next() throws -> Bool {
        let code = sqlite3_step(handle)
        if code == SQLITE_ROW { return true }
        if code == SQLITE_DONE { return false }
        throw SQLiteFailure(connection: connection, code: code)
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func optionalInt64(_ column: Int32) -> Int64? { isNull(column) ? nil : int64(column) }
    func int(_ column: Int32) -> Int { Int(int64(column)) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }
    func bool(_ column: Int32) -> Bool { int64(column) != 0 }
    func bytes(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }
    func optionalBytes(_ column: Int32) -> [UInt8]? { isNull(column) ? nil : bytes(column) }
    func identifier(_ column: Int32, kind: Int32) -> Identifier {
        Identifier(octets: bytes(column), isText: int64(kind) != 0)
    }
    func optionalIdentifier(_ column: Int32, kind: Int32) -> Identifier? {
        isNull(column) ? nil : identifier(column, kind: kind)
    }
}

/// A failed SQLite call, with SQLite's own message.
struct SQLiteFailure: Error, CustomStringConvertible {
    let code: Int32
    let message: String

    init(connection: OpaquePointer, code: Int32) {
        self.code = code
        self.message = String(cString: sqlite3_errmsg(connection))
    }

    init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    var description: String { message }

    /// Whether the failure is the disk (or page limit) being full.
    var isFull: Bool { code & 0xff == SQLITE_FULL }
}

/// The SQLite file's identity, to notice it being removed or replaced under the daemon (storage.md §6.5).
struct FileIdentity: Equatable {
    let device: UInt64
    let inode: UInt64

    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}
