/// Decoding of one framed message: the tag-24 envelope (wire-protocol.md §2) or a bare item.
public enum CBORMessage {
    /// The outcome of decoding one framed message.
    public enum Decoded: Equatable, Sendable {
        /// The unwrapped message.
        case value(CBORValue, enveloped: Bool)
        /// A well-formed envelope whose content is not exactly one well-formed item, an outer tag 24 whose
        /// content is not a byte string, or an invalid embedded tag 24 anywhere inside.
        case invalidCBOR
        /// Nesting beyond the limit, measured on the unwrapped message.
        case nestingTooDeep(enveloped: Bool)
        /// The framed bytes are not one well-formed item (only possible for input the framer did not check).
        case notWellFormed
        /// The message's values would take more memory than allowed.
        case decodedTooLarge(enveloped: Bool)
    }

    /// Decodes a framed message. `buffer` must hold exactly one CBOR item as reported by ``CBORStreamFramer``.
    /// `maxDecodedBytes` bounds the memory its values may take (``CBORDecoder/decode(_:maxDepth:maxDecodedBytes:)``).
    public static func decode(
        _ buffer: UnsafeRawBufferPointer, maxDepth: Int, maxDecodedBytes: Int = .max
    ) -> Decoded {
        if buffer.count >= 2, buffer[0] == 0xd8, buffer[1] == 0x18 {
            return decodeEnvelope(buffer, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes)
        }
        do {
            return .value(
                try CBORDecoder.decode(buffer, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes),
                enveloped: false)
        } catch .nestingTooDeep {
            return .nestingTooDeep(enveloped: false)
        } catch .decodedTooLarge {
            return .decodedTooLarge(enveloped: false)
        } catch .invalidEmbeddedItem {
            return .invalidCBOR
        } catch {
            return .notWellFormed
        }
    }

    /// The content of a tag-24 envelope whose byte string has a definite length and fills the rest of `buffer`
    /// exactly (the form clients send), without copying it; nil for any other message, other envelopes included.
    static func definiteEnvelopeContent(_ buffer: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard buffer.count > 2, buffer[0] == 0xd8, buffer[1] == 0x18, buffer[2] >> 5 == 2, buffer[2] & 0x1f != 31
        else { return nil }
        var head = CBORDecoder.Reader(buffer: buffer, maxDepth: 0)
        head.position = 2
        guard let byteHead = try? head.readByte(), let length = try? head.readArgument(byteHead & 0x1f),
            length == UInt64(buffer.count - head.position)
        else { return nil }
        return UnsafeRawBufferPointer(rebasing: buffer[head.position...])
    }

    private static func decodeEnvelope(
        _ buffer: UnsafeRawBufferPointer, maxDepth: Int, maxDecodedBytes: Int
    ) -> Decoded {
        // Fast path: a definite-length byte string is decoded in place, without copying its content.
        if let content = definiteEnvelopeContent(buffer) {
            do {
                return .value(
                    try CBORDecoder.decode(content, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes),
                    enveloped: true)
            } catch .nestingTooDeep {
                return .nestingTooDeep(enveloped: true)
            } catch .decodedTooLarge {
                return .decodedTooLarge(enveloped: true)
            } catch {
                return .invalidCBOR
            }
        }
        // The envelope itself does not count towards the nesting depth; its content starts at depth 0.
        var reader = CBORDecoder.Reader(buffer: buffer, maxDepth: Int.max)
        reader.position = 2
        let content: CBORValue
        do {
            // Reading the envelope's content as a value with an unlimited depth is safe: the framer has already
            // bounded the nesting of the raw stream, and a byte string is flat.
            content = try reader.readItem(depth: 0)
        } catch .invalidEmbeddedItem {
            // A well-formed envelope around, say, another tag 24 whose bytes are not one item (found by fuzzing).
            return .invalidCBOR
        } catch {
            return .notWellFormed
        }
        guard reader.position == buffer.count else { return .notWellFormed }
        guard case .bytes(let octets) = content else { return .invalidCBOR }
        do throws(CBORDecodingError) {
            return .value(
                try CBORDecoder.decode(octets, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes), enveloped: true)
        } catch .nestingTooDeep {
            return .nestingTooDeep(enveloped: true)
        } catch .decodedTooLarge {
            return .decodedTooLarge(enveloped: true)
        } catch {
            return .invalidCBOR
        }
    }
}
