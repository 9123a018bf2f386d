import CBOR
import Foundation
import Testing

/// SQL access to a daemon's database from outside it, as an operator (or a bad disk) would change it.
public struct DatabaseAccess: Sendable {
    /// Runs one statement and returns its output (one row per line, for a query).
    public var run: @Sendable (String) async throws -> String
    /// A blob literal of `bytes`.
    public var blob: @Sendable ([UInt8]) -> String
    /// An expression giving the lower-case hex digits of the blob `column`.
    public var hex: @Sendable (String) -> String

    public init(
        run: @escaping @Sendable (String) async throws -> String, blob: @escaping @Sendable ([UInt8]) -> String,
        hex: @escaping @Sendable (String) -> String
    ) {
        self.run = run
        self.blob = blob
        self.hex = hex
    }

    /// The stored data of the unit `key` of any spec, as lower-case hex.
    public func storedData(_ key: String) async throws -> String {
        try await run("SELECT \(hex("data")) FROM work_unit WHERE key = \(blob(Array(key.utf8)))")
    }
}

/// Damage to stored unit data, as the probe of issue 15 made it (docs/operations.md "Damage the daemon
/// detects"): bytes overwritten inside a unit's data that keep it well-formed CBOR, and data that is not CBOR.
/// Neither may reach a client: each unit is reported as damaged, is never granted, is logged once and counted,
/// and the damaged bytes stay in the database.
public enum StorageDamageScenario {
    /// Runs the scenario on a daemon that `start` starts and `restart` restarts over the same database.
    public static func run(
        database: DatabaseAccess, backend: String, start: () async throws -> DaemonProcess,
        restart: (DaemonProcess) async throws -> DaemonProcess
    ) async throws {
        var daemon = try await start()
        let setup = try await daemon.connect()
        _ = try await setup.result("set_work_spec", [.map(CBORMap([("name", "d")]))])
        let units: CBORValue = [
            ["intact", .map(CBORMap([("n", 1)]))], ["overwritten", .map(CBORMap([("text", "hello, world")]))],
            ["garbled", .map(CBORMap([("n", 3)]))],
        ]
        _ = try await setup.result("add_work_units", ["d", units])
        daemon = try await restart(daemon)

        // One byte of the text changes: still well-formed CBOR, so only the checksum can tell.
        let stored = try await database.storedData("overwritten")
        let overwritten = String(stored.dropLast(2)) + (stored.hasSuffix("64") ? "65" : "64")
        _ = try await database.run(
            "UPDATE work_unit SET data = \(database.blob(hexBytes(overwritten))) "
                + "WHERE key = \(database.blob(Array("overwritten".utf8)))")
        // A map whose value is missing, in a row from before checksums were kept: the CBOR check must catch it.
        _ = try await database.run(
            "UPDATE work_unit SET data = \(database.blob([0xa1, 0x61, 0x6e])), data_crc = NULL "
                + "WHERE key = \(database.blob(Array("garbled".utf8)))")
        daemon = try await restart(daemon)

        let connection = try await daemon.connect()
        for _ in 0..<3 {
            let data = try await listing(connection)
            #expect(data["intact"] == .map(CBORMap([("n", 1)])), "\(data)")
            #expect(traceback(data["overwritten"])?.contains("damaged (checksum mismatch)") == true, "\(data)")
            #expect(traceback(data["garbled"])?.contains("damaged (not one well-formed CBOR item)") == true, "\(data)")
        }
        // REST shows the same replacement, not null.
        let rest = try await daemon.http.request("GET", "/namespace/-/work_spec/d/work_unit/overwritten")
        #expect(rest.status == 200)
        #expect(rest.text.contains("the stored data of this work unit is damaged (checksum mismatch)"), "\(rest.text)")

        // get_work grants only the intact unit; the damaged ones fail instead.
        let granted = try await connection.result("get_work", ["w", .map(CBORMap([("max_jobs", 3)]))]).expanded
        let grantedKeys = granted.listElements?.first?.listElements?.map { text($0.listElements?[1]) }
        #expect(grantedKeys == ["intact"], "\(granted)")
        let counts = try await connection.result("count_work_units", ["d"]).expanded.listElements?.first
        #expect(counts == .map(CBORMap([(3, 1), (5, 2)])), "\(String(describing: counts))")
        // Failing them kept the damaged bytes, so they stay reported as damaged.
        #expect(try await database.storedData("overwritten") == overwritten)
        #expect(try await database.storedData("garbled") == "a1616e")

        let metrics = try await daemon.http.request("GET", "/metrics").text
        let line = metrics.split(separator: "\n").first {
            $0.hasPrefix("coordinate_storage_damaged_values_total{backend=\"\(backend)\"}")
        }
        let count = line.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } } ?? 0
        #expect(count >= 6, "\(line.map(String.init) ?? "no damage counter")")

        // Adding the unit again replaces the damage with good data.
        _ = try await connection.result("add_work_units", ["d", [["overwritten", .map(CBORMap([("n", 9)]))]]])
        #expect(try await listing(connection)["overwritten"] == .map(CBORMap([("n", 9)])))

        await daemon.stop()
        let log = await daemon.child.result().stderr.split(separator: "\n").filter {
            $0.contains("stored data is damaged")
        }
        // Each damaged unit once, however often it was read.
        #expect(log.count == 2, "\(log)")
    }

    /// The units of spec `d` by key, from `get_work_units`.
    static func listing(_ connection: RawConnection) async throws -> [String: CBORValue] {
        let result = try await connection.result("get_work_units", ["d", .map(CBORMap())]).expanded
        var units: [String: CBORValue] = [:]
        for pair in result.listElements?.first?.listElements ?? [] {
            guard let items = pair.listElements, items.count == 2, let key = text(items[0]) else { continue }
            units[key] = items[1]
        }
        return units
    }

    static func text(_ value: CBORValue?) -> String? {
        switch value {
        case .text(let octets), .bytes(let octets): return String(decoding: octets, as: UTF8.self)
        default: return nil
        }
    }

    static func traceback(_ value: CBORValue?) -> String? {
        text(value?.mapValue?["traceback"])
    }

    public static func hexBytes(_ hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return bytes
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
