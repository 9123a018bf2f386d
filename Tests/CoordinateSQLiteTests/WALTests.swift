import CBOR
import Foundation
import TestSupport
import Testing

/// The WAL must not grow without bound between periodic checkpoints (storage.md §3.2): a write-heavy burst
/// triggers background checkpoints, so SQLite restarts a small WAL instead of extending it.
@Suite("SQLite write-ahead log")
struct WALTests {
    @Test("128 MiB written back to back leaves a WAL far smaller than what was written")
    func walStaysSmall() throws {
        let directory = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startSQLiteDaemon(directory)
        defer { daemon.stop() }
        let connection = try RawConnection(port: daemon.port)
        _ = try connection.result("set_work_spec", [cbormap([("name", "s")])])
        let payload = CBORValue.bytes([UInt8](repeating: 0x5a, count: 1 << 20))
        for index in 0..<128 {
            let item: CBORValue = [.bytes(Array("u\(index)".utf8)), cbormap([("blob", payload)])]
            #expect(try connection.result("add_work_units", ["s", [item]]) == .tuple([true, .null]))
        }
        let wal = try FileManager.default.attributesOfItem(atPath: directory + "/coordinate.sqlite3-wal")
        let walBytes = (wal[.size] as? NSNumber)?.intValue ?? -1
        #expect(walBytes >= 0)
        #expect(walBytes < 40 << 20, "WAL is \(walBytes) bytes after 128 MiB of writes")
        // Everything written is still there (state 1 is AVAILABLE).
        #expect(try connection.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 128)]), .null]))
    }

    @Test("a background checkpoint copies the WAL into the database before the writer has to")
    func backgroundCheckpoint() throws {
        let directory = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startSQLiteDaemon(directory)
        defer { daemon.stop() }
        let connection = try RawConnection(port: daemon.port)
        _ = try connection.result("set_work_spec", [cbormap([("name", "s")])])
        // ~6 MiB: past the background threshold (1 000 frames), short of the writer's (4 000 frames).
        let payload = CBORValue.bytes([UInt8](repeating: 0xa5, count: 1 << 20))
        for index in 0..<6 {
            let item: CBORValue = [.bytes(Array("u\(index)".utf8)), cbormap([("blob", payload)])]
            #expect(try connection.result("add_work_units", ["s", [item]]) == .tuple([true, .null]))
        }
        let database = directory + "/coordinate.sqlite3"
        var size = 0
        for _ in 0..<250 {  // 5 s: well before the periodic checkpoint (every 10 s)
            size = ((try? FileManager.default.attributesOfItem(atPath: database))?[.size] as? NSNumber)?.intValue ?? 0
            if size > 5 << 20 { break }
            usleep(20_000)
        }
        #expect(size > 5 << 20, "database file is \(size) bytes; the WAL was not checkpointed")
    }
}
