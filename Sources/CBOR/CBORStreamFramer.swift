/// Finds message boundaries in a CBOR byte stream (one message = one CBOR data item, wire-protocol.md §2)
/// incrementally.
///
/// The framer remembers how far it has scanned the current message, so feeding it a message that arrives in
/// many small reads costs time proportional to the message's size, not to the square of it. It never decodes
/// values: string payloads are skipped by length, containers are tracked as a small stack of remaining counts.
///
/// Invariants:
/// * The buffer passed to ``next(in:)`` always starts at the first byte of the current message and only grows
///   between calls until a message is reported; after ``FramingEvent/message(length:)`` the caller drops that
///   many bytes and calls ``reset()``.
/// * A definite-length string whose declared size would take the message past `maxMessageBytes` is reported
///   as ``FramingEvent/tooLarge`` as soon as its head is read, before any of its payload is buffered.
/// * The stack never holds more than `maxDepth + 1` frames.
public struct CBORStreamFramer: Sendable {
    /// What the framer found.
    public enum FramingEvent: Equatable, Sendable {
        /// The buffered bytes end inside the current message.
        case needMoreData
        /// The first `length` buffered bytes are exactly one well-formed CBOR item.
        case message(length: Int)
        /// The message is, or would become, larger than `maxMessageBytes`.
        case tooLarge
        /// The stream is not well-formed CBOR; it cannot be resynchronised.
        case malformed(String)
        /// Containers nest deeper than `maxDepth`.
        case tooDeep
    }

    private enum Frame: Sendable {
        /// A definite container (or a tag) still expecting `remaining` items.
        case counted(remaining: UInt64)
        /// An indefinite array or map, ended by a break; for a map, whether it holds a key without its value.
        case indefinite(isMap: Bool, oddItems: Bool)
        /// An indefinite string of the given major type: definite chunks of that type until a break.
        case indefiniteString(major: UInt8)
    }

    public let maxMessageBytes: Int
    public let maxDepth: Int

    private var offset = 0
    private var stack: [Frame] = []
    private var containerDepth = 0
    private var skipRemaining: UInt64 = 0
    private var complete = false

    public init(maxMessageBytes: Int, maxDepth: Int) {
        self.maxMessageBytes = maxMessageBytes
        self.maxDepth = maxDepth
        stack.reserveCapacity(16)
    }

    /// Forgets the current message; call after consuming a reported message.
    public mutating func reset() {
        offset = 0
        stack.removeAll(keepingCapacity: true)
        containerDepth = 0
        skipRemaining = 0
        complete = false
    }

    /// Number of bytes of the current message already scanned.
    public var scannedBytes: Int { offset }

    /// Continues scanning the current message. `buffer` holds every buffered byte from the message's start.
    public mutating func next(in buffer: UnsafeRawBufferPointer) -> FramingEvent {
        let count = buffer.count
        while true {
            if skipRemaining > 0 {
                let available = UInt64(count - offset)
                if available < skipRemaining {
                    offset = count
                    skipRemaining -= available
                    return .needMoreData
                }
                offset += Int(skipRemaining)
                skipRemaining = 0
                if case .indefiniteString = stack.last {
                    // A chunk finished; the string itself continues until its break.
                } else {
                    itemCompleted()
                }
            }
            if complete { return .message(length: offset) }
            guard offset < count else { return .needMoreData }

            let initial = buffer[offset]
            let major = initial >> 5
            let info = initial & 0x1f
            let headLength: Int
            switch info {
            case 0..<24: headLength = 1
            case 24: headLength = 2
            case 25: headLength = 3
            case 26: headLength = 5
            case 27: headLength = 9
            case 31: headLength = 1
            default: return .malformed("reserved additional information \(info)")
            }
            if offset + headLength > maxMessageBytes { return .tooLarge }
            guard count - offset >= headLength else { return .needMoreData }
            var argument: UInt64 = 0
            if info < 24 {
                argument = UInt64(info)
            } else if info != 31 {
                for index in 1..<headLength { argument = argument << 8 | UInt64(buffer[offset + index]) }
            }
            let indefinite = info == 31

            if case .indefiniteString(let stringMajor) = stack.last {
                if initial == 0xff {
                    offset += 1
                    stack.removeLast()
                    itemCompleted()
                    continue
                }
                guard major == stringMajor, !indefinite else {
                    return .malformed("invalid chunk inside an indefinite-length string")
                }
            }

            switch major {
            case 0, 1:
                if indefinite { return .malformed("indefinite-length integer") }
                offset += headLength
                itemCompleted()
            case 2, 3:
                offset += headLength
                if indefinite {
                    stack.append(.indefiniteString(major: major))
                } else {
                    if argument > UInt64(maxMessageBytes - offset) { return .tooLarge }
                    if argument == 0 {
                        if case .indefiniteString = stack.last {} else { itemCompleted() }
                    } else {
                        skipRemaining = argument
                    }
                }
            case 4, 5, 6:
                if indefinite && major == 6 { return .malformed("indefinite-length tag") }
                offset += headLength
                containerDepth += 1
                if containerDepth > maxDepth { return .tooDeep }
                if indefinite {
                    stack.append(.indefinite(isMap: major == 5, oddItems: false))
                } else {
                    let items: UInt64
                    switch major {
                    case 4: items = argument
                    case 5:
                        if argument > UInt64.max / 2 { return .tooLarge }
                        items = argument * 2
                    default: items = 1
                    }
                    // Every item takes at least one byte: a count beyond the limit can never fit.
                    if items > UInt64(maxMessageBytes) { return .tooLarge }
                    if items == 0 {
                        containerDepth -= 1
                        itemCompleted()
                    } else {
                        stack.append(.counted(remaining: items))
                    }
                }
            default:
                switch info {
                case 24:
                    if argument < 32 { return .malformed("two-byte simple value below 32") }
                    offset += headLength
                    itemCompleted()
                case 31:
                    guard case .indefinite(let isMap, let oddItems) = stack.last else {
                        return .malformed("unexpected break")
                    }
                    // The decoder refuses a map ending on a key; so does the framer, so that every message it
                    // reports decodes (found by fuzzing).
                    if isMap && oddItems { return .malformed("indefinite-length map ends after a key") }
                    offset += 1
                    stack.removeLast()
                    containerDepth -= 1
                    itemCompleted()
                default:
                    offset += headLength
                    itemCompleted()
                }
            }
        }
    }

    /// Marks one item as finished and closes every container that this completes.
    private mutating func itemCompleted() {
        while let top = stack.last {
            switch top {
            case .counted(let remaining):
                if remaining > 1 {
                    stack[stack.count - 1] = .counted(remaining: remaining - 1)
                    return
                }
                stack.removeLast()
                containerDepth -= 1
            case .indefinite(let isMap, let oddItems):
                if isMap { stack[stack.count - 1] = .indefinite(isMap: true, oddItems: !oddItems) }
                return
            case .indefiniteString:
                return
            }
        }
        complete = true
    }
}
