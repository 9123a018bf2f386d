/// Media types and `Accept` negotiation of rest-api.md §1.1.
enum MediaTypes {
    static let preferred = "application/vnd.diffeo.coordinate.v1+json"
    /// The JSON types a REST request body may have and a response may be sent as, in preference order.
    static let json = [
        preferred, "application/vnd.diffeo.coordinate+json", "application/json", "text/json",
    ]
    static let ndjson = "application/x-ndjson"
    static let form = "application/x-www-form-urlencoded"
    static let html = "text/html; charset=utf-8"
    static let prometheus = "text/plain; version=0.0.4; charset=utf-8"

    /// The type without parameters, lower-cased.
    static func essence(_ contentType: String) -> String {
        contentType.split(separator: ";", maxSplits: 1).first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        } ?? ""
    }

    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        return json.contains(essence(contentType))
    }

    /// The response type for an `Accept` header: a listed known type wins over wildcards at equal quality,
    /// then the first listed; `*/*` and `application/*` select the preferred type, `text/*` selects
    /// `text/json`. Nil when nothing acceptable is listed (406).
    static func negotiate(_ accept: String?) -> String? {
        guard let accept, !accept.trimmingCharacters(in: .whitespaces).isEmpty else { return preferred }
        var best: (type: String, quality: Double, specific: Bool)?
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = parts.first?.lowercased(), !first.isEmpty else { continue }
            var quality = 1.0
            for parameter in parts.dropFirst() {
                let pair = parameter.split(separator: "=", maxSplits: 1).map {
                    $0.trimmingCharacters(in: .whitespaces)
                }
                if pair.count == 2, pair[0].lowercased() == "q", let value = Double(pair[1]) { quality = value }
            }
            guard quality > 0 else { continue }
            let candidate: (String, Bool)?
            switch first {
            case let type where json.contains(type): candidate = (type, true)
            case "*/*", "application/*": candidate = (preferred, false)
            case "text/*": candidate = ("text/json", false)
            default: candidate = nil
            }
            guard let (type, specific) = candidate else { continue }
            if let current = best {
                if quality > current.quality || (quality == current.quality && specific && !current.specific) {
                    best = (type, quality, specific)
                }
            } else {
                best = (type, quality, specific)
            }
        }
        return best?.type
    }
}

/// A request's query string: repeated parameters kept in order, values percent-decoded.
struct QueryParameters {
    private(set) var pairs: [(String, String)] = []

    init(_ query: String?) {
        guard let query, !query.isEmpty else { return }
        for part in query.split(separator: "&", omittingEmptySubsequences: true) {
            let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.decode(String(pieces[0]))
            let value = pieces.count > 1 ? Self.decode(String(pieces[1])) : ""
            pairs.append((name, value))
        }
    }

    func all(_ name: String) -> [String] { pairs.filter { $0.0 == name }.map(\.1) }
    func first(_ name: String) -> String? { pairs.first { $0.0 == name }?.1 }
    func contains(_ name: String) -> Bool { pairs.contains { $0.0 == name } }

    /// Percent-decoding with `+` as space (form encoding); invalid escapes are kept literally.
    static func decode(_ text: String) -> String {
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x25, index + 2 < bytes.count, let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2])
            {
                out.append(high << 4 | low)
                index += 3
                continue
            }
            out.append(byte == 0x2b ? 0x20 : byte)
            index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }
}
