import CBOR

/// libFuzzer target: the CBOR decoder on arbitrary bytes. It must never crash, and whatever it accepts must
/// encode to bytes it accepts again as the same value (the encoder only writes well-formed CBOR). A decode with a
/// budget of a few bytes per input byte must agree with the unbounded one, or stop with `decodedTooLarge`: the
/// budget's refusal path runs here under AddressSanitizer.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCBORDecoder(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let unbounded = try? CBORDecoder.decode(bytes, maxDepth: 64)
    do {
        let bounded = try CBORDecoder.decode(bytes, maxDepth: 64, maxDecodedBytes: 4 * count)
        precondition(bounded == unbounded, "a budget changed what was decoded")
    } catch CBORDecodingError.decodedTooLarge {
        // Refused before the rest was read, whether or not the rest is well-formed.
    } catch {
        precondition(unbounded == nil, "a budget changed the decoding error of accepted input")
    }
    guard let value = unbounded else { return 0 }
    var encoder = CBOREncoder()
    encoder.encode(value)
    let encoded = encoder.bytes
    guard let again = try? CBORDecoder.decode(encoded, maxDepth: 64) else {
        fatalError("decoded input re-encodes to bytes the decoder refuses: \(encoded)")
    }
    precondition(again == value, "re-encoding changed the value")
    return 0
}
