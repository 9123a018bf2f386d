import CBOR

/// The prefix-preserving key of a lock path (storage.md §3.4): each label normalised (strings as octets,
/// integral floats as integers, maps sorted), encoded as CBOR, every `00` octet escaped as `00 FF`, and
/// terminated by `00 01`. Path A is a prefix of path B exactly when key(A) is a byte prefix of key(B).
public enum LockPath {
    public static func key(for labels: [CBORValue]) -> [UInt8] {
        var key: [UInt8] = []
        for label in labels { appendLabel(label, to: &key) }
        return key
    }

    /// The key prefix that selects every path whose first label equals `label`.
    public static func key(forFirstLabel label: CBORValue) -> [UInt8] {
        var key: [UInt8] = []
        appendLabel(label, to: &key)
        return key
    }

    static func appendLabel(_ label: CBORValue, to key: inout [UInt8]) {
        for octet in label.normalizedEncoding {
            key.append(octet)
            if octet == 0 { key.append(0xff) }
        }
        key.append(0)
        key.append(1)
    }

    /// The smallest key greater than every key that starts with `prefix`: the exclusive upper bound of a
    /// range scan over a prefix (path keys always end in `00 01`, so the all-`FF` fallback is never reached).
    public static func successor(of prefix: [UInt8]) -> [UInt8] {
        var bytes = prefix
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return [0xff, 0xff, 0xff, 0xff]
    }

    /// The end offsets of each label in `key` (after its terminator), in order.
    public static func labelBoundaries(of key: [UInt8]) -> [Int] {
        var boundaries: [Int] = []
        var index = 0
        while index + 1 < key.count {
            if key[index] == 0 {
                if key[index + 1] == 1 { boundaries.append(index + 2) }
                index += 2
            } else {
                index += 1
            }
        }
        return boundaries
    }
}
