import CBOR

/// A name the protocol compares by raw octets regardless of string kind (wire-protocol.md §5.3): spec names,
/// unit keys, worker ids, lock owners, namespace names. The kind (bytes or text) is remembered so the value
/// can be echoed as it was stored, but it takes no part in equality, hashing or ordering.
public struct Identifier: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var octets: [UInt8]
    public var isText: Bool

    @inlinable
    public init(octets: [UInt8], isText: Bool) {
        self.octets = octets
        self.isText = isText
    }

    /// A text identifier from a Swift string.
    public init(text: String) { self.init(octets: Array(text.utf8), isText: true) }

    /// A byte-string identifier from a Swift string's UTF-8.
    public init(bytes: String) { self.init(octets: Array(bytes.utf8), isText: false) }

    /// The identifier a byte or text string value denotes; nil for other kinds.
    @inlinable
    public init?(_ value: CBORValue) {
        switch value {
        case .bytes(let octets): self.init(octets: octets, isText: false)
        case .text(let octets): self.init(octets: octets, isText: true)
        case .encoded(let item):
            guard let decoded = Identifier(item.decoded()) else { return nil }
            self = decoded
        default: return nil
        }
    }

    /// The value with its stored kind.
    @inlinable
    public var value: CBORValue { isText ? .text(octets) : .bytes(octets) }

    @inlinable
    public static func == (lhs: Identifier, rhs: Identifier) -> Bool { lhs.octets == rhs.octets }

    @inlinable
    public func hash(into hasher: inout Hasher) { hasher.combine(octets) }

    /// Raw octets, unsigned, lexicographic, a proper prefix first (wire-protocol.md §5.3.4).
    @inlinable
    public static func < (lhs: Identifier, rhs: Identifier) -> Bool {
        octetsPrecede(lhs.octets, rhs.octets)
    }

    /// The octets as UTF-8 with replacement (for logs, metrics labels and HTML).
    public var description: String { String(decoding: octets, as: UTF8.self) }

    public var isEmpty: Bool { octets.isEmpty }
}
