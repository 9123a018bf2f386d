import CoordinateEngine
import Foundation
import TestSupport
import Testing

/// The SQL backends write unit states, buckets and attempt statuses into statements through ``StoredCode``
/// (issue 19: "SQL uses names derived from the Swift enums, never bare literals").
@Suite("Stored codes in SQL")
struct StoredCodeTests {
    @Test("literals and lists follow the enums")
    func literals() {
        #expect(UnitBucket.pending.sql == String(UnitBucket.pending.rawValue))
        #expect(UnitBucket.sqlList([.failed, .ready, .finished]) == "0, 3, 4")
        #expect(AttemptStatus.sqlList([]) == "")
        #expect(UnitState.available.sql == "1")
        #expect(
            UnitOrder.priority.sql() == "priority DESC, key" && UnitOrder.priority.sql("u") == "u.priority DESC, u.key")
        #expect(UnitOrder.key.sql() == "key")
    }

    @Test("no SQL backend compares or sets a stored code as a bare number, or spells out the ready order")
    func noBareCodes() throws {
        // `bucket = 2`, `a.status = 1`, `state IN (1, 2)`: a column of a stored code next to a number literal.
        let bare = try Regex(#"\b(bucket|status|state)\s*(=|<>|!=|IN\s*\()\s*\d"#).ignoresCase()
        // The ready order is `UnitOrder.priority.sql(…)`, in statements and index definitions alike.
        let order = try Regex(#"priority\s+DESC"#).ignoresCase()
        for module in ["CoordinateSQLite", "CoordinatePostgres"] {
            let folder = TestPaths.repositoryRoot.appendingPathComponent("Sources/\(module)")
            let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
                $0.hasSuffix(".swift")
            }
            #expect(!files.isEmpty)
            for file in files {
                let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                where line.contains(bare) || line.contains(order) {
                    Issue.record("\(module)/\(file):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
    }
}
