/// The message renderings of wire-protocol.md §10, modelled on Python 2's `repr`, producing raw octets.
public enum PythonRepr {
    /// Q(s): a single-quoted rendering of a string's raw octets.
    public static func quote(_ octets: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x27]
        out.reserveCapacity(octets.count + 2)
        appendQuoted(octets, to: &out)
        return out
    }

    static func appendQuoted(_ octets: [UInt8], to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        for octet in octets {
            switch octet {
            case 0x5c: out.append(0x5c); out.append(0x5c)
            case 0x27: out.append(0x5c); out.append(0x27)
            case 0x09: out.append(0x5c); out.append(UInt8(ascii: "t"))
            case 0x0a: out.append(0x5c); out.append(UInt8(ascii: "n"))
            case 0x0d: out.append(0x5c); out.append(UInt8(ascii: "r"))
            case 0x20...0x7e: out.append(octet)
            default:
                out.append(0x5c)
                out.append(UInt8(ascii: "x"))
                out.append(hex[Int(octet >> 4)])
                out.append(hex[Int(octet & 0xf)])
            }
        }
        out.append(0x27)
    }

    /// R(v): the rendering of any value.
    public static func render(_ value: CBORValue) -> [UInt8] {
        var out: [UInt8] = []
        append(value, to: &out)
        return out
    }

    /// R(v) as a Swift string (invalid UTF-8 cannot occur: every non-ASCII octet is escaped).
    public static func renderString(_ value: CBORValue) -> String {
        String(decoding: render(value), as: UTF8.self)
    }

    static func append(_ value: CBORValue, to out: inout [UInt8]) {
        switch value {
        case .bytes(let octets), .text(let octets):
            out.append(0x27)
            appendQuoted(octets, to: &out)
        case .unsigned(let n):
            out.append(contentsOf: String(n).utf8)
        case .negative(let n):
            out.append(UInt8(ascii: "-"))
            if n == UInt64.max {
                out.append(contentsOf: "18446744073709551616".utf8)
            } else {
                out.append(contentsOf: String(n + 1).utf8)
            }
        case .float(let value):
            out.append(contentsOf: formatFloat(value).utf8)
        case .null:
            out.append(contentsOf: "None".utf8)
        case .bool(let flag):
            out.append(contentsOf: (flag ? "True" : "False").utf8)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            appendJoined(items, to: &out)
            out.append(UInt8(ascii: "]"))
        case .tuple(let items):
            out.append(UInt8(ascii: "("))
            appendJoined(items, to: &out)
            if items.count == 1 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: ")"))
        case .map(let map):
            out.append(UInt8(ascii: "{"))
            for (index, pair) in map.pairs.enumerated() {
                if index > 0 { out.append(contentsOf: ", ".utf8) }
                append(pair.key, to: &out)
                out.append(contentsOf: ": ".utf8)
                append(pair.value, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        case .uuid(let uuid):
            out.append(contentsOf: "UUID('\(uuid.canonicalString)')".utf8)
        case .tagged(let tag, let inner):
            out.append(contentsOf: "Tag(\(tag), ".utf8)
            append(inner, to: &out)
            out.append(UInt8(ascii: ")"))
        case .simple(let n):
            out.append(contentsOf: "simple(\(n))".utf8)
        case .encoded(let item):
            append(item.decoded(), to: &out)
        }
    }

    private static func appendJoined(_ items: [CBORValue], to out: inout [UInt8]) {
        for (index, item) in items.enumerated() {
            if index > 0 { out.append(contentsOf: ", ".utf8) }
            append(item, to: &out)
        }
    }

    /// Python's `repr(float)`: the shortest round-tripping digits, fixed notation for decimal exponents in
    /// -4…15 and scientific notation (`1e+16`, `1e-05`) otherwise; always contains `.` or `e`.
    public static func formatFloat(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value < 0 ? "-inf" : "inf" }
        if value == 0 { return value.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description yields the shortest round-tripping digit string; re-layout it Python's way.
        var text = Substring(value.magnitude.description)
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...]) ?? 0
            text = text[..<e]
        }
        var digits: [Character] = []
        var pointPosition = text.count
        for (index, character) in text.enumerated() {
            if character == "." {
                pointPosition = index
            } else {
                digits.append(character)
            }
        }
        // value = 0.d1d2d3… × 10^(pointPosition + exponent)
        var decimalExponent = pointPosition + exponent
        while let first = digits.first, first == "0", digits.count > 1 {
            digits.removeFirst()
            decimalExponent -= 1
        }
        while let last = digits.last, last == "0", digits.count > 1 { digits.removeLast() }
        let sign = value < 0 ? "-" : ""
        let scientificExponent = decimalExponent - 1
        if scientificExponent < -4 || scientificExponent >= 16 {
            var mantissa = String(digits[0])
            if digits.count > 1 { mantissa += "." + String(digits[1...]) }
            let expSign = scientificExponent < 0 ? "-" : "+"
            let expDigits = String(abs(scientificExponent))
            return sign + mantissa + "e" + expSign + (expDigits.count < 2 ? "0" + expDigits : expDigits)
        }
        if decimalExponent <= 0 {
            return sign + "0." + String(repeating: "0", count: -decimalExponent) + String(digits)
        }
        if decimalExponent >= digits.count {
            return sign + String(digits) + String(repeating: "0", count: decimalExponent - digits.count) + ".0"
        }
        return sign + String(digits[..<decimalExponent]) + "." + String(digits[decimalExponent...])
    }
}
