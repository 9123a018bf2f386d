import CBOR

/// libFuzzer target: the CBOR decoder on arbitrary bytes. It must never crash, and whatever it accepts must
/// encode to bytes it accepts again as the same value (the encoder only writes well-formed CBOR).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCBORDecoder(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard let value = try? CBORDecoder.decode(bytes, maxDepth: 64) else { return 0 }
    var encoder = CBOREncoder()
    encoder.encode(value)
    let encoded = encoder.bytes
    guard let again = try? CBORDecoder.decode(encoded, maxDepth: 64) else {
        fatalError("decoded input re-encodes to bytes the decoder refuses: \(encoded)")
    }
    precondition(again == value, "re-encoding changed the value")
    return 0
}
