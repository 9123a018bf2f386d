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
        withUnsafeBytes { mine in other.withUnsafeBytes { theirs in Self.compare(mine, theirs) < 0 } }
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
