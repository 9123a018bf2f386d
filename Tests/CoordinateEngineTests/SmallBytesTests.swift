import TestSupport
import Testing

@testable import CoordinateEngine

/// The memory backend's inline byte strings must order exactly as their octets do (raw, unsigned,
/// lexicographic, a proper prefix first): every sorted index of the memory store relies on it.
@Suite("SmallBytes")
struct SmallBytesTests {
    @Test("order and equality match the octets for inline, heap and mixed values")
    func orderMatchesOctets() {
        var random = SplitMix64(seed: 0x5EED)
        // Short strings over a tiny alphabet collide and share prefixes often; zeros and 0xff probe the padding
        // and the unsigned comparison; lengths straddle the inline limit of 15.
        let alphabet: [UInt8] = [0, 1, 0x7f, 0x80, 0xff]
        var samples: [[UInt8]] = [[], [0], [0, 0], Array(repeating: 0, count: 15), Array(repeating: 0, count: 16)]
        for _ in 0..<400 {
            let length = Int(random.next() % 20)
            samples.append((0..<length).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] })
        }
        for a in samples {
            for b in samples {
                let (small, other) = (SmallBytes(a), SmallBytes(b))
                #expect(small.precedes(other) == a.lexicographicallyPrecedes(b), "\(a) < \(b)")
                #expect(small.precedes(b) == a.lexicographicallyPrecedes(b), "\(a) < \(b) (array)")
                #expect((small == other) == (a == b), "\(a) == \(b)")
            }
        }
    }
}
