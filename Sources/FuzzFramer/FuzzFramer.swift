import CBOR

/// libFuzzer target: the incremental stream framer. The first byte picks a chunk size; the rest is a stream
/// fed to the framer in chunks of that size, as a slow network would. Properties checked:
/// * the outcome does not depend on how the stream is split (chunked framing agrees with one-shot framing);
/// * a reported message length is within the buffer and the limits, and the decoder accepts exactly those
///   bytes as one item (the framer and the decoder agree on well-formedness and depth).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFramer(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    let chunk = Int(first % 16) + 1
    let stream = UnsafeRawBufferPointer(rebasing: input.dropFirst())
    let maxMessageBytes = 4096
    let maxDepth = 16

    var oneShot = CBORStreamFramer(maxMessageBytes: maxMessageBytes, maxDepth: maxDepth)
    let whole = oneShot.next(in: stream)

    var chunked = CBORStreamFramer(maxMessageBytes: maxMessageBytes, maxDepth: maxDepth)
    var available = 0
    var event = CBORStreamFramer.FramingEvent.needMoreData
    while available < stream.count {
        available = min(stream.count, available + chunk)
        event = chunked.next(in: UnsafeRawBufferPointer(rebasing: stream.prefix(available)))
        if event != .needMoreData { break }
    }
    switch (whole, event) {
    case (.malformed, .malformed): break
    default: precondition(whole == event, "split stream framed as \(event), whole stream as \(whole)")
    }

    if case .message(let length) = whole {
        precondition(length > 0 && length <= stream.count && length <= maxMessageBytes, "bad length \(length)")
        let message = UnsafeRawBufferPointer(rebasing: stream.prefix(length))
        switch CBORMessage.decode(message, maxDepth: maxDepth) {
        case .notWellFormed: preconditionFailure("the framer reported a message the decoder finds malformed")
        case .value, .invalidCBOR, .nestingTooDeep, .decodedTooLarge: break
        }
    }
    return 0
}
