import CBOR
import CoordinateEngine
import Testing

/// The integrity check of stored unit data (docs/operations.md "Damage the daemon detects").
@Suite("Stored data integrity")
struct StoredDataTests {
    @Test("CRC-32C matches the published check values, across the eight-byte steps and the tail")
    func checkValues() {
        // RFC 3720 B.4 and the usual "123456789" check value of CRC-32C.
        #expect(StoredData.checksum(Array("123456789".utf8)) == 0xe306_9283)
        #expect(StoredData.checksum([UInt8](repeating: 0, count: 32)) == 0x8a91_36aa)
        #expect(StoredData.checksum([UInt8](repeating: 0xff, count: 32)) == 0x62a8_ab43)
        #expect(StoredData.checksum((0..<32).map { UInt8($0) }) == 0x46dd_794e)
        #expect(StoredData.checksum([]) == 0)
        // Every split between the sliced loop and the byte loop agrees with a bitwise reference.
        let bytes = (0..<67).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        for length in 0...bytes.count {
            #expect(StoredData.checksum(Array(bytes[..<length])) == bitwise(Array(bytes[..<length])))
        }
    }

    @Test("intact data passes; a changed byte or ill-formed CBOR yields the replacement and the reason")
    func verification() {
        let value = StoredValue(encoding: .map(CBORMap([("text", "hello")])))
        let checksum = StoredData.checksum(value.bytes)
        let intact = StoredData.verified(value.bytes, checksum: checksum)
        #expect(intact.0 == value && intact.damage == nil)
        // Legacy rows without a checksum are still checked for well-formedness.
        #expect(StoredData.verified(value.bytes, checksum: nil).damage == nil)

        var changed = value.bytes
        changed[changed.count - 1] ^= 0x01
        let mismatch = StoredData.verified(changed, checksum: checksum)
        #expect(mismatch.damage == "checksum mismatch")
        #expect(mismatch.0 == StoredData.replacement(for: "checksum mismatch"))
        #expect(
            mismatch.0.decoded().mapValue?["traceback"]
                == .text(
                    Array(
                        "coordinate: the stored data of this work unit is damaged (checksum mismatch); its bytes were withheld"
                            .utf8)))

        for bad: [UInt8] in [[], [0xa1, 0x61, 0x6e], [0xa0, 0xa0], [0xff], [0x5f, 0x41]] {
            #expect(StoredData.verified(bad, checksum: nil).damage == "not one well-formed CBOR item", "\(bad)")
        }
    }

    @Test("a damaged unit keeps its stored bytes until someone gives it new data")
    func writesOfDamagedUnits() {
        var unit = UnitRecord(
            specID: 1, key: Identifier(text: "k"), data: StoredData.replacement(for: "checksum mismatch"))
        unit.damage = "checksum mismatch"
        #expect(StoredData.bytesToWrite(for: unit) == nil)
        unit.data = StoredValue(encoding: .map(CBORMap([("n", 1)])))
        let write = StoredData.bytesToWrite(for: unit)
        #expect(write?.bytes == unit.data.bytes)
        #expect(write?.checksum == Int64(StoredData.checksum(unit.data.bytes)))
    }

    private func bitwise(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82f6_3b78 : crc >> 1 }
        }
        return ~crc
    }
}
