import CBOR

/// The JSON mapping of Coordinate values (rest-api.md §1.2–§1.4), shared by the HTTP API, the CLI, the worker
/// runtime's shell-command tasks, and export/import.
public enum CoordinateJSON {
    // MARK: Data dictionaries (§1.4)

    /// A `data` field: a JSON object when the value is JSON-safe, otherwise the standard base64 of its CBOR
    /// encoding.
    public static func data(_ value: CBORValue) -> JSONValue {
        let value = value.expanded
        if case .map = value, let object = jsonSafe(value) { return object }
        return .string(Base64.encode(CBOREncoder.encode(value)))
    }

    /// Reads a `data` field in either form. JSON objects become maps with text keys and text strings.
    public static func data(from json: JSONValue) throws(MappingError) -> CBORValue {
        switch json {
        case .object: return cbor(from: json)
        case .string(let text):
            guard let octets = Base64.decode(text) else { throw MappingError("data is not valid base64") }
            do {
                return try octets.withUnsafeBytes { buffer throws(CBORDecodingError) in
                    try CBORDecoder.decode(buffer, maxDepth: 256)
                }
            } catch {
                throw MappingError("data is not a valid CBOR encoding")
            }
        default:
            throw MappingError("data must be an object or a base64 string")
        }
    }

    /// A value as plain JSON when every part of it is JSON-safe (a map's keys must be valid UTF-8 text without
    /// duplicates); nil otherwise.
    public static func jsonSafe(_ value: CBORValue) -> JSONValue? {
        switch value {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .unsigned(let n): return n <= UInt64(Int64.max) ? .int(Int64(n)) : nil
        case .negative(let n): return n <= UInt64(Int64.max) ? .int(-1 - Int64(n)) : nil
        case .float(let x): return x.isFinite ? .float(x) : nil
        case .text(let octets): return String(validating: octets, as: UTF8.self).map(JSONValue.string)
        case .array(let items):
            var out: [JSONValue] = []
            out.reserveCapacity(items.count)
            for item in items {
                guard let json = jsonSafe(item) else { return nil }
                out.append(json)
            }
            return .array(out)
        case .map(let map):
            var members: [(String, JSONValue)] = []
            var seen = Set<String>()
            for pair in map.pairs {
                guard case .text(let octets) = pair.key, let name = String(validating: octets, as: UTF8.self),
                    seen.insert(name).inserted, let json = jsonSafe(pair.value)
                else { return nil }
                members.append((name, json))
            }
            return .object(members)
        case .encoded(let item): return jsonSafe(item.decoded())
        case .bytes, .tuple, .uuid, .tagged, .simple: return nil
        }
    }

    /// Plain JSON as a CBOR value: objects become maps with text keys, strings text strings.
    public static func cbor(from json: JSONValue) -> CBORValue {
        switch json {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .int(let n): return .int(n)
        case .float(let x): return .float(x)
        case .string(let text): return .text(Array(text.utf8))
        case .array(let items): return .array(items.map(cbor(from:)))
        case .object(let members): return .map(CBORMap(members.map { (.text(Array($0.0.utf8)), cbor(from: $0.1)) }))
        }
    }

    // MARK: Names (§1.3)

    /// A name's JSON members: `name` (UTF-8 with replacement) and, when the octets are not valid UTF-8,
    /// `name_base64`. `field` renames the pair (`key`/`key_base64`, …).
    public static func nameMembers(_ octets: [UInt8], field: String = "name") -> [(String, JSONValue)] {
        if let text = String(validating: octets, as: UTF8.self) { return [(field, .string(text))] }
        return [
            (field, .string(String(decoding: octets, as: UTF8.self))),
            (field + "_base64", .string(Base64.encode(octets))),
        ]
    }

    /// Reads a name from an object's `field` / `field_base64` members (`_base64` wins).
    public static func name(in object: JSONValue, field: String = "name") throws(MappingError) -> [UInt8]? {
        if let encoded = object[field + "_base64"], encoded != .null {
            guard let text = encoded.stringValue, let octets = Base64.decode(text) else {
                throw MappingError("\(field)_base64 is not valid base64")
            }
            return octets
        }
        guard let plain = object[field], plain != .null else { return nil }
        guard let text = plain.stringValue else { throw MappingError("\(field) must be a string") }
        return Array(text.utf8)
    }

    /// A name as a URL path segment: verbatim when non-empty, not starting with `-` and made only of
    /// `A–Z a–z 0–9 - . _ :`; otherwise `-` + unpadded base64url.
    public static func pathSegment(_ octets: [UInt8]) -> String {
        let plain =
            !octets.isEmpty && octets[0] != 0x2d
            && octets.allSatisfy { byte in
                (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte) || (0x30...0x39).contains(byte)
                    || byte == 0x2d || byte == 0x2e || byte == 0x5f || byte == 0x3a
            }
        if plain { return String(decoding: octets, as: UTF8.self) }
        return "-" + Base64.encode(octets, urlSafe: true, padded: false)
    }

    /// Decodes a URL path segment written by ``pathSegment(_:)``; nil when a `-` segment is not valid base64url.
    public static func name(fromPathSegment segment: String) -> [UInt8]? {
        guard segment.hasPrefix("-") else { return Array(segment.utf8) }
        return Base64.decode(String(segment.dropFirst()), urlSafe: true)
    }

    // MARK: Times (§1.2)

    /// RFC 3339 in UTC with `Z`, fractional seconds without trailing zeros; `null` for none.
    public static func time(microseconds: Int64?) -> JSONValue {
        guard let microseconds else { return .null }
        return .string(RFC3339.format(microseconds: microseconds))
    }

    /// Why a JSON value does not map to a Coordinate value.
    public struct MappingError: Error, Equatable, CustomStringConvertible, Sendable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }
}

/// Standard and URL-safe base64 (RFC 4648).
public enum Base64 {
    private static let standard = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlSafe = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode(_ octets: [UInt8], urlSafe: Bool = false, padded: Bool = true) -> String {
        let alphabet = urlSafe ? Self.urlSafe : Self.standard
        var out: [UInt8] = []
        out.reserveCapacity((octets.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= octets.count {
            let chunk = UInt32(octets[index]) << 16 | UInt32(octets[index + 1]) << 8 | UInt32(octets[index + 2])
            out += [
                alphabet[Int(chunk >> 18 & 63)], alphabet[Int(chunk >> 12 & 63)], alphabet[Int(chunk >> 6 & 63)],
                alphabet[Int(chunk & 63)],
            ]
            index += 3
        }
        let rest = octets.count - index
        if rest == 1 {
            let chunk = UInt32(octets[index]) << 16
            out += [alphabet[Int(chunk >> 18 & 63)], alphabet[Int(chunk >> 12 & 63)]]
            if padded { out += [0x3d, 0x3d] }
        } else if rest == 2 {
            let chunk = UInt32(octets[index]) << 16 | UInt32(octets[index + 1]) << 8
            out += [alphabet[Int(chunk >> 18 & 63)], alphabet[Int(chunk >> 12 & 63)], alphabet[Int(chunk >> 6 & 63)]]
            if padded { out.append(0x3d) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes base64; padding is optional. Nil for any character outside the alphabet or a bad length.
    public static func decode(_ text: String, urlSafe: Bool = false) -> [UInt8]? {
        var values: [UInt8] = []
        values.reserveCapacity(text.utf8.count)
        var padding = 0
        for byte in text.utf8 {
            if byte == 0x3d {
                padding += 1
                continue
            }
            guard padding == 0 else { return nil }
            let value: UInt8
            switch byte {
            case 0x41...0x5a: value = byte - 0x41
            case 0x61...0x7a: value = byte - 0x61 + 26
            case 0x30...0x39: value = byte - 0x30 + 52
            case 0x2b where !urlSafe: value = 62
            case 0x2f where !urlSafe: value = 63
            case 0x2d where urlSafe: value = 62
            case 0x5f where urlSafe: value = 63
            default: return nil
            }
            values.append(value)
        }
        guard values.count % 4 != 1, padding <= 2, padding == 0 || (values.count + padding) % 4 == 0 else {
            return nil
        }
        var out: [UInt8] = []
        out.reserveCapacity(values.count * 3 / 4)
        var index = 0
        while index + 4 <= values.count {
            let chunk =
                UInt32(values[index]) << 18 | UInt32(values[index + 1]) << 12 | UInt32(values[index + 2]) << 6
                | UInt32(values[index + 3])
            out += [UInt8(chunk >> 16 & 0xff), UInt8(chunk >> 8 & 0xff), UInt8(chunk & 0xff)]
            index += 4
        }
        let rest = values.count - index
        if rest == 2 {
            let chunk = UInt32(values[index]) << 18 | UInt32(values[index + 1]) << 12
            out.append(UInt8(chunk >> 16 & 0xff))
        } else if rest == 3 {
            let chunk = UInt32(values[index]) << 18 | UInt32(values[index + 1]) << 12 | UInt32(values[index + 2]) << 6
            out += [UInt8(chunk >> 16 & 0xff), UInt8(chunk >> 8 & 0xff)]
        }
        return out
    }
}

/// RFC 3339 timestamps in UTC (rest-api.md §1.2), without Foundation.
public enum RFC3339 {
    /// `2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.25Z`.
    public static func format(microseconds: Int64) -> String {
        var seconds = microseconds / 1_000_000
        var fraction = microseconds % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86400
        var secondOfDay = seconds % 86400
        if secondOfDay < 0 {
            secondOfDay += 86400
            days -= 1
        }
        let (year, month, day) = civil(fromDays: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        var text =
            "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
        if fraction > 0 {
            var digits = pad(fraction, 6)
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text + "Z"
    }

    /// Parses any RFC 3339 offset; returns microseconds since the epoch. `0001-01-01T00:00:00Z` is returned as
    /// is (callers treat it as "none").
    public static func parse(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[range] {
                guard (0x30...0x39).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - 0x30)
            }
            return value
        }
        guard bytes.count >= 20, bytes[4] == 0x2d, bytes[7] == 0x2d, bytes[10] == 0x54 || bytes[10] == 0x74,
            bytes[13] == 0x3a, bytes[16] == 0x3a, let year = number(0..<4), let month = number(5..<7),
            let day = number(8..<10), let hour = number(11..<13), let minute = number(14..<16),
            let second = number(17..<19), (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60,
            second < 61
        else { return nil }
        var index = 19
        var micros: Int64 = 0
        if bytes[index] == 0x2e {
            index += 1
            var digits = 0
            while index < bytes.count, (0x30...0x39).contains(bytes[index]) {
                if digits < 6 { micros = micros * 10 + Int64(bytes[index] - 0x30) }
                digits += 1
                index += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 6) { micros *= 10 }
        }
        guard index < bytes.count else { return nil }
        var offsetSeconds: Int64 = 0
        switch bytes[index] {
        case 0x5a, 0x7a:
            guard index + 1 == bytes.count else { return nil }
        case 0x2b, 0x2d:
            guard index + 6 == bytes.count, bytes[index + 3] == 0x3a, let hours = number(index + 1..<index + 3),
                let minutes = number(index + 4..<index + 6)
            else { return nil }
            offsetSeconds = (hours * 3600 + minutes * 60) * (bytes[index] == 0x2d ? -1 : 1)
        default: return nil
        }
        let days = days(fromCivil: year, month, day)
        let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offsetSeconds
        return seconds * 1_000_000 + micros
    }

    // Howard Hinnant's civil-from-days and days-from-civil algorithms.
    static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}
