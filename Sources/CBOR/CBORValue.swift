/// A decoded CBOR data item, preserving everything the Coordinate wire protocol requires to echo values
/// back value-identically (wire-protocol.md §5): byte versus text strings (text keeps its raw octets, valid
/// UTF-8 or not), tuples (tag 128), UUIDs (tag 37), unknown tags, map pair order and duplicate keys, the full
/// 65-bit integer range, simple values and NaN payload-free floats.
///
/// Equality (`==`) is *strict* structural equality: bytes ≠ text, tuple ≠ array, integer ≠ float, and maps
/// compare pair by pair in order. The looser comparisons the protocol uses elsewhere live in
/// ``CBORValue/identifierOctets`` (identifier equality) and ``CBORValue/valueEquals(_:)`` (lock labels).
public enum CBORValue: Sendable {
    /// Major type 0: a non-negative integer.
    case unsigned(UInt64)
    /// Major type 1: the integer `-1 - n`.
    case negative(UInt64)
    /// Major type 2.
    case bytes([UInt8])
    /// Major type 3, kept as raw octets (invalid UTF-8 is tolerated and preserved).
    case text([UInt8])
    /// Major type 4.
    case array([CBORValue])
    /// Major type 5, as an ordered list of pairs.
    case map(CBORMap)
    /// Tag 128 wrapping an array: a Python tuple.
    case tuple([CBORValue])
    /// Tag 37 wrapping a 16-byte byte string.
    case uuid(CBORUUID)
    /// Any other tag (or tag 37/128 with unexpected content), preserved opaquely.
    indirect case tagged(UInt64, CBORValue)
    /// `f4` / `f5`.
    case bool(Bool)
    /// `f6`, and `f7` (undefined) which Python reads as `None`.
    case null
    /// Other simple values, re-emitted unchanged.
    case simple(UInt8)
    /// Any float width, widened to float64.
    case float(Double)
    /// An item that is already in canonical encoded form (wire-protocol.md §5.2). The decoder never produces
    /// this case; the engine uses it to splice stored unit data into responses without decoding it.
    case encoded(CBOREncodedItem)
}

/// An ordered CBOR map: the pairs exactly as received, duplicates included.
public struct CBORMap: Sendable, Equatable, Hashable {
    public var pairs: [CBORPair]

    @inlinable
    public init(_ pairs: [CBORPair] = []) { self.pairs = pairs }

    @inlinable
    public init(_ pairs: [(CBORValue, CBORValue)]) {
        self.pairs = pairs.map { CBORPair(key: $0.0, value: $0.1) }
    }

    @inlinable public var count: Int { pairs.count }
    @inlinable public var isEmpty: Bool { pairs.isEmpty }

    /// Looks a key up by identifier equality (raw octets, either string kind). The **last** matching pair
    /// wins (wire-protocol.md §5.3.2). Non-string keys never match.
    @inlinable
    public subscript(identifier name: [UInt8]) -> CBORValue? {
        for pair in pairs.reversed() {
            if let octets = pair.key.stringOctets, octets == name { return pair.value }
        }
        return nil
    }

    /// ASCII convenience for ``subscript(identifier:)``.
    @inlinable
    public subscript(_ name: StaticString) -> CBORValue? {
        let bytes = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        for pair in pairs.reversed() {
            if let octets = pair.key.stringOctets, octets.elementsEqual(bytes) { return pair.value }
        }
        return nil
    }

    /// Whether a key with these octets is present (identifier equality).
    @inlinable
    public func contains(identifier name: [UInt8]) -> Bool {
        pairs.contains { $0.key.stringOctets == name }
    }

    @inlinable
    public mutating func append(_ key: CBORValue, _ value: CBORValue) {
        pairs.append(CBORPair(key: key, value: value))
    }
}

/// One key/value pair of a ``CBORMap``.
public struct CBORPair: Sendable, Equatable, Hashable {
    public var key: CBORValue
    public var value: CBORValue

    @inlinable
    public init(key: CBORValue, value: CBORValue) {
        self.key = key
        self.value = value
    }
}

/// The 16 octets of a tag-37 UUID.
public struct CBORUUID: Sendable, Hashable {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 {
                high = high << 8 | UInt64(byte)
            } else {
                low = low << 8 | UInt64(byte)
            }
        }
        self.init(high: high, low: low)
    }

    public var bytes: [UInt8] {
        var result = [UInt8]()
        result.reserveCapacity(16)
        for shift in stride(from: 56, through: 0, by: -8) {
            result.append(UInt8(truncatingIfNeeded: high >> UInt64(shift)))
        }
        for shift in stride(from: 56, through: 0, by: -8) {
            result.append(UInt8(truncatingIfNeeded: low >> UInt64(shift)))
        }
        return result
    }

    /// Canonical 8-4-4-4-12 lower-case hex form.
    public var canonicalString: String {
        let hex = bytes.map { byte -> String in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xf)]], as: UTF8.self)
        }
        return hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-"
            + hex[8..<10].joined() + "-" + hex[10..<16].joined()
    }
}

/// The canonical encoding of one CBOR item, produced by ``CBOREncoder``.
public struct CBOREncodedItem: Sendable, Hashable {
    public let bytes: [UInt8]

    /// Wraps bytes that the caller guarantees to be exactly one canonically encoded item.
    public init(uncheckedCanonicalBytes bytes: [UInt8]) { self.bytes = bytes }

    /// Encodes `value` canonically.
    public init(encoding value: CBORValue) { self.bytes = CBOREncoder.encode(value) }

    /// Decodes the stored bytes back into a value tree.
    public func decoded() -> CBORValue {
        // The bytes were produced by our own encoder (or validated before wrapping), so decoding cannot fail
        // for well-behaved callers; a corrupt item degrades to null rather than trapping.
        (try? CBORDecoder.decode(bytes, maxDepth: Int.max)) ?? .null
    }
}

// MARK: - Convenience constructors and accessors

extension CBORValue {
    /// An integer value.
    @inlinable
    public static func int(_ value: Int64) -> CBORValue {
        value >= 0 ? .unsigned(UInt64(value)) : .negative(UInt64(bitPattern: -1 - value))
    }

    /// An integer value.
    @inlinable
    public static func int(_ value: Int) -> CBORValue { .int(Int64(value)) }

    /// A byte string from ASCII/UTF-8 text.
    @inlinable
    public static func bytes(_ string: String) -> CBORValue { .bytes(Array(string.utf8)) }

    /// A text string from a Swift string.
    @inlinable
    public static func text(_ string: String) -> CBORValue { .text(Array(string.utf8)) }

    /// The raw octets of a byte or text string; nil for other kinds.
    @inlinable
    public var stringOctets: [UInt8]? {
        switch self {
        case .bytes(let octets), .text(let octets): return octets
        case .encoded(let item): return item.decoded().stringOctets
        default: return nil
        }
    }

    /// Whether this is a byte or text string.
    @inlinable
    public var isString: Bool {
        switch self {
        case .bytes, .text: return true
        default: return false
        }
    }

    /// The value as a signed 64-bit integer, if it is an integer that fits.
    @inlinable
    public var int64Value: Int64? {
        switch self {
        case .unsigned(let n): return n <= UInt64(Int64.max) ? Int64(n) : nil
        case .negative(let n): return n <= UInt64(Int64.max) ? -1 - Int64(n) : nil
        default: return nil
        }
    }

    /// The map payload, if this is a map.
    @inlinable
    public var mapValue: CBORMap? {
        if case .map(let map) = self { return map }
        if case .encoded(let item) = self { return item.decoded().mapValue }
        return nil
    }

    /// The elements of an array or a tuple.
    @inlinable
    public var listElements: [CBORValue]? {
        switch self {
        case .array(let items), .tuple(let items): return items
        case .encoded(let item): return item.decoded().listElements
        default: return nil
        }
    }

    /// Whether this is null.
    @inlinable
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// Replaces any `.encoded` item with its decoded tree (recursively), so structural comparison and
    /// inspection see plain values.
    public var expanded: CBORValue {
        switch self {
        case .encoded(let item): return item.decoded()
        case .array(let items): return .array(items.map(\.expanded))
        case .tuple(let items): return .tuple(items.map(\.expanded))
        case .map(let map):
            return .map(CBORMap(map.pairs.map { CBORPair(key: $0.key.expanded, value: $0.value.expanded) }))
        case .tagged(let tag, let inner): return .tagged(tag, inner.expanded)
        default: return self
        }
    }

    /// Python truthiness (wire-protocol.md §5.3.6).
    public var isTruthy: Bool {
        switch self {
        case .bool(let flag): return flag
        case .null: return false
        case .unsigned(let n): return n != 0
        case .negative: return true
        case .float(let value): return value != 0
        case .bytes(let octets), .text(let octets): return !octets.isEmpty
        case .array(let items), .tuple(let items): return !items.isEmpty
        case .map(let map): return !map.isEmpty
        case .encoded(let item): return item.decoded().isTruthy
        case .uuid, .tagged, .simple: return true
        }
    }
}

// MARK: - Strict equality and hashing

extension CBORValue: Equatable {
    public static func == (lhs: CBORValue, rhs: CBORValue) -> Bool {
        switch (lhs, rhs) {
        case (.unsigned(let a), .unsigned(let b)): return a == b
        case (.negative(let a), .negative(let b)): return a == b
        case (.bytes(let a), .bytes(let b)): return a == b
        case (.text(let a), .text(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.map(let a), .map(let b)): return a == b
        case (.tuple(let a), .tuple(let b)): return a == b
        case (.uuid(let a), .uuid(let b)): return a == b
        case (.tagged(let ta, let a), .tagged(let tb, let b)): return ta == tb && a == b
        case (.bool(let a), .bool(let b)): return a == b
        case (.null, .null): return true
        case (.simple(let a), .simple(let b)): return a == b
        case (.float(let a), .float(let b)): return a.bitPattern == b.bitPattern || a == b
        case (.encoded(let a), .encoded(let b)): return a.bytes == b.bytes
        case (.encoded(let a), _): return a.decoded() == rhs
        case (_, .encoded(let b)): return lhs == b.decoded()
        default: return false
        }
    }
}

extension CBORValue: Hashable {
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .unsigned(let n): hasher.combine(0); hasher.combine(n)
        case .negative(let n): hasher.combine(1); hasher.combine(n)
        case .bytes(let b): hasher.combine(2); hasher.combine(b)
        case .text(let b): hasher.combine(3); hasher.combine(b)
        case .array(let items): hasher.combine(4); hasher.combine(items)
        case .map(let map): hasher.combine(5); hasher.combine(map)
        case .tuple(let items): hasher.combine(6); hasher.combine(items)
        case .uuid(let uuid): hasher.combine(7); hasher.combine(uuid)
        case .tagged(let tag, let inner): hasher.combine(8); hasher.combine(tag); hasher.combine(inner)
        case .bool(let flag): hasher.combine(9); hasher.combine(flag)
        case .null: hasher.combine(10)
        case .simple(let n): hasher.combine(11); hasher.combine(n)
        case .float(let value):
            hasher.combine(12); hasher.combine(value.isNaN ? Double.nan.bitPattern : value.bitPattern)
        case .encoded(let item): item.decoded().hash(into: &hasher)
        }
    }
}

// MARK: - Literals

extension CBORValue: ExpressibleByIntegerLiteral, ExpressibleByNilLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByStringLiteral
{
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .float(value) }
    public init(arrayLiteral elements: CBORValue...) { self = .array(elements) }
    /// String literals build **byte** strings: that is what the Python client sends for keys and names.
    public init(stringLiteral value: String) { self = .bytes(Array(value.utf8)) }
}

extension CBORMap: ExpressibleByDictionaryLiteral {
    /// Pairs in the order written; string-literal keys are byte strings, as the Python client sends them.
    public init(dictionaryLiteral elements: (CBORValue, CBORValue)...) { self.init(elements) }
}

extension CBORValue: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (CBORValue, CBORValue)...) { self = .map(CBORMap(elements)) }
}
