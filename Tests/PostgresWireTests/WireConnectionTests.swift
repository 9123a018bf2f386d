import CoordinatePostgres
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import PostgresWire

/// The pipelining PostgreSQL client against the real test server (SCRAM-SHA-256 password authentication).
@Suite("PostgreSQL wire client")
struct WireConnectionTests {
    private func configuration(password: String? = nil) throws -> WireConfiguration {
        var configuration = try PostgresURL(try TestPostgres.url()).configuration()
        if let password { configuration.password = password }
        return configuration
    }

    private func withConnection(_ body: (WireConnection) async throws -> Void) async throws {
        let connection = try await WireConnection.connect(
            to: try configuration(), on: MultiThreadedEventLoopGroup.singleton.next()
        ).get()
        do {
            try await body(connection)
        } catch {
            try await connection.close().get()
            throw error
        }
        try await connection.close().get()
    }

    /// Submits each of `pipelines` at once (no waiting in between) and collects every answer, pipeline by
    /// pipeline.
    private func pipelines(
        _ connection: WireConnection, _ pipelines: [[(String, [WireParameter])]]
    ) async throws
        -> [[Result<[WireRow], any Error>]]
    {
        try await self.pipelines(connection, copying: pipelines.map { $0.map { ($0.0, $0.1, nil) } })
    }

    /// ``pipelines(_:_:)`` whose statements may carry `COPY … FROM STDIN` data.
    private func pipelines(
        _ connection: WireConnection, copying pipelines: [[(String, [WireParameter], ByteBuffer?)]]
    ) async throws
        -> [[Result<[WireRow], any Error>]]
    {
        let count = pipelines.map(\.count).reduce(0, +)
        let answers = NIOLockedValueBox<[Int: Result<[WireRow], any Error>]>([:])
        let order = NIOLockedValueBox<[Int]>([])
        let done = connection.eventLoop.makePromise(of: Void.self)
        var next = 0
        for statements in pipelines {
            connection.submit(
                statements.map { statement in
                    let index = next
                    next += 1
                    return WireRequest(sql: statement.0, parameters: statement.1, copyData: statement.2) { result in
                        answers.withLockedValue { $0[index] = result }
                        let answered = order.withLockedValue { order -> Int in
                            order.append(index)
                            return order.count
                        }
                        if answered == count { done.succeed() }
                    }
                })
        }
        try await done.futureResult.get()
        #expect(order.withLockedValue { $0 } == Array(0..<count), "answered in the order sent")
        var start = 0
        return pipelines.map { statements in
            defer { start += statements.count }
            return (start..<start + statements.count).map { index in answers.withLockedValue { $0[index]! } }
        }
    }

    private func pipeline(
        _ connection: WireConnection, _ statements: [(String, [WireParameter])]
    ) async throws
        -> [Result<[WireRow], any Error>]
    {
        try await pipelines(connection, [statements])[0]
    }

    /// The SQLSTATE of a failed answer, `skipped` for a statement the server skipped, nil for success.
    private static func failure(_ answer: Result<[WireRow], any Error>) -> String? {
        switch answer {
        case .success: return nil
        case .failure(let error as WireServerError): return error.sqlState
        case .failure(is WireStatementSkipped): return "skipped"
        case .failure(let error): return "\(error)"
        }
    }

    private static func int8(_ value: Int64) -> WireParameter {
        var buffer = ByteBuffer()
        buffer.writeInteger(value)
        return WireParameter(type: WireType.int8, value: buffer)
    }

    private static func int64(_ row: WireRow, _ column: Int) -> Int64? {
        guard var cell = row[column] else { return nil }
        return cell.readInteger(as: Int64.self)
    }

    @Test(
        "a pipeline's statements are each answered, in order; a failure skips the rest of its pipeline only",
        .enabled(if: TestPostgres.available))
    func pipelinedAnswers() async throws {
        try await withConnection { connection in
            let doubled = (0..<50).map { index in
                ("SELECT $1 * 2, generate_series(1, 3)::int8", [Self.int8(Int64(index))])
            }
            let answers = try await pipelines(
                connection,
                [
                    doubled,
                    [("SELECT 1::int8", []), ("SELECT 1 / 0", []), ("SELECT 2::int8", []), ("SELECT 3::int8", [])],
                    [("SELECT 4::int8", [])],
                    [("SELECT * FROM no_such_table", []), ("SELECT 5::int8", [])],
                    [("SELECT 6::int8", [])],
                ])
            for (index, answer) in answers[0].enumerated() {
                let rows = try answer.get()
                #expect(rows.map { Self.int64($0, 0) } == Array(repeating: Int64(index) * 2, count: 3))
                #expect(rows.map { Self.int64($0, 1) } == [1, 2, 3])
            }
            #expect(answers[1].map(Self.failure) == [nil, "22012", "skipped", "skipped"])
            #expect(try answers[1][0].get().first.flatMap { Self.int64($0, 0) } == 1)
            #expect(try answers[2][0].get().first.flatMap { Self.int64($0, 0) } == 4)
            #expect(answers[3].map(Self.failure) == ["42P01", "skipped"])
            #expect(try answers[4][0].get().first.flatMap { Self.int64($0, 0) } == 6)
            // A prepared statement that failed or was skipped is parsed afresh next time (its name is forgotten,
            // not reused), and the connection goes on.
            for _ in 0..<2 {
                let again = try await pipelines(
                    connection,
                    [[("SELECT * FROM no_such_table", []), ("SELECT 7::int8", [])], [("SELECT 7::int8", [])]])
                #expect(again[0].map(Self.failure) == ["42P01", "skipped"])
                #expect(try again[1][0].get().first.flatMap { Self.int64($0, 0) } == 7)
            }
        }
    }

    @Test(
        "COPY FROM STDIN travels with its data inside a pipeline; a failed copy skips the rest; no data fails it",
        .enabled(if: TestPostgres.available), .timeLimit(.minutes(1)))
    func copyFromStdin() async throws {
        try await withConnection { connection in
            _ = try await connection.query("CREATE TEMP TABLE wire_copy (n int8, b bytea)")
            let count = (
                "SELECT count(*), coalesce(sum(n), 0)::int8 FROM wire_copy", [WireParameter](), ByteBuffer?.none
            )
            let answers = try await pipelines(
                connection,
                copying: [
                    [
                        ("SELECT 1::int8", [], nil),
                        ("COPY wire_copy FROM STDIN", [], ByteBuffer(string: "1\t\\\\x01\n2\t\\N\n")),
                        count,
                    ],
                    // More data than one CopyData message takes (1 MiB).
                    [
                        (
                            "COPY wire_copy (n) FROM STDIN", [],
                            ByteBuffer(string: String(repeating: "1\n", count: 600_000))
                        )
                    ],
                    [count],
                    // Bad data fails the copy, and the statements behind it are skipped.
                    [("COPY wire_copy (n) FROM STDIN", [], ByteBuffer(string: "x\n")), count],
                ])
            #expect(answers[0].map(Self.failure) == [nil, nil, nil])
            #expect(try answers[0][2].get().first.flatMap { Self.int64($0, 1) } == 3)
            let copied = try await connection.query("SELECT b FROM wire_copy WHERE n = 1")
            #expect(copied.first?[0].map { Array($0.readableBytesView) } == [0x01])
            _ = try answers[1][0].get()
            #expect(try answers[2][0].get().first.flatMap { Self.int64($0, 0) } == 600_002)
            #expect(answers[3].map(Self.failure) == ["22P02", "skipped"])
            // A copy sent without its data, with nothing behind it, fails instead of waiting forever, and the
            // connection goes on.
            let noData = try await pipelines(
                connection, copying: [[count, ("COPY wire_copy (n) FROM STDIN", [], nil)]])
            #expect(noData[0].map(Self.failure) == [nil, "57014"])
            let after = try await pipelines(connection, copying: [[count]])
            #expect(try after[0][0].get().first.flatMap { Self.int64($0, 0) } == 600_002)
        }
    }

    @Test(
        "a transaction sent as one pipeline commits; after an error in it the rest is skipped and it stays aborted",
        .enabled(if: TestPostgres.available))
    func transactionsInOnePipeline() async throws {
        try await withConnection { connection in
            _ = try await connection.query("CREATE TEMP TABLE wire_t (id int8 PRIMARY KEY)")
            let committed = try await pipeline(
                connection,
                [
                    ("BEGIN", []), ("INSERT INTO wire_t VALUES ($1)", [Self.int8(1)]),
                    ("INSERT INTO wire_t VALUES ($1)", [Self.int8(2)]), ("COMMIT", []),
                ])
            for answer in committed { _ = try answer.get() }
            let failed = try await pipelines(
                connection,
                [
                    [
                        ("BEGIN", []), ("INSERT INTO wire_t VALUES ($1)", [Self.int8(3)]),
                        ("INSERT INTO wire_t VALUES ($1)", [Self.int8(1)]),
                        ("INSERT INTO wire_t VALUES ($1)", [Self.int8(4)]), ("COMMIT", []),
                    ],
                    // The transaction is still open and aborted: it refuses statements until it ends.
                    [("SELECT 1", [])], [("ROLLBACK", [])],
                ])
            #expect(failed[0].map(Self.failure) == [nil, nil, "23505", "skipped", "skipped"])
            #expect(Self.failure(failed[1][0]) == "25P02")
            _ = try failed[2][0].get()
            let rows = try await connection.query("SELECT id FROM wire_t ORDER BY id")
            #expect(rows.map { Self.int64($0, 0) } == [1, 2])
        }
    }

    @Test(
        "parameters and results travel in the binary format, arrays and NULL included",
        .enabled(if: TestPostgres.available))
    func binaryValues() async throws {
        try await withConnection { connection in
            var array = ByteBuffer()
            var one = ByteBuffer()
            one.writeInteger(Int64(5))
            array.writeWireArray(elementType: WireType.int8, [one, nil, one])
            var empty = ByteBuffer()
            empty.writeWireArray(elementType: WireType.text, [])
            var text = ByteBuffer()
            text.writeString("é")
            let rows = try await connection.query(
                "SELECT pg_typeof($1)::text, array_length($1, 1)::int8, $1[2] IS NULL, cardinality($2)::int8, $3",
                [
                    WireParameter(type: WireType.int8Array, value: array),
                    WireParameter(type: WireType.textArray, value: empty),
                    WireParameter(type: WireType.text, value: text),
                ])
            let row = try #require(rows.first)
            #expect(row[0].map { String(buffer: $0) } == "bigint[]")
            #expect(Self.int64(row, 1) == 3)
            #expect(row[2].flatMap { $0.getInteger(at: $0.readerIndex, as: UInt8.self) } == 1)
            #expect(Self.int64(row, 3) == 0)
            #expect(row[4].map { String(buffer: $0) } == "é")
            let nulls = try await connection.query(
                "SELECT NULL::int8, $1", [WireParameter(type: WireType.bytea, value: nil)])
            #expect(nulls.first?[0] == nil && nulls.first?[1] == nil)
            // Values far larger than one read of the socket arrive whole, between small rows.
            let large = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let answers = try await pipeline(
                connection,
                [
                    ("SELECT 1::int8", []),
                    (
                        "SELECT $1, g FROM generate_series(1, 3) g",
                        [WireParameter(type: WireType.bytea, value: ByteBuffer(bytes: large))]
                    ),
                    ("SELECT 2::int8", []),
                ])
            let largeRows = try answers[1].get()
            #expect(largeRows.count == 3)
            #expect(largeRows.allSatisfy { $0[0].map { Array($0.readableBytesView) } == large })
            #expect(try answers[2].get().first.flatMap { Self.int64($0, 0) } == 2)
        }
    }

    /// The test URL with `sslmode` set.
    private func url(sslMode: String) throws -> PostgresURL {
        let base = try TestPostgres.url()
        return try PostgresURL(base + (base.contains("?") ? "&" : "?") + "sslmode=" + sslMode)
    }

    @Test(
        "sslmode=require speaks TLS, disable does not; verify-full refuses a certificate it cannot trust",
        .enabled(if: TestPostgres.available))
    func tls() async throws {
        for (mode, encrypted) in [("require", true), ("disable", false)] {
            let connection = try await WireConnection.connect(
                to: try url(sslMode: mode).configuration(), on: MultiThreadedEventLoopGroup.singleton.next()
            ).get()
            let rows = try await connection.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            #expect(rows.first?[0].flatMap { $0.getInteger(at: $0.readerIndex, as: UInt8.self) } == (encrypted ? 1 : 0))
            try await connection.close().get()
        }
        // The test server's certificate is signed by the fixtures' own authority, which the system does not trust.
        await #expect(throws: (any Error).self) {
            let connection = try await WireConnection.connect(
                to: try url(sslMode: "verify-full").configuration(), on: MultiThreadedEventLoopGroup.singleton.next()
            ).get()
            try await connection.close().get()
        }
    }

    @Test("a wrong password is the server's authentication error", .enabled(if: TestPostgres.available))
    func wrongPassword() async throws {
        let attempt = WireConnection.connect(
            to: try configuration(password: "not-the-password"), on: MultiThreadedEventLoopGroup.singleton.next())
        do {
            let connection = try await attempt.get()
            try await connection.close().get()
            Issue.record("connected with a wrong password")
        } catch let error as WireServerError {
            #expect(error.sqlState == "28P01")
        }
    }

    @Test(
        "a connection the server ends fails what is in flight and everything after",
        .enabled(if: TestPostgres.available))
    func terminatedConnection() async throws {
        try await withConnection { victim in
            let pid = try #require(
                try await victim.query("SELECT pg_backend_pid()::int8").first.flatMap { Self.int64($0, 0) })
            let sleeping = Task { try await victim.query("SELECT pg_sleep(30)") }
            try await withConnection { killer in
                // Wait until the victim's statement runs, then end its backend.
                for _ in 0..<500 {
                    let rows = try await killer.query(
                        "SELECT count(*)::int8 FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'SELECT pg_sleep%'",
                        [Self.int8(pid)])
                    if rows.first.flatMap({ Self.int64($0, 0) }) == 1 { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                _ = try await killer.query("SELECT pg_terminate_backend($1::int4)", [Self.int8(pid)])
            }
            do {
                _ = try await sleeping.value
                Issue.record("a terminated statement cannot succeed")
            } catch let error as WireServerError {
                #expect(error.sqlState == "57P01", "the server says why it ended the connection")
            } catch let error as WireConnectionError {
                #expect(error == .closed)
            }
            _ = try? await victim.closeFuture.get()
            await #expect(throws: WireConnectionError.closed) { try await victim.query("SELECT 1") }
        }
    }

    @Test("SCRAM-SHA-256 computes RFC 7677's proof and checks the server's signature")
    func scramVector() throws {
        var client = SCRAMClient(password: "pencil", clientNonce: "rOprNGfwEbeRWgbNEkqO", user: "user")
        #expect(String(decoding: client.clientFirstMessage, as: UTF8.self) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        let final = try client.clientFinalMessage(serverFirst: Array(serverFirst.utf8))
        #expect(
            String(decoding: final, as: UTF8.self)
                == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        )
        try client.verify(serverFinal: Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))
        #expect(throws: WireConnectionError.self) {
            try client.verify(serverFinal: Array("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))
        }
        var other = SCRAMClient(password: "pencil", clientNonce: "abc")
        #expect(throws: WireConnectionError.self) {
            _ = try other.clientFinalMessage(serverFirst: Array("r=xyz,s=AAAA,i=4096".utf8))
        }
    }

    @Test("MD5 passwords are answered as the md5 method defines")
    func md5Answer() {
        // md5(md5("secret" + "alice") + salt), salt 01 02 03 04, computed with Python's hashlib.
        let answer = md5PasswordMessage(user: "alice", password: "secret", salt: [1, 2, 3, 4])
        #expect(String(decoding: answer, as: UTF8.self) == Self.md5Expected)
    }

    static let md5Expected = "md598a0412b9c31436fc53776e863350083"
}
