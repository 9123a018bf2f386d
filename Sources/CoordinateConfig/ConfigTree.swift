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
    /// The most values a configuration may hold. Real ones hold a few dozen; the bound stops a few hundred bytes
    /// of nested YAML aliases ("billion laughs") from expanding into gigabytes while the tree is built.
    public static let maximumValues = 100_000

    public static func parse(yaml: String) throws -> ConfigTree {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigurationError(source: "", key: nil, reason: "cannot parse YAML: \(describe(error))")
        }
        guard let node else { return .null }
        var budget = maximumValues
        return try convert(node, budget: &budget)
    }

    /// One line for a YAML syntax error: where, what, and the construct it was in (libyaml's own message spans
    /// several lines with an excerpt of the file).
    static func describe(_ error: YamlError) -> String {
        func located(_ mark: Mark, _ problem: String, _ context: YamlError.Context?) -> String {
            var text = "line \(mark.line), column \(mark.column): \(problem)"
            if let context { text += " (\(context.text) in line \(context.mark.line), column \(context.mark.column))" }
            return text
        }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            return located(mark, problem, context)
        case .reader(let problem, let offset, _, _):
            return offset.map { "byte \($0): \(problem)" } ?? problem
        case .duplicatedKeysInMapping(let duplicates, let context):
            return located(context.mark, "duplicate keys \(duplicates.joined(separator: ", "))", nil)
        default:
            return "\(error)".split(separator: "\n").joined(separator: " ")
        }
    }

    private static func convert(_ node: Node, budget: inout Int) throws -> ConfigTree {
        budget -= 1
        guard budget >= 0 else {
            throw ConfigurationError(
                source: "", key: nil,
                reason: "more than \(maximumValues) values (nested YAML aliases?); a configuration holds a few dozen")
        }
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
            var items: [ConfigTree] = []
            for item in sequence { items.append(try convert(item, budget: &budget)) }
            return .list(items)
        case .mapping(let mapping):
            var pairs: [(String, ConfigTree)] = []
            for (key, value) in mapping {
                pairs.append((key.string ?? "\(key)", try convert(value, budget: &budget)))
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
