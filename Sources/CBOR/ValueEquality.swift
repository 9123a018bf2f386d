extension CBORValue {
    /// The value with the distinctions that *value equality* ignores (wire-protocol.md §5.3.5) removed: text
    /// becomes bytes with the same octets, integral floats within the 64-bit range become integers, maps are
    /// sorted by the normalised encoding of their keys (pairs with equal keys keep their relative order), and
    /// `.encoded` items are expanded. Arrays and tuples stay distinct.
    public var normalized: CBORValue {
        switch self {
        case .text(let octets): return .bytes(octets)
        case .float(let value):
            if value.isFinite, value == value.rounded(.towardZero) {
                if value >= 0, value < 18_446_744_073_709_551_616.0 { return .unsigned(UInt64(value)) }
                if value < 0, value > -18_446_744_073_709_551_616.0 {
                    // -1 - n == value  ⇔  n == -value - 1; the magnitude is an integer in 1 ..< 2^64.
                    return .negative(UInt64(-value) - 1)
                }
            }
            return self
        case .array(let items): return .array(items.map(\.normalized))
        case .tuple(let items): return .tuple(items.map(\.normalized))
        case .map(let map):
            let normalizedPairs = map.pairs.map { CBORPair(key: $0.key.normalized, value: $0.value.normalized) }
            let keyed = normalizedPairs.map { (CBOREncoder.encode($0.key), $0) }
            let sorted = keyed.enumerated().sorted { lhs, rhs in
                if lhs.element.0 != rhs.element.0 { return lhs.element.0.lexicographicallyPrecedes(rhs.element.0) }
                return lhs.offset < rhs.offset
            }
            return .map(CBORMap(sorted.map { $0.element.1 }))
        case .tagged(let tag, let inner): return .tagged(tag, inner.normalized)
        case .encoded(let item): return item.decoded().normalized
        default: return self
        }
    }

    /// Canonical encoding of ``normalized``: two values are value-equal exactly when these bytes are equal.
    public var normalizedEncoding: [UInt8] { CBOREncoder.encode(normalized) }

    /// Value equality (wire-protocol.md §5.3.5), used for lock labels and worker modes.
    public func valueEquals(_ other: CBORValue) -> Bool {
        normalizedEncoding == other.normalizedEncoding
    }
}
