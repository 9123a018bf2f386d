/// The total numeric coercions of wire-protocol.md §5.4. They never trap: a value outside the documented domain
/// yields nil and the caller reports its own error text.
extension CBORValue {
    /// int-like: an integer in the signed 64-bit range, a finite float truncated toward zero (and then in
    /// range), a boolean, or a string of an optional sign followed by ASCII decimal digits (in range).
    public var intLike: Int64? {
        switch self {
        case .unsigned, .negative:
            return int64Value
        case .float(let value):
            guard value.isFinite else { return nil }
            let truncated = value.rounded(.towardZero)
            // 2^63 is exactly representable; anything ≥ it does not fit.
            guard truncated >= -9_223_372_036_854_775_808.0, truncated < 9_223_372_036_854_775_808.0 else { return nil }
            return Int64(truncated)
        case .bool(let flag):
            return flag ? 1 : 0
        case .bytes(let octets), .text(let octets):
            return Self.parseDecimalInteger(octets)
        case .encoded(let item):
            return item.decoded().intLike
        default:
            return nil
        }
    }

    /// number-like: an integer, a float, or a string holding a decimal floating-point number; always finite.
    public var numberLike: Double? {
        switch self {
        case .unsigned(let n): return Double(n)
        case .negative(let n): return -1 - Double(n)
        case .float(let value): return value.isFinite ? value : nil
        case .bytes(let octets), .text(let octets):
            guard let value = Self.parseDecimalFloat(octets), value.isFinite else { return nil }
            return value
        case .encoded(let item): return item.decoded().numberLike
        default: return nil
        }
    }

    /// Whether this value is an integer or a float (no strings, no booleans): the stricter "number" of the
    /// unit-item checks (rpc-methods.md §2.8).
    public var strictNumber: Double? {
        switch self {
        case .unsigned(let n): return Double(n)
        case .negative(let n): return -1 - Double(n)
        case .float(let value): return value
        case .encoded(let item): return item.decoded().strictNumber
        default: return nil
        }
    }

    static func parseDecimalInteger(_ octets: [UInt8]) -> Int64? {
        var index = 0
        var negative = false
        if index < octets.count, octets[index] == UInt8(ascii: "-") || octets[index] == UInt8(ascii: "+") {
            negative = octets[index] == UInt8(ascii: "-")
            index += 1
        }
        guard index < octets.count else { return nil }
        var magnitude: UInt64 = 0
        while index < octets.count {
            let octet = octets[index]
            guard octet >= UInt8(ascii: "0"), octet <= UInt8(ascii: "9") else { return nil }
            let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(octet - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            magnitude = sum
            index += 1
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }

    /// Parses `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`; rejects `inf`, `nan`, hex floats.
    static func parseDecimalFloat(_ octets: [UInt8]) -> Double? {
        var index = 0
        func digits() -> Int {
            let start = index
            while index < octets.count, octets[index] >= UInt8(ascii: "0"), octets[index] <= UInt8(ascii: "9") {
                index += 1
            }
            return index - start
        }
        if index < octets.count, octets[index] == UInt8(ascii: "-") || octets[index] == UInt8(ascii: "+") { index += 1 }
        var mantissaDigits = digits()
        if index < octets.count, octets[index] == UInt8(ascii: ".") {
            index += 1
            mantissaDigits += digits()
        }
        guard mantissaDigits > 0 else { return nil }
        if index < octets.count, octets[index] == UInt8(ascii: "e") || octets[index] == UInt8(ascii: "E") {
            index += 1
            if index < octets.count, octets[index] == UInt8(ascii: "-") || octets[index] == UInt8(ascii: "+") {
                index += 1
            }
            guard digits() > 0 else { return nil }
        }
        guard index == octets.count else { return nil }
        return Double(String(decoding: octets, as: UTF8.self))
    }
}
