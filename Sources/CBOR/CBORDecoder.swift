/// Why a buffer could not be decoded.
public enum CBORDecodingError: Error, Equatable, Sendable {
    /// The bytes are not one well-formed CBOR item (truncated, reserved additional information, stray break,
    /// mismatched indefinite-string chunk, trailing bytes, …).
    case notWellFormed(String)
    /// Containers (arrays, maps, tags) nest deeper than the configured limit.
    case nestingTooDeep
    /// An embedded tag-24 item's content is not a byte string holding exactly one well-formed item.
    case invalidEmbeddedItem
    /// The decoded values would take more memory than allowed (``CBORDecoder/decode(_:maxDepth:maxDecodedBytes:)``).
    case decodedTooLarge
}

/// How much memory the values decoded from one received message may take (docs/security.md "Limits"), for
/// CBOR and JSON messages alike: twice its size — with the message itself and its buffer, about three times
/// what was received, below the four times the daemon promises — or ``floor``, whichever is larger.
public enum DecodeBudget {
    /// The allowance of every message, however small: enough that ordinary large requests never meet the limit.
    public static let floor = 64 << 20

    /// The budget for the values of a message of `size` bytes.
    public static func bytes(forMessageOf size: Int) -> Int {
        max(floor, size.multipliedReportingOverflow(by: 2).overflow ? .max : size * 2)
    }
}

/// Decodes complete, in-memory CBOR items into ``CBORValue`` trees.
///
/// Decoding is total: every input either yields a value or a ``CBORDecodingError``; lengths are validated
/// against the bytes actually present before anything is allocated, so hostile length fields cannot make the
/// decoder reserve memory it was not given.
public struct CBORDecoder {
    /// Nesting depth counts arrays, maps and tags; the outermost container is depth 1.
    public let maxDepth: Int

    /// Decodes exactly one item from `bytes`; trailing bytes are an error.
    public static func decode(
        _ bytes: [UInt8], maxDepth: Int = 256, maxDecodedBytes: Int = .max
    ) throws(CBORDecodingError) -> CBORValue {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(CBORDecodingError) -> CBORValue in
                try decode(buffer, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes)
            }
        }
        return try result.get()
    }

    /// Decodes exactly one item from `buffer`; trailing bytes are an error.
    ///
    /// - Parameter maxDecodedBytes: an estimate of the memory the decoded values may take (their slots, string
    ///   storage and container storage, as the allocator sees them); past it decoding stops with
    ///   ``CBORDecodingError/decodedTooLarge``. A byte of CBOR can become tens of bytes of values (a one-byte
    ///   integer is a 24-byte slot, a short string its own heap block), so this is what bounds the memory a
    ///   message of a given size can cost.
    public static func decode(
        _ buffer: UnsafeRawBufferPointer, maxDepth: Int = 256, maxDecodedBytes: Int = .max
    ) throws(CBORDecodingError)
        -> CBORValue
    {
        var reader = Reader(buffer: buffer, maxDepth: maxDepth, allocationBudget: maxDecodedBytes)
        let value = try reader.readItem(depth: 0)
        guard reader.position == buffer.count else { throw .notWellFormed("trailing bytes after item") }
        return value
    }

}

extension CBORDecoder {
    struct Reader {
        let buffer: UnsafeRawBufferPointer
        let maxDepth: Int
        var position: Int = 0
        /// What decoded values may still take, by ``charge(_:)``'s estimate.
        var allocationBudget: Int

        init(buffer: UnsafeRawBufferPointer, maxDepth: Int, allocationBudget: Int = .max) {
            self.buffer = buffer
            self.maxDepth = maxDepth
            self.allocationBudget = allocationBudget
        }

        /// A heap block's header and rounding, as the allocator sees a Swift array's storage.
        static let blockOverhead = 48

        /// Charges `bytes` of decoded storage against the budget.
        @inline(__always)
        mutating func charge(_ bytes: Int) throws(CBORDecodingError) {
            allocationBudget -= bytes
            if allocationBudget < 0 { throw .decodedTooLarge }
        }

        /// Charges a container of `count` elements of `stride` bytes each.
        @inline(__always)
        mutating func charge(elements count: UInt64, stride: Int) throws(CBORDecodingError) {
            guard count > 0 else { return }
            guard count <= UInt64(Int.max / max(1, stride)) else { throw .decodedTooLarge }
            try charge(Self.blockOverhead + Int(count) * stride)
        }

        @inline(__always)
        mutating func readByte() throws(CBORDecodingError) -> UInt8 {
            guard position < buffer.count else { throw .notWellFormed("truncated item") }
            let byte = buffer[position]
            position += 1
            return byte
        }

        @inline(__always)
        mutating func readUInt(_ width: Int) throws(CBORDecodingError) -> UInt64 {
            guard buffer.count - position >= width else { throw .notWellFormed("truncated item") }
            var value: UInt64 = 0
            for index in 0..<width { value = value << 8 | UInt64(buffer[position + index]) }
            position += width
            return value
        }

        /// Reads the argument for additional information `info` (0…27). Returns nil for 31 (indefinite).
        @inline(__always)
        mutating func readArgument(_ info: UInt8) throws(CBORDecodingError) -> UInt64? {
            switch info {
            case 0..<24: return UInt64(info)
            case 24: return try readUInt(1)
            case 25: return try readUInt(2)
            case 26: return try readUInt(4)
            case 27: return try readUInt(8)
            case 31: return nil
            default: throw .notWellFormed("reserved additional information \(info)")
            }
        }

        mutating func readBytes(count: UInt64) throws(CBORDecodingError) -> [UInt8] {
            guard count <= UInt64(buffer.count - position) else { throw .notWellFormed("truncated string") }
            try charge(elements: count, stride: 1)
            let length = Int(count)
            let slice = UnsafeRawBufferPointer(rebasing: buffer[position..<position + length])
            position += length
            return Array(slice)
        }

        /// Reads the chunks of an indefinite-length string of `major` up to its break.
        mutating func readIndefiniteString(major: UInt8) throws(CBORDecodingError) -> [UInt8] {
            var result: [UInt8] = []
            while true {
                let initial = try readByte()
                if initial == 0xff { return result }
                guard initial >> 5 == major else { throw .notWellFormed("indefinite string chunk of another type") }
                guard let length = try readArgument(initial & 0x1f) else {
                    throw .notWellFormed("nested indefinite string chunk")
                }
                result.append(contentsOf: try readBytes(count: length))
            }
        }

        mutating func readItem(depth: Int) throws(CBORDecodingError) -> CBORValue {
            let initial = try readByte()
            let major = initial >> 5
            let info = initial & 0x1f
            switch major {
            case 0:
                guard let value = try readArgument(info) else { throw .notWellFormed("indefinite integer") }
                return .unsigned(value)
            case 1:
                guard let value = try readArgument(info) else { throw .notWellFormed("indefinite integer") }
                return .negative(value)
            case 2:
                if let length = try readArgument(info) { return .bytes(try readBytes(count: length)) }
                return .bytes(try readIndefiniteString(major: 2))
            case 3:
                if let length = try readArgument(info) { return .text(try readBytes(count: length)) }
                return .text(try readIndefiniteString(major: 3))
            case 4:
                let childDepth = depth + 1
                guard childDepth <= maxDepth else { throw .nestingTooDeep }
                return .array(try readArrayBody(info: info, depth: childDepth))
            case 5:
                let childDepth = depth + 1
                guard childDepth <= maxDepth else { throw .nestingTooDeep }
                return .map(try readMapBody(info: info, depth: childDepth))
            case 6:
                guard let tag = try readArgument(info) else { throw .notWellFormed("indefinite tag") }
                let childDepth = depth + 1
                guard childDepth <= maxDepth else { throw .nestingTooDeep }
                return try readTagged(tag, depth: childDepth)
            default:
                return try readSimple(info: info)
            }
        }

        mutating func readArrayBody(info: UInt8, depth: Int) throws(CBORDecodingError) -> [CBORValue] {
            var items: [CBORValue] = []
            if let count = try readArgument(info) {
                // Every element takes at least one byte, so a count beyond the remaining bytes is truncation.
                guard count <= UInt64(buffer.count - position) else { throw .notWellFormed("truncated array") }
                try charge(elements: count, stride: MemoryLayout<CBORValue>.stride)
                items.reserveCapacity(Int(count))
                for _ in 0..<count { items.append(try readItem(depth: depth)) }
            } else {
                while true {
                    guard position < buffer.count else { throw .notWellFormed("truncated array") }
                    if buffer[position] == 0xff {
                        position += 1
                        break
                    }
                    try charge(MemoryLayout<CBORValue>.stride)
                    items.append(try readItem(depth: depth))
                }
            }
            return items
        }

        mutating func readMapBody(info: UInt8, depth: Int) throws(CBORDecodingError) -> CBORMap {
            var pairs: [CBORPair] = []
            if let count = try readArgument(info) {
                guard count <= UInt64(buffer.count - position) / 2 else { throw .notWellFormed("truncated map") }
                try charge(elements: count, stride: MemoryLayout<CBORPair>.stride)
                pairs.reserveCapacity(Int(count))
                for _ in 0..<count {
                    let key = try readItem(depth: depth)
                    let value = try readItem(depth: depth)
                    pairs.append(CBORPair(key: key, value: value))
                }
            } else {
                while true {
                    guard position < buffer.count else { throw .notWellFormed("truncated map") }
                    if buffer[position] == 0xff {
                        position += 1
                        break
                    }
                    let key = try readItem(depth: depth)
                    guard position < buffer.count, buffer[position] != 0xff else {
                        throw .notWellFormed("map with a key but no value")
                    }
                    let value = try readItem(depth: depth)
                    try charge(MemoryLayout<CBORPair>.stride)
                    pairs.append(CBORPair(key: key, value: value))
                }
            }
            return CBORMap(pairs)
        }

        mutating func readTagged(_ tag: UInt64, depth: Int) throws(CBORDecodingError) -> CBORValue {
            switch tag {
            case 24:
                // An embedded item: its content must be a byte string holding exactly one item, which replaces
                // the tag and continues the depth count below it (wire-protocol.md §2.6, §4).
                let content = try readItem(depth: depth)
                guard case .bytes(let octets) = content else { throw .invalidEmbeddedItem }
                let budget = allocationBudget
                let result = octets.withUnsafeBytes { inner in
                    Result { () throws(CBORDecodingError) -> (CBORValue, Int) in
                        var nested = Reader(buffer: inner, maxDepth: maxDepth, allocationBudget: budget)
                        let value = try nested.readItem(depth: depth)
                        guard nested.position == inner.count else { throw .invalidEmbeddedItem }
                        return (value, nested.allocationBudget)
                    }
                }
                switch result {
                case .success(let (value, remaining)):
                    allocationBudget = remaining
                    return value
                case .failure(.nestingTooDeep): throw .nestingTooDeep
                case .failure(.decodedTooLarge): throw .decodedTooLarge
                case .failure: throw .invalidEmbeddedItem
                }
            case 128:
                let content = try readItem(depth: depth)
                if case .array(let items) = content { return .tuple(items) }
                return .tagged(tag, content)
            case 37:
                let content = try readItem(depth: depth)
                if case .bytes(let octets) = content, let uuid = CBORUUID(bytes: octets) { return .uuid(uuid) }
                return .tagged(tag, content)
            default:
                // The indirect case boxes its payload.
                try charge(Self.blockOverhead)
                return .tagged(tag, try readItem(depth: depth))
            }
        }

        mutating func readSimple(info: UInt8) throws(CBORDecodingError) -> CBORValue {
            switch info {
            case 20: return .bool(false)
            case 21: return .bool(true)
            case 22, 23: return .null
            case 0..<20: return .simple(info)
            case 24:
                let value = try readByte()
                guard value >= 32 else { throw .notWellFormed("two-byte simple value below 32") }
                return .simple(value)
            case 25: return .float(Double(Float16Bits.decode(UInt16(try readUInt(2)))))
            case 26: return .float(Double(Float(bitPattern: UInt32(try readUInt(4)))))
            case 27: return .float(Double(bitPattern: try readUInt(8)))
            case 31: throw .notWellFormed("unexpected break")
            default: throw .notWellFormed("reserved additional information \(info)")
            }
        }
    }
}

/// IEEE 754 half-precision decoding without relying on the platform's `Float16` availability.
enum Float16Bits {
    static func decode(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int((bits >> 10) & 0x1f)
        let fraction = Double(bits & 0x3ff)
        switch exponent {
        case 0: return sign * fraction * 0x1p-24
        case 31: return fraction == 0 ? sign * .infinity : .nan
        default: return sign * (1 + fraction / 1024) * Double(sign: .plus, exponent: exponent - 15, significand: 1)
        }
    }
}
