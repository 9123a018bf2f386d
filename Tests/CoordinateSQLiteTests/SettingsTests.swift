import Foundation
import TestSupport
import Testing

@testable import CoordinateSQLite

/// storage.md §3.2: the database runs with `synchronous=FULL`, so that every acknowledged commit survives an
/// operating-system crash or power loss (§1.2.2). GRDB switches WAL connections to NORMAL on its own.
@Suite("SQLite settings")
struct SettingsTests {
    @Test("the writer syncs the WAL at every commit (synchronous = FULL), on a new and on an existing database")
    func synchronousFull() async throws {
        let directory = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for _ in 0..<2 {
            let backend = try await openSQLiteBackend(at: directory + "/coordinate.sqlite3")
            #expect(backend.health().isAvailable)
            #expect(try await offCooperativePool { try backend.synchronousLevel() } == 2)
            await backend.close()
        }
    }
}
