import CBOR

extension JSONValue {
    /// Compact JSON text. Floats always carry a `.` or an exponent (`2.0`, `1e+16`, rest-api.md §1.2);
    /// non-finite floats, which JSON cannot express, are written as `null`.
    public func serialized() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(to: &out, indent: nil, level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    /// Indented JSON text for people (two spaces per level).
    public func prettyPrinted() -> String {
        var out: [UInt8] = []
        write(to: &out, indent: 2, level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    private func write(to out: inout [UInt8], indent: Int?, level: Int) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let flag): out += Array((flag ? "true" : "false").utf8)
        case .int(let value): out += Array(String(value).utf8)
        case .float(let value):
            if value.isFinite {
                out += Array(PythonRepr.formatFloat(value).utf8)
            } else {
                out += Array("null".utf8)
            }
        case .string(let text): Self.writeString(text, to: &out)
        case .array(let elements):
            if elements.isEmpty {
                out += [0x5b, 0x5d]
                return
            }
            out.append(0x5b)
            for (index, element) in elements.enumerated() {
                if index > 0 { out.append(0x2c) }
                Self.newline(&out, indent: indent, level: level + 1)
                element.write(to: &out, indent: indent, level: level + 1)
            }
            Self.newline(&out, indent: indent, level: level)
            out.append(0x5d)
        case .object(let members):
            if members.isEmpty {
                out += [0x7b, 0x7d]
                return
            }
            out.append(0x7b)
            for (index, member) in members.enumerated() {
                if index > 0 { out.append(0x2c) }
                Self.newline(&out, indent: indent, level: level + 1)
                Self.writeString(member.0, to: &out)
                out.append(0x3a)
                if indent != nil { out.append(0x20) }
                member.1.write(to: &out, indent: indent, level: level + 1)
            }
            Self.newline(&out, indent: indent, level: level)
            out.append(0x7d)
        }
    }

    private static func newline(_ out: inout [UInt8], indent: Int?, level: Int) {
        guard let indent else { return }
        out.append(0x0a)
        out += [UInt8](repeating: 0x20, count: indent * level)
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private static func writeString(_ text: String, to out: inout [UInt8]) {
        out.append(0x22)
        for byte in text.utf8 {
            switch byte {
            case 0x22: out += [0x5c, 0x22]
            case 0x5c: out += [0x5c, 0x5c]
            case 0x0a: out += [0x5c, 0x6e]
            case 0x0d: out += [0x5c, 0x72]
            case 0x09: out += [0x5c, 0x74]
            case 0x00..<0x20:
                out += Array("\\u00".utf8)
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0f)])
            default: out.append(byte)
            }
        }
        out.append(0x22)
    }
}

/// Why JSON text could not be parsed.
public struct JSONParseError: Error, Equatable, CustomStringConvertible, Sendable {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }

    /// The reason given when the parsed values would exceed the allowed memory.
    public static let tooLargeReason = "the value takes too much memory once parsed"
}

extension JSONValue {
    /// Parses one JSON value (surrounding whitespace allowed). A number without `.` or exponent that fits in
    /// int64 becomes `.int`, any other number `.float` (rest-api.md §1.2).
    public static func parse(_ text: some StringProtocol, maxDepth: Int = 512) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }

    /// Parses one JSON value from UTF-8 bytes.
    ///
    /// - Parameter maxDecodedBytes: an estimate of the memory the parsed values may take (their slots, long
    ///   strings' storage, arrays' and objects' storage); past it parsing stops with an error whose reason is
    ///   ``JSONParseError/tooLargeReason``.
    public static func parse(
        _ bytes: [UInt8], maxDepth: Int = 512, maxDecodedBytes: Int = .max
    ) throws(JSONParseError) -> JSONValue {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(JSONParseError) -> JSONValue in
                try parse(buffer, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes)
            }
        }
        return try result.get()
    }

    /// Parses one JSON value from UTF-8 bytes in place (a request body, without copying it).
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, maxDepth: Int = 512, maxDecodedBytes: Int = .max
    ) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth, budget: maxDecodedBytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("unexpected data after the value") }
        return value
    }
}

private struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    var position = 0
    /// What parsed values may still take, by ``charge(_:)``'s estimate.
    var budget: Int

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int, budget: Int = .max) {
        self.bytes = bytes
        self.maxDepth = maxDepth
        self.budget = budget
    }

    /// A heap block's header and rounding, as the allocator sees an array's or a long string's storage.
    static let blockOverhead = 48

    mutating func charge(_ bytes: Int) throws(JSONParseError) {
        budget -= bytes
        if budget < 0 { throw error(JSONParseError.tooLargeReason) }
    }

    func error(_ reason: String) -> JSONParseError { JSONParseError(offset: position, reason: reason) }

    mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[position]) { position += 1 }
    }

    mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard position < bytes.count else { throw error("unexpected end of input") }
        switch bytes[position] {
        case 0x7b: return try parseObject(depth: depth + 1)
        case 0x5b: return try parseArray(depth: depth + 1)
        case 0x22:
            let text = try parseString()
            // Strings of up to 15 UTF-8 bytes live inside the value; longer ones have a block of their own.
            if text.utf8.count > 15 { try charge(Self.blockOverhead + text.utf8.count) }
            return .string(text)
        case 0x74: return try literal("true", .bool(true))
        case 0x66: return try literal("false", .bool(false))
        case 0x6e: return try literal("null", .null)
        case 0x2d, 0x30...0x39: return try parseNumber()
        default: throw error("unexpected character")
        }
    }

    mutating func literal(_ word: String, _ value: JSONValue) throws(JSONParseError) -> JSONValue {
        let expected = Array(word.utf8)
        guard position + expected.count <= bytes.count,
            bytes[position..<position + expected.count].elementsEqual(expected)
        else { throw error("unexpected character") }
        position += expected.count
        return value
    }

    mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw error("nested too deeply") }
        position += 1
        var members: [(String, JSONValue)] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == 0x7d {
            position += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == 0x22 else { throw error("expected a member name") }
            let name = try parseString()
            try charge(
                MemoryLayout<(String, JSONValue)>.stride
                    + (name.utf8.count > 15 ? Self.blockOverhead + name.utf8.count : 0))
            if members.isEmpty { try charge(Self.blockOverhead) }
            skipWhitespace()
            guard position < bytes.count, bytes[position] == 0x3a else { throw error("expected ':'") }
            position += 1
            skipWhitespace()
            members.append((name, try parseValue(depth: depth)))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of input") }
            if bytes[position] == 0x2c {
                position += 1
                continue
            }
            guard bytes[position] == 0x7d else { throw error("expected ',' or '}'") }
            position += 1
            return .object(members)
        }
    }

    mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw error("nested too deeply") }
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == 0x5d {
            position += 1
            return .array(elements)
        }
        try charge(Self.blockOverhead)
        while true {
            skipWhitespace()
            try charge(MemoryLayout<JSONValue>.stride)
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of input") }
            if bytes[position] == 0x2c {
                position += 1
                continue
            }
            guard bytes[position] == 0x5d else { throw error("expected ',' or ']'") }
            position += 1
            return .array(elements)
        }
    }

    mutating func parseString() throws(JSONParseError) -> String {
        position += 1
        var out: [UInt8] = []
        while true {
            guard position < bytes.count else { throw error("unterminated string") }
            let byte = bytes[position]
            position += 1
            switch byte {
            case 0x22:
                guard let text = String(validating: out, as: UTF8.self) else { throw error("invalid UTF-8 in string") }
                return text
            case 0x5c:
                guard position < bytes.count else { throw error("unterminated string") }
                let escape = bytes[position]
                position += 1
                switch escape {
                case 0x22: out.append(0x22)
                case 0x5c: out.append(0x5c)
                case 0x2f: out.append(0x2f)
                case 0x62: out.append(0x08)
                case 0x66: out.append(0x0c)
                case 0x6e: out.append(0x0a)
                case 0x72: out.append(0x0d)
                case 0x74: out.append(0x09)
                case 0x75:
                    var scalar = try hex4()
                    if (0xd800..<0xdc00).contains(scalar) {
                        guard position + 1 < bytes.count, bytes[position] == 0x5c, bytes[position + 1] == 0x75 else {
                            throw error("unpaired surrogate")
                        }
                        position += 2
                        let low = try hex4()
                        guard (0xdc00..<0xe000).contains(low) else { throw error("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
                    } else if (0xdc00..<0xe000).contains(scalar) {
                        throw error("unpaired surrogate")
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid escape") }
                    out += Array(String(Character(unicode)).utf8)
                default: throw error("invalid escape")
                }
            case 0x00..<0x20:
                throw error("control character in string")
            default:
                out.append(byte)
            }
        }
    }

    mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("invalid escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            position += 1
            let digit: UInt32
            switch byte {
            case 0x30...0x39: digit = UInt32(byte - 0x30)
            case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
            default: throw error("invalid escape")
            }
            value = value << 4 | digit
        }
        return value
    }

    mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = position
        var isFloat = false
        if bytes[position] == 0x2d { position += 1 }
        guard position < bytes.count, (0x30...0x39).contains(bytes[position]) else { throw error("invalid number") }
        if bytes[position] == 0x30 {
            position += 1
        } else {
            while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
        }
        if position < bytes.count, bytes[position] == 0x2e {
            isFloat = true
            position += 1
            guard position < bytes.count, (0x30...0x39).contains(bytes[position]) else { throw error("invalid number") }
            while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
        }
        if position < bytes.count, bytes[position] == 0x65 || bytes[position] == 0x45 {
            isFloat = true
            position += 1
            if position < bytes.count, bytes[position] == 0x2b || bytes[position] == 0x2d { position += 1 }
            guard position < bytes.count, (0x30...0x39).contains(bytes[position]) else { throw error("invalid number") }
            while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if !isFloat, let integer = Int64(text) { return .int(integer) }
        guard let value = Double(text) else { throw error("invalid number") }
        return .float(value)
    }
}
