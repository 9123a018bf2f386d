import CBOR

/// The integrity of stored unit data (storage.md §1.3; docs/operations.md "Damage the daemon detects").
///
/// Durable backends keep a CRC-32C of each unit's data next to it and give every unit they read to
/// ``verified(_:checksum:)``: data whose checksum does not match, or that is not exactly one well-formed CBOR
/// item, is damage. It is never sent on: the unit carries a replacement that says what happened (a `traceback`,
/// as a failed unit has) and ``UnitRecord/damage``, and the engine fails such a unit rather than grant it.
public enum StoredData {
    /// CRC-32C (Castagnoli) of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        bytes.withUnsafeBufferPointer { buffer in
            var index = 0
            let count = buffer.count
            // Eight bytes per step through the sliced tables.
            while count - index >= 8 {
                let low =
                    crc
                    ^ (UInt32(buffer[index]) | UInt32(buffer[index + 1]) << 8 | UInt32(buffer[index + 2]) << 16
                        | UInt32(buffer[index + 3]) << 24)
                crc =
                    table[7][Int(low & 0xff)] ^ table[6][Int((low >> 8) & 0xff)]
                    ^ table[5][Int((low >> 16) & 0xff)] ^ table[4][Int(low >> 24)]
                    ^ table[3][Int(buffer[index + 4])] ^ table[2][Int(buffer[index + 5])]
                    ^ table[1][Int(buffer[index + 6])] ^ table[0][Int(buffer[index + 7])]
                index += 8
            }
            while index < count {
                crc = table[0][Int((crc ^ UInt32(buffer[index])) & 0xff)] ^ (crc >> 8)
                index += 1
            }
        }
        return ~crc
    }

    /// The slicing-by-8 tables of the reflected Castagnoli polynomial.
    private static let table: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82f6_3b78 : crc >> 1 }
            tables[0][byte] = crc
        }
        for byte in 0..<256 {
            for slice in 1..<8 {
                let previous = tables[slice - 1][byte]
                tables[slice][byte] = tables[0][Int(previous & 0xff)] ^ (previous >> 8)
            }
        }
        return tables
    }()

    /// The value to use for data read from storage, and why it is damaged (nil when it is intact).
    ///
    /// - Parameter checksum: the stored CRC-32C; nil for data written before checksums were kept, which is then
    ///   only checked for being one well-formed CBOR item.
    public static func verified(_ bytes: [UInt8], checksum stored: UInt32?) -> (StoredValue, damage: String?) {
        if let stored, checksum(bytes) != stored {
            return damaged("checksum mismatch")
        }
        var framer = CBORStreamFramer(maxMessageBytes: max(1, bytes.count), maxDepth: 100_000)
        let framed = bytes.withUnsafeBytes { framer.next(in: $0) }
        guard framed == .message(length: bytes.count) else { return damaged("not one well-formed CBOR item") }
        return (StoredValue(uncheckedCanonicalBytes: bytes), nil)
    }

    private static func damaged(_ reason: String) -> (StoredValue, damage: String?) {
        (replacement(for: reason), reason)
    }

    /// What a unit whose stored data is damaged for `reason` carries instead of it.
    public static func replacement(for reason: String) -> StoredValue {
        let message = "coordinate: the stored data of this work unit is damaged (\(reason)); its bytes were withheld"
        return StoredValue(encoding: .map(CBORMap([(.text("traceback"), .text(message))])))
    }

    /// The data bytes and checksum a backend writes for `unit`, or nil when it must keep the stored ones.
    ///
    /// A damaged unit whose data nobody replaced still carries ``replacement(for:)``: its damaged bytes stay as
    /// they are (for whoever investigates, and so that every later read reports the damage again) instead of
    /// the placeholder becoming the unit's data with a valid checksum — which would let it be granted.
    public static func bytesToWrite(for unit: UnitRecord) -> (bytes: [UInt8], checksum: Int64)? {
        if let damage = unit.damage, unit.data == replacement(for: damage) { return nil }
        let bytes = unit.data.bytes
        return (bytes, checksumColumn(bytes))
    }

    /// The checksum of `bytes` as the backends store it: an integer column (read back by
    /// ``DamageFindings/unitData(_:checksum:unit:)``).
    public static func checksumColumn(_ bytes: [UInt8]) -> Int64 {
        Int64(checksum(bytes))
    }
}

/// Damage a backend found while reading, reported by the engine after the operation (log and metric).
public struct StoredDamage: Sendable, Equatable {
    /// What held the damaged data: `work unit <id>` or `attempt <id>`.
    public var location: String
    /// Why it is damaged: `checksum mismatch`, `not one well-formed CBOR item`.
    public var reason: String

    public init(location: String, reason: String) {
        self.location = location
        self.reason = reason
    }
}

/// What a backend session found damaged while reading, until the engine takes it (``StorageSession/takeDamage()``).
public struct DamageFindings: Sendable {
    private var found: [StoredDamage] = []

    public init() {}

    /// A unit's stored data and its stored checksum column (the CRC-32C as an integer; nil for data written
    /// before checksums were kept), checked by ``StoredData/verified(_:checksum:)``.
    public mutating func unitData(
        _ bytes: [UInt8], checksum: Int64?, unit id: Int64
    ) -> (
        StoredValue, damage: String?
    ) {
        verified(bytes, checksum: checksum.map { UInt32(truncatingIfNeeded: $0) }, location: "work unit \(id)")
    }

    /// A unit's own data kept while an attempt's stands in (``UnitRecord/originalData``), checked for being
    /// well-formed (it has no checksum).
    public mutating func originalUnitData(_ bytes: [UInt8]?, unit id: Int64) -> StoredValue? {
        bytes.map { value($0, location: "work unit \(id) (own data)") }
    }

    /// A spec's stored data, checked for being well-formed (it has no checksum).
    public mutating func specData(_ bytes: [UInt8], spec id: Int64) -> StoredValue {
        value(bytes, location: "work spec \(id)")
    }

    /// An attempt's stored data, checked for being well-formed.
    public mutating func attemptData(_ bytes: [UInt8], attempt id: Int64) -> StoredValue {
        value(bytes, location: "attempt \(id)")
    }

    /// A worker's stored mode, checked for being well-formed.
    public mutating func workerMode(_ bytes: [UInt8], worker: Identifier) -> StoredValue {
        value(bytes, location: "mode of worker \(worker)")
    }

    /// A worker's stored data, checked for being well-formed.
    public mutating func workerData(_ bytes: [UInt8], worker: Identifier) -> StoredValue {
        value(bytes, location: "data of worker \(worker)")
    }

    /// A lock's stored path, checked for being well-formed.
    public mutating func lockPath(_ bytes: [UInt8]) -> StoredValue {
        value(bytes, location: "lock path")
    }

    private mutating func verified(
        _ bytes: [UInt8], checksum: UInt32?, location: @autoclosure () -> String
    ) -> (StoredValue, damage: String?) {
        let result = StoredData.verified(bytes, checksum: checksum)
        if let reason = result.damage { found.append(StoredDamage(location: location(), reason: reason)) }
        return result
    }

    private mutating func value(_ bytes: [UInt8], location: @autoclosure () -> String) -> StoredValue {
        verified(bytes, checksum: nil, location: location()).0
    }

    public mutating func take() -> [StoredDamage] {
        defer { found.removeAll() }
        return found
    }
}
