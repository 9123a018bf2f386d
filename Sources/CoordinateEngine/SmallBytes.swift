#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A byte string stored inline when it is at most 15 bytes long (two words, the length in the top byte), and on
/// the heap otherwise. Unit keys and unit data of typical jobs fit inline, which saves two heap blocks per
/// queued unit in the memory backend (storage.md §1.5: at most 300 bytes of memory per queued unit).
struct SmallBytes: Equatable {
    private var low: UInt64 = 0
    private var high: UInt64 = 0
    private var heap: [UInt8]?

    static let inlineCapacity = 15

    init(_ bytes: [UInt8]) {
        guard bytes.count <= Self.inlineCapacity else {
            heap = bytes
            return
        }
        withUnsafeMutableBytes(of: &low) { lowBytes in
            withUnsafeMutableBytes(of: &high) { highBytes in
                for (index, byte) in bytes.enumerated() {
                    if index < 8 { lowBytes[index] = byte } else { highBytes[index - 8] = byte }
                }
                highBytes[7] = UInt8(bytes.count)
            }
        }
    }

    var count: Int {
        if let heap { return heap.count }
        return Int(high >> 56)
    }

    /// The bytes as an array (allocates for inline values).
    var array: [UInt8] {
        if let heap { return heap }
        return withUnsafeBytes { Array($0) }
    }

    /// Calls `body` with the bytes, without allocating.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if let heap { return try heap.withUnsafeBytes(body) }
        var words = (low, high)
        let length = Int(high >> 56)
        return try Swift.withUnsafeBytes(of: &words) { try body(UnsafeRawBufferPointer(rebasing: $0[..<length])) }
    }

    /// Raw-octet order (unsigned, lexicographic, a proper prefix first).
    func precedes(_ other: [UInt8]) -> Bool {
        withUnsafeBytes { mine in
            other.withUnsafeBytes { theirs in Self.compare(mine, theirs) < 0 }
        }
    }

    func follows(_ other: [UInt8]) -> Bool {
        withUnsafeBytes { mine in
            other.withUnsafeBytes { theirs in Self.compare(mine, theirs) > 0 }
        }
    }

    func equals(_ other: [UInt8]) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { mine in other.withUnsafeBytes { theirs in Self.compare(mine, theirs) == 0 } }
    }

    func precedes(_ other: SmallBytes) -> Bool {
        if heap == nil && other.heap == nil { return Self.compareInline(self, other) < 0 }
        return withUnsafeBytes { mine in other.withUnsafeBytes { theirs in Self.compare(mine, theirs) < 0 } }
    }

    /// Raw-octet order of two inline values in a few word comparisons: key lookups and ordered inserts compare
    /// ~20 keys each, and a `memcmp` call per comparison was a fifth of a bulk add's time.
    ///
    /// The bytes read as big-endian words order like the octets themselves. Bytes past the end are zero (the
    /// initializer zero-fills), so when the words tie one value is the other followed by zeros, and the
    /// shorter comes first, as a proper prefix does.
    private static func compareInline(_ a: SmallBytes, _ b: SmallBytes) -> Int32 {
        let first = (UInt64(bigEndian: a.low), UInt64(bigEndian: b.low))
        if first.0 != first.1 { return first.0 < first.1 ? -1 : 1 }
        let withoutLength: UInt64 = 0x00FF_FFFF_FFFF_FFFF
        let second = (UInt64(bigEndian: a.high & withoutLength), UInt64(bigEndian: b.high & withoutLength))
        if second.0 != second.1 { return second.0 < second.1 ? -1 : 1 }
        let counts = (a.high >> 56, b.high >> 56)
        return counts.0 == counts.1 ? 0 : (counts.0 < counts.1 ? -1 : 1)
    }

    static func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int32 {
        let common = min(a.count, b.count)
        if common > 0 {
            let order = memcmp(a.baseAddress!, b.baseAddress!, common)
            if order != 0 { return order }
        }
        return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
    }
}
