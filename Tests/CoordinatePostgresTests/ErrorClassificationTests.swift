import Testing

@testable import CoordinatePostgres
@testable import PostgresWire

/// How the backend judges a failed statement. A statement the server skipped because an earlier one of its
/// pipeline failed is judged by that failure: seen during FAIL-2, a skipped statement behind a terminated
/// connection (57P01) was answered "internal error: not run: …" instead of `storage unavailable`.
@Suite("PostgreSQL error classification")
struct ErrorClassificationTests {
    private func serverError(_ code: String) -> WireServerError {
        WireServerError(fields: [UInt8(ascii: "C"): code, UInt8(ascii: "M"): "failed"])
    }

    private func skipped(behind code: String) -> WireStatementSkipped {
        WireStatementSkipped(cause: serverError(code))
    }

    @Test("a skipped statement carries the SQLSTATE of the failure that skipped it")
    func skippedCarriesItsCause() {
        #expect(sqlState(serverError("23505")) == "23505")
        #expect(sqlState(skipped(behind: "57P01")) == "57P01")
        #expect(sqlState(WireConnectionError.closed) == nil)
    }

    @Test("behind a terminated connection it is a connection failure; behind a conflict, a conflict")
    func skippedIsJudgedByItsCause() {
        #expect(isConnectionFailure(skipped(behind: "57P01")))
        #expect(isConnectionFailure(skipped(behind: "08006")))
        #expect(!isConnectionFailure(skipped(behind: "42P01")))
        #expect(PostgresBackend.isConflict(skipped(behind: "40001")))
        #expect(PostgresBackend.isConflict(skipped(behind: "23505")))
        #expect(!PostgresBackend.isConflict(skipped(behind: "42P01")))
        #expect(isDatabaseFailure(skipped(behind: "42P01")))
    }
}
