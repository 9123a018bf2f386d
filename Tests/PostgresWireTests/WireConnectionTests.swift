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

    /// Submits `statements` in one go and collects each answer.
    private func pipeline(
        _ connection: WireConnection, _ statements: [(String, [WireParameter])]
    ) async throws
        -> [Result<[WireRow], any Error>]
    {
        let answers = NIOLockedValueBox<[Int: Result<[WireRow], any Error>]>([:])
        let order = NIOLockedValueBox<[Int]>([])
        let done = connection.eventLoop.makePromise(of: Void.self)
        let count = statements.count
        connection.submit(
            statements.enumerated().map { index, statement in
                WireRequest(sql: statement.0, parameters: statement.1) { result in
                    answers.withLockedValue { $0[index] = result }
                    let answered = order.withLockedValue { order -> Int in
                        order.append(index)
                        return order.count
                    }
                    if answered == count { done.succeed() }
                }
            })
        try await done.futureResult.get()
        #expect(order.withLockedValue { $0 } == Array(0..<count), "answered in the order sent")
        return (0..<count).map { index in answers.withLockedValue { $0[index]! } }
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
        "statements sent together are each answered, in order, a failure only failing its own statement",
        .enabled(if: TestPostgres.available))
    func pipelinedAnswers() async throws {
        try await withConnection { connection in
            var statements: [(String, [WireParameter])] = []
            for index in 0..<50 {
                statements.append(("SELECT $1 * 2, generate_series(1, 3)::int8", [Self.int8(Int64(index))]))
            }
            statements.insert(("SELECT 1 / 0", []), at: 10)
            statements.insert(("SELECT * FROM no_such_table", []), at: 20)
            let answers = try await pipeline(connection, statements)
            var index: Int64 = 0
            for (position, answer) in answers.enumerated() {
                switch position {
                case 10:
                    #expect((try? answer.get()) == nil)
                    if case .failure(let error as WireServerError) = answer { #expect(error.sqlState == "22012") }
                case 20:
                    if case .failure(let error as WireServerError) = answer {
                        #expect(error.sqlState == "42P01")
                    } else {
                        Issue.record("a missing table is the server's error: \(answer)")
                    }
                default:
                    let rows = try answer.get()
                    #expect(rows.count == 3)
                    #expect(rows.map { Self.int64($0, 0) } == Array(repeating: index * 2, count: 3))
                    #expect(rows.map { Self.int64($0, 1) } == [1, 2, 3])
                    index += 1
                }
            }
            // The connection is still usable, and a prepared statement that failed is parsed afresh next time
            // (its name is forgotten, not reused).
            for _ in 0..<2 {
                let again = try await pipeline(
                    connection, [("SELECT * FROM no_such_table", []), ("SELECT 7::int8", [])])
                #expect((try? again[0].get()) == nil)
                #expect(try again[1].get().first.flatMap { Self.int64($0, 0) } == 7)
            }
        }
    }

    @Test(
        "a transaction sent as one pipeline commits; an error inside it aborts the rest until ROLLBACK",
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
            let failed = try await pipeline(
                connection,
                [
                    ("BEGIN", []), ("INSERT INTO wire_t VALUES ($1)", [Self.int8(3)]),
                    ("INSERT INTO wire_t VALUES ($1)", [Self.int8(1)]),
                    ("INSERT INTO wire_t VALUES ($1)", [Self.int8(4)]), ("ROLLBACK", []),
                ])
            if case .failure(let error as WireServerError) = failed[2] {
                #expect(error.sqlState == "23505")
            } else {
                Issue.record("the duplicate key fails: \(failed[2])")
            }
            if case .failure(let error as WireServerError) = failed[3] {
                #expect(error.sqlState == "25P02", "the statement after the failure is refused")
            } else {
                Issue.record("the aborted transaction refuses statements: \(failed[3])")
            }
            _ = try failed[4].get()
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
