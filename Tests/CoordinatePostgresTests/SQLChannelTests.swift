import Logging
import NIOPosix
import PostgresNIO
import TestSupport
import Testing

@testable import CoordinatePostgres

/// The statement channel under the PostgreSQL store: statements prepared once per connection with typed
/// parameters, answers read in the binary format.
@Suite("SQL statement channel")
struct SQLChannelTests {
    @Test("every parameter is cast to the type of its value")
    func typedParameters() {
        let values: [SQLValue] = [
            .int(1), .int16(2), .double(3), .bool(true), .bytes([1]), .text("x"), .int(nil), .int(8), .int(9),
            .bytes(nil),
        ]
        #expect(
            SQLChannel.typed("SELECT $1, $10 FROM t WHERE a = $2 AND b IN ($3,$4) LIMIT $9", values)
                == "SELECT $1::int8, $10::bytea FROM t WHERE a = $2::int2 AND b IN ($3::float8,$4::bool) LIMIT $9::int8"
        )
        // A dollar that is not a parameter, and a parameter beyond the values, stay as they are.
        #expect(SQLChannel.typed("SELECT '$', $7", [.int(1)]) == "SELECT '$', $7")
        #expect(SQLChannel.typed("SELECT $1", [.text(nil)]) == "SELECT $1::text")
    }

    private func withChannel(_ body: (SQLChannel) throws -> Void) throws {
        let url = try PostgresURL(try TestPostgres.url())
        let logger = Logger(label: "sql-channel-test")
        let connection = try PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: try url.configuration(), id: 1,
            logger: logger
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

    @Test("past the per-connection limit statements still run, unprepared", .enabled(if: TestPostgres.available))
    func beyondThePreparedLimit() throws {
        try withChannel { channel in
            for n in 0..<(SQLChannel.preparedStatementLimit + 20) {
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
