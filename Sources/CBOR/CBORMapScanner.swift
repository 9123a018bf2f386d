/// Reads the entries of a framed message whose item is a definite-length map with definite-length string keys,
/// one at a time, without building the map: keys are seen in place and only the values asked for are decoded.
/// For a caller that wants a few named entries out of every message (a request's `id`, `method` and `params`),
/// this saves the map's storage and one heap block per key.
///
/// The scanner accepts only that common shape. Whatever it does not accept — another item, an indefinite
/// length, a key that is not a definite string, anything not well-formed, too deep or over the budget — makes it
/// answer nil, and the caller decodes the message with ``CBORMessage/decode(_:maxDepth:maxDecodedBytes:)``,
/// which gives every such message its exact outcome. A message the scanner reads to its end is one that decoding
/// would accept as the same map: depths and the decode budget are counted the same way.
///
/// The scanner points into the buffer it was made from; use it only while that buffer is valid.
public struct CBORMapScanner {
    private var reader: CBORDecoder.Reader
    /// Entries not yet read.
    public private(set) var remainingEntries: Int
    /// A key or value could not be read: the scan cannot complete.
    private var failed = false

    /// A scanner over `message` (exactly one framed item, as ``CBORStreamFramer`` reports it), unwrapping a
    /// tag-24 envelope around a definite-length byte string; nil when the item is not a definite-length map.
    public init?(message: UnsafeRawBufferPointer, maxDepth: Int, maxDecodedBytes: Int) {
        var content = message
        if message.count >= 2, message[0] == 0xd8, message[1] == 0x18 {
            // An envelope of another form (an indefinite byte string, trailing bytes) is left to decoding.
            guard let inner = CBORMessage.definiteEnvelopeContent(message) else { return nil }
            content = inner
        }
        // The map is the outermost container: depth 1, its keys and values read at that depth.
        guard maxDepth >= 1 else { return nil }
        reader = CBORDecoder.Reader(buffer: content, maxDepth: maxDepth, allocationBudget: maxDecodedBytes)
        guard let initial = try? reader.readByte(), initial >> 5 == 5,
            let count = try? reader.readArgument(initial & 0x1f),
            count <= UInt64(content.count - reader.position) / 2,
            (try? reader.charge(elements: count, stride: MemoryLayout<CBORPair>.stride)) != nil
        else { return nil }
        remainingEntries = Int(count)
    }

    /// Whether every entry has been read and nothing follows the map.
    public var isComplete: Bool { !failed && remainingEntries == 0 && reader.position == reader.buffer.count }

    /// The next entry's key (the octets of a definite-length byte or text string, not copied); nil when no entry
    /// remains or the key has another form. Read the entry's value next.
    public mutating func nextKey() -> UnsafeRawBufferPointer? {
        guard !failed, remainingEntries > 0 else { return nil }
        remainingEntries -= 1
        return readDefiniteString()
    }

    /// The current entry's value, decoded; nil if it cannot be.
    public mutating func value() -> CBORValue? {
        guard !failed else { return nil }
        do {
            return try reader.readItem(depth: 1)
        } catch {
            failed = true
            return nil
        }
    }

    /// The current entry's value when it is a definite-length byte or text string (its octets, not copied); nil
    /// otherwise.
    public mutating func stringValue() -> UnsafeRawBufferPointer? {
        guard !failed else { return nil }
        return readDefiniteString()
    }

    /// A definite-length string's octets, charged as decoding would charge the array it copies them into.
    private mutating func readDefiniteString() -> UnsafeRawBufferPointer? {
        guard let initial = try? reader.readByte(), initial >> 5 == 2 || initial >> 5 == 3,
            let length = try? reader.readArgument(initial & 0x1f),
            length <= UInt64(reader.buffer.count - reader.position),
            (try? reader.charge(elements: length, stride: 1)) != nil
        else {
            failed = true
            return nil
        }
        let start = reader.position
        reader.position += Int(length)
        return UnsafeRawBufferPointer(rebasing: reader.buffer[start..<reader.position])
    }
}
