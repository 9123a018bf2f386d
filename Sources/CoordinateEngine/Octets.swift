#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Raw-octet ordering (wire-protocol.md §5.3.4) with `memcmp`: unsigned, lexicographic, a proper prefix first.
/// The generic `lexicographicallyPrecedes` compares element by element through protocol witnesses; unit keys
/// are compared on every index operation, so this matters.
@inlinable
func octetsPrecede(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    let common = min(lhs.count, rhs.count)
    let order = lhs.withUnsafeBufferPointer { l in
        rhs.withUnsafeBufferPointer { r in common == 0 ? 0 : memcmp(l.baseAddress!, r.baseAddress!, common) }
    }
    return order != 0 ? order < 0 : lhs.count < rhs.count
}
