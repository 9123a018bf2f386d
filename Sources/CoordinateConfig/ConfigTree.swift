import Foundation
import Yams

/// A typed, ordered view of a YAML document, independent of Yams' node types: the configuration loader reads
/// from it, and `--dump-config` / `get_config` render the effective configuration from it.
public indirect enum ConfigTree: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case list([ConfigTree])
    case map([(String, ConfigTree)])

    public static func == (lhs: ConfigTree, rhs: ConfigTree) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.double(let a), .double(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.list(let a), .list(let b)): return a == b
        case (.map(let a), .map(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// A short phrase naming the kind, for error messages.
    var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        case .list: return "a list"
        case .map: return "a mapping"
        }
    }

    /// Parses YAML text. Quoted scalars are always strings; plain scalars resolve to null, booleans, integers
    /// and floats by the YAML 1.1 core rules Yams implements.
    public static func parse(yaml: String) throws -> ConfigTree {
        guard let node = try Yams.compose(yaml: yaml) else { return .null }
        return try convert(node)
    }

    private static func convert(_ node: Node) throws -> ConfigTree {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .singleQuoted || scalar.style == .doubleQuoted || scalar.style == .literal
                || scalar.style == .folded
            {
                return .string(scalar.string)
            }
            if node.null != nil { return .null }
            if let flag = node.bool { return .bool(flag) }
            if let int = node.int { return .int(Int64(int)) }
            if let double = node.float { return .double(double) }
            return .string(scalar.string)
        case .sequence(let sequence):
            return .list(try sequence.map { try convert($0) })
        case .mapping(let mapping):
            var pairs: [(String, ConfigTree)] = []
            for (key, value) in mapping {
                pairs.append((key.string ?? "\(key)", try convert(value)))
            }
            return .map(pairs)
        case .alias:
            throw ConfigurationError(source: "", key: nil, reason: "YAML aliases are not supported")
        }
    }

    /// Renders the tree as block-style YAML (strings double-quoted, so every value reads back unchanged).
    public func yaml() -> String {
        var lines: [String] = []
        render(into: &lines, indent: 0)
        return lines.joined(separator: "\n") + "\n"
    }

    private func render(into lines: inout [String], indent: Int) {
        let pad = String(repeating: " ", count: indent)
        guard case .map(let pairs) = self else {
            lines.append(pad + inlineYAML())
            return
        }
        for (key, value) in pairs {
            switch value {
            case .map(let inner) where !inner.isEmpty:
                lines.append("\(pad)\(key):")
                value.render(into: &lines, indent: indent + 2)
            default:
                lines.append("\(pad)\(key): \(value.inlineYAML())")
            }
        }
    }

    private func inlineYAML() -> String {
        switch self {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let value): return String(value)
        case .double(let value):
            if value.isNaN { return ".nan" }
            if value.isInfinite { return value < 0 ? "-.inf" : ".inf" }
            let text = String(value)
            return text.contains(".") || text.contains("e") ? text : text + ".0"
        case .string(let text): return Self.quoted(text)
        case .list(let items): return "[" + items.map { $0.inlineYAML() }.joined(separator: ", ") + "]"
        case .map(let pairs):
            return "{" + pairs.map { "\(Self.quoted($0.0)): \($0.1.inlineYAML())" }.joined(separator: ", ") + "}"
        }
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\x%02x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
