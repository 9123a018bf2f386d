import CBOR

/// A small, seedable generator so randomized tests are reproducible from the seed they print.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Generates random value trees covering every kind the value model preserves.
public struct RandomCBOR {
    public var rng: SplitMix64

    public init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    public mutating func octets(maxLength: Int = 12) -> [UInt8] {
        let length = Int.random(in: 0...maxLength, using: &rng)
        return (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    public mutating func scalar() -> CBORValue {
        switch Int.random(in: 0..<13, using: &rng) {
        case 0: return .unsigned(UInt64.random(in: 0...30, using: &rng))
        case 1: return .unsigned(UInt64.random(in: 0...UInt64.max, using: &rng))
        case 2: return .negative(UInt64.random(in: 0...UInt64.max, using: &rng))
        case 3: return .negative(UInt64.random(in: 0...300, using: &rng))
        case 4: return .bytes(octets())
        case 5: return .text(octets())
        case 6: return .text(Array("fü\u{1F600}".utf8))
        case 7: return .bool(Bool.random(using: &rng))
        case 8: return .null
        case 9: return .simple(UInt8.random(in: 0...19, using: &rng))
        case 10:
            let specials: [Double] = [0, -0.0, 1.5, -2.25, .infinity, -.infinity, 1e300, Double.leastNonzeroMagnitude]
            return .float(specials.randomElement(using: &rng)!)
        case 11: return .float(Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &rng)))
        default:
            return .uuid(CBORUUID(high: rng.next(), low: rng.next()))
        }
    }

    /// A random tree no deeper than `depth` containers.
    public mutating func value(depth: Int) -> CBORValue {
        if depth <= 0 || Int.random(in: 0..<3, using: &rng) == 0 { return scalar() }
        let width = Int.random(in: 0...4, using: &rng)
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: return .array((0..<width).map { _ in value(depth: depth - 1) })
        case 1: return .tuple((0..<width).map { _ in value(depth: depth - 1) })
        case 2:
            var map = CBORMap()
            for _ in 0..<width {
                let key = Bool.random(using: &rng) ? scalar() : value(depth: depth - 1)
                map.append(key, value(depth: depth - 1))
            }
            // Duplicate keys are preserved too.
            if let first = map.pairs.first, Bool.random(using: &rng) { map.append(first.key, scalar()) }
            return .map(map)
        case 3:
            let tags: [UInt64] = [0, 1, 2, 3, 1000, 55799, 128, 37]
            let tag = tags.randomElement(using: &rng)!
            let inner = value(depth: depth - 1)
            // Tag 128 on an array and tag 37 on 16 bytes are decoded as tuple and uuid, not as opaque tags.
            if tag == 128, case .array = inner { return .tagged(tag, .bytes([1])) }
            if tag == 37, case .bytes(let b) = inner, b.count == 16 { return .tagged(tag, .null) }
            return .tagged(tag, inner)
        default:
            return scalar()
        }
    }

    /// A chain of nested arrays `depth` levels deep.
    public static func nested(depth: Int) -> CBORValue {
        var value: CBORValue = .unsigned(1)
        for _ in 0..<depth { value = .array([value]) }
        return value
    }
}
