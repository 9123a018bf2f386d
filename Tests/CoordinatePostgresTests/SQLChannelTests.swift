import Logging
import NIOPosix
import PostgresWire
import TestSupport
import Testing

@testable import CoordinatePostgres

/// The statement channel under the PostgreSQL store: statements prepared once per connection with typed
/// parameters, answers read in the binary format.
@Suite("SQL statement channel")
struct SQLChannelTests {
    @Test("every parameter is declared with the type of its value", .enabled(if: TestPostgres.available))
    func typedParameters() throws {
        try withChannel { channel in
            let rows = try channel.query(
                "SELECT pg_typeof($1)::text, pg_typeof($2)::text, pg_typeof($3)::text, pg_typeof($4)::text, "
                    + "pg_typeof($5)::text, pg_typeof($6)::text, pg_typeof($7)::text, pg_typeof($8)::text",
                [
                    .int(nil), .int16(2), .double(3), .bool(true), .bytes([1]), .text("x"),
                    .array([.int(1)], element: .int(nil)), .array([], element: .text(nil)),
                ])
            let row = try #require(rows.first)
            let types = try (0..<8).map { String(decoding: try row.bytes($0), as: UTF8.self) }
            #expect(
                types == ["bigint", "smallint", "double precision", "boolean", "bytea", "text", "bigint[]", "text[]"])
        }
    }

    private func withChannel(_ body: (SQLChannel) throws -> Void) throws {
        let url = try PostgresURL(try TestPostgres.url())
        let logger = Logger(label: "sql-channel-test")
        let connection = try WireConnection.connect(
            to: try url.configuration(), on: MultiThreadedEventLoopGroup.singleton.next()
        ).wait()
        let channel = SQLChannel(connection: connection, logger: logger)
        defer { try? connection.close().wait() }
        try body(channel)
    }

    @Test("values round-trip through prepared statements, nulls included", .enabled(if: TestPostgres.available))
    func roundTrip() throws {
        try withChannel { channel in
            // Twice: the first call prepares the statement, the second executes the prepared one.
            for _ in 0..<2 {
                let rows = try channel.query(
                    "SELECT $1, $2, $3, $4, $5, $6, $7, $8",
                    [
                        .int(-5_000_000_000), .int16(-7), .double(2.5), .bool(true), .bytes([0, 255, 10]),
                        .text("é"), .int(nil), .bytes(nil),
                    ])
                let row = try #require(rows.first)
                #expect(try row.int64(0) == -5_000_000_000)
                #expect(try row.int16(1) == -7)
                #expect(try row.double(2) == 2.5)
                #expect(try row.bool(3))
                #expect(try row.bytes(4) == [0, 255, 10])
                #expect(try row.bytes(5) == Array("é".utf8))
                #expect(try row.optionalInt64(6) == nil)
                #expect(try row.optionalBytes(7) == nil)
                #expect(throws: SQLRowError.self) { try row.int64(6) }
                #expect(throws: SQLRowError.self) { try row.int64(8) }
            }
            // Narrower server types widen; a mismatched width is an error, not a misread.
            let row = try #require(try channel.query("SELECT 7::int2, 7::int4, 7::int8, 1.5::float4, true").first)
            #expect(try row.int64(0) == 7)
            #expect(try row.int64(1) == 7)
            #expect(try row.int(2) == 7)
            #expect(try row.double(3) == 1.5)
            #expect(throws: SQLRowError.self) { try row.int64(4) }
        }
    }

    @Test(
        "deferred statements travel in order with the next one; unsent ones never run; a deferred failure is reported",
        .enabled(if: TestPostgres.available))
    func deferredStatements() throws {
        try withChannel { channel in
            try channel.simple("CREATE TEMPORARY TABLE rows_test (n int8, b bytea, f bool, s int2)")
            let insert = "INSERT INTO rows_test SELECT * FROM unnest($1, $2, $3, $4)"
            func columns(_ rows: [[SQLValue]]) -> [SQLValue] { rows[0].indices.map { SQLValue.column($0, of: rows) } }
            let total = SQLChannel.maxRowsPerStatement * 2 + 5
            var rows: [[SQLValue]] = []
            for n in 0..<total {
                let octets: [UInt8]? = n % 7 == 0 ? nil : [UInt8(n % 256)]
                let row: [SQLValue] = [.int(Int64(n)), .bytes(octets), .bool(n % 2 == 0), .int16(Int16(n % 3))]
                rows.append(row)
            }
            for start in stride(from: 0, to: total, by: SQLChannel.maxRowsPerStatement) {
                try channel.sendDeferred(
                    insert, columns(Array(rows[start..<min(start + SQLChannel.maxRowsPerStatement, total)])))
            }
            // The read travels behind the deferred inserts: it sees every row.
            let counted = try channel.query("SELECT count(*), count(b), sum(n)::int8, sum(s)::int8 FROM rows_test")
            let row = try #require(counted.first)
            #expect(try row.int64(0) == Int64(total))
            #expect(try row.int64(1) == Int64(total - (0..<total).filter { $0 % 7 == 0 }.count))
            #expect(try row.int64(2) == Int64(total * (total - 1) / 2))
            #expect(try row.int64(3) == Int64((0..<total).map { $0 % 3 }.reduce(0, +)))
            let sample = try #require(try channel.query("SELECT b, f FROM rows_test WHERE n = 1002").first)
            #expect(try sample.bytes(0) == [UInt8(1002 % 256)])
            #expect(try sample.bool(1))
            // Statements dropped before they were sent never run, and say so.
            try channel.sendDeferred(insert, columns([[.int(-1), .bytes(nil), .bool(true), .int16(0)]]))
            channel.discardUnsent()
            #expect(throws: SQLChannelError.notSent) { try channel.finishDeferred() }
            #expect(try channel.query("SELECT count(*) FROM rows_test WHERE n = -1").first?.int64(0) == 0)
            // A deferred statement that fails is reported by the query it travelled with, not that query's own
            // "transaction is aborted".
            try channel.simple("CREATE UNIQUE INDEX rows_test_n ON rows_test (n)")
            try channel.simple("BEGIN")
            try channel.sendDeferred(insert, columns([[.int(1), .bytes(nil), .bool(nil), .int16(nil)]]))
            do {
                _ = try channel.query("SELECT 1")
                Issue.record("a duplicate row was accepted")
            } catch {
                #expect(sqlState(error) == "23505", "\(error)")
            }
            try channel.simple("ROLLBACK")
        }
    }

    @Test("one-row writes combine into one statement of data-modifying WITH items, parameters renumbered")
    func combinedText() {
        let (sql, values) = SQLChannel.combined([
            ("UPDATE t SET v = $2 WHERE id = $1", [.int(1), .int(2)]),
            ("INSERT INTO u VALUES ($1, $1, 'é$')", [.int(3)]),
        ])
        #expect(
            sql
                == "WITH w0 AS (UPDATE t SET v = $2 WHERE id = $1), w1 AS (INSERT INTO u VALUES ($3, $3, 'é$')) SELECT 1"
        )
        #expect(values.count == 3)
        #expect(SQLChannel.renumbered("SELECT $1, $12", by: 10) == "SELECT $11, $22")
        #expect(SQLChannel.renumbered("SELECT $9", by: 0) == "SELECT $9")
    }

    @Test(
        "combined writes apply in order: a row written twice is written by two statements",
        .enabled(if: TestPostgres.available))
    func combinedWritesKeepOrder() throws {
        try withChannel { channel in
            try channel.simple("CREATE TEMPORARY TABLE combined_test (id int8 PRIMARY KEY, v int8)")
            try channel.simple("INSERT INTO combined_test VALUES (1, 0), (2, 0), (3, 0)")
            let update = "UPDATE combined_test SET v = $2 WHERE id = $1"
            func row(_ id: Int64) -> SQLChannel.RowKey { .init(table: .unit, id: id) }
            try channel.sendDeferred(update, [.int(1), .int(10)], touching: row(1))
            try channel.sendDeferred(update, [.int(2), .int(20)], touching: row(2))
            try channel.sendDeferred(update, [.int(1), .int(11)], touching: row(1))
            try channel.sendDeferred(update, [.int(3), .int(30)], touching: row(3))
            let rows = try channel.query("SELECT v FROM combined_test ORDER BY id")
            #expect(try rows.map { try $0.int64(0) } == [11, 20, 30])
            // A failing write fails its combined statement, and the failure is reported.
            try channel.sendDeferred(update, [.int(1), .int(12)], touching: row(1))
            try channel.sendDeferred("INSERT INTO combined_test VALUES ($1, $2)", [.int(2), .int(0)], touching: row(2))
            do {
                try channel.finishDeferred()
                Issue.record("a duplicate row was accepted")
            } catch {
                #expect(sqlState(error) == "23505", "\(error)")
            }
        }
    }

    @Test("past the per-connection limit statements still run, unprepared", .enabled(if: TestPostgres.available))
    func beyondThePreparedLimit() throws {
        try withChannel { channel in
            for n in 0..<(WireConnection.preparedStatementLimit + 20) {
                let rows = try channel.query("SELECT $1 + \(n)", [.int(1)])
                #expect(try rows.first?.int64(0) == Int64(n + 1))
            }
        }
    }

    @Test("a deferred failure is reported at the next statement as itself", .enabled(if: TestPostgres.available))
    func deferredFailure() throws {
        try withChannel { channel in
            try channel.simple("BEGIN")
            try channel.sendDeferred("SELECT 1 / $1", [.int(0)])
            #expect {
                try channel.query("SELECT 1")
            } throws: { error in
                sqlState(error) == "22012"
            }
            try channel.simple("ROLLBACK")
        }
    }
}
