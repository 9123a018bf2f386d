import CBOR
import CoordinateEngine
import CoordinateSQLite
import Foundation
import TestSupport
import Testing

/// The WAL must not grow without bound between periodic checkpoints (storage.md §3.2): a write-heavy burst
/// triggers background checkpoints, so SQLite restarts a small WAL instead of extending it.
@Suite("SQLite write-ahead log")
struct WALTests {
    @Test("128 MiB written back to back leaves a WAL far smaller than what was written")
    func walStaysSmall() async throws {
        let directory = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withDaemons { group in
            let daemon = try await group.startSQLite(directory)
            let connection = try await daemon.connect()
            _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
            let payload = CBORValue.bytes([UInt8](repeating: 0x5a, count: 1 << 20))
            for index in 0..<128 {
                let item: CBORValue = [.bytes(Array("u\(index)".utf8)), cbormap([("blob", payload)])]
                #expect(try await connection.result("add_work_units", ["s", [item]]) == .tuple([true, .null]))
            }
            let wal = try FileManager.default.attributesOfItem(atPath: directory + "/coordinate.sqlite3-wal")
            let walBytes = (wal[.size] as? NSNumber)?.intValue ?? -1
            #expect(walBytes >= 0)
            #expect(walBytes < 40 << 20, "WAL is \(walBytes) bytes after 128 MiB of writes")
            // Everything written is still there (state 1 is AVAILABLE).
            #expect(try await connection.result("count_work_units", ["s"]) == .tuple([cbormap([(1, 128)]), .null]))
        }
    }

    @Test("a background checkpoint copies the WAL into the database before the writer has to")
    func backgroundCheckpoint() async throws {
        let directory = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withDaemons { group in
            // The periodic checkpoint is pushed out of the way, so only the size-triggered one can copy the WAL.
            let daemon = try await group.startSQLite(
                directory,
                environment: ["COORDINATE_TESTING": "1", "COORDINATE_TEST_SQLITE_CHECKPOINT_SECONDS": "100000"])
            let connection = try await daemon.connect()
            _ = try await connection.result("set_work_spec", [cbormap([("name", "s")])])
            // ~6 MiB: past the background threshold (1 000 frames), short of the writer's (4 000 frames).
            let payload = CBORValue.bytes([UInt8](repeating: 0xa5, count: 1 << 20))
            for index in 0..<6 {
                let item: CBORValue = [.bytes(Array("u\(index)".utf8)), cbormap([("blob", payload)])]
                #expect(try await connection.result("add_work_units", ["s", [item]]) == .tuple([true, .null]))
            }
            // The pass starts once the WAL holds 1 000 frames (4 KiB pages), so at least that much reaches the
            // database file; only the periodic checkpoint, pushed away here, would copy the rest.
            let database = directory + "/coordinate.sqlite3"
            var size = 0
            let copied = await eventually(60) {
                size =
                    ((try? FileManager.default.attributesOfItem(atPath: database))?[.size] as? NSNumber)?.intValue ?? 0
                return size >= 1000 * 4096
            }
            #expect(copied, "database file is \(size) bytes; the WAL was not checkpointed")
        }
    }

    @Test("the WAL is copied once per 1 000 frames written, not once per commit past them")
    func backgroundPassesPerThousandFrames() async throws {
        let path = temporaryDataDirectory() + "/coordinate.sqlite3"
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let backend = try await openSQLiteBackend(at: path)
        let engine = Engine(backend: backend)
        let namespace = Identifier(text: "")
        let spec = Identifier(bytes: "s")
        try await engine.perform(.write) { tx in
            _ = try tx.setWorkSpec(namespace: namespace, data: CBORMap([("name", "s")]))
        }
        // Each commit adds one unit whose 9 KiB of data take a table page and three overflow pages, plus index
        // and counter pages: about 8 frames a commit, some 2 400 in all, short of the writer's own checkpoint at
        // 4 000 frames (which would rewind the WAL and start the count again).
        let data = StoredValue(encoding: cbormap([("blob", .bytes([UInt8](repeating: 0x3c, count: 9 << 10)))]))
        for index in 0..<300 {
            try await engine.perform(.write) { tx in
                _ = try tx.addWorkUnits(
                    namespace: namespace, spec: spec,
                    UnitItemBatch([UnitItem(key: Identifier(bytes: "u\(index)"), data: data)]))
            }
        }
        var passes = 0
        let started = await eventually(60) {
            passes = backend.counters.first { $0.name == "wal_checkpoints" }?.value ?? 0
            return passes >= 1
        }
        // One pass per 1 000 frames, and one more when a commit crossed a step while a pass ran. Started at every
        // commit past the first 1 000 frames, as they were, they numbered in the dozens.
        #expect(started && passes <= 5, "\(passes) background passes")
        await backend.close()
    }
}
