import CBOR
import CoordinateClient
import CoordinateConfig
import CoordinateJSON
import Foundation

/// A failure with the exit status scripts rely on (README "Worker runtime and CLI behaviour"): 1 the server
/// reported a failure, 2 usage or configuration, 3 cannot connect, 4 not found.
struct CLIError: Error, CustomStringConvertible {
    let status: Int32
    let description: String

    static func usage(_ message: String) -> CLIError { CLIError(status: 2, description: message) }
    static func notFound(_ message: String) -> CLIError { CLIError(status: 4, description: message) }
    static func failed(_ message: String) -> CLIError { CLIError(status: 1, description: message) }

    /// The status and message for any error a command can throw.
    static func from(_ error: any Error) -> CLIError {
        switch error {
        case let error as CLIError: return error
        case let error as CoordinateClientError:
            switch error {
            case .connection: return CLIError(status: 3, description: error.description)
            case .noSuchWorkSpec: return .notFound(error.description)
            default: return .failed(error.description)
            }
        case let error as ConfigurationError: return .usage("configuration error: \(error)")
        default: return .failed("\(error)")
        }
    }
}

/// Plain-text tables: left-aligned text, right-aligned numbers.
struct Table {
    let headers: [String]
    var rows: [[String]] = []
    /// Columns whose cells are right-aligned.
    var numeric: Set<Int> = []

    func render() -> String {
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                let pad = String(repeating: " ", count: max(0, widths[index] - cell.count))
                if index == cells.count - 1 && !numeric.contains(index) { return cell }
                return numeric.contains(index) ? pad + cell : cell + pad
            }.joined(separator: "  ")
        }
        return ([line(headers)] + rows.map(line)).map { $0.replacing(/\ +$/, with: "") }.joined(separator: "\n") + "\n"
    }
}

enum Display {
    /// A name or key for people: its text (invalid UTF-8 replaced).
    static func name(_ value: CBORValue) -> String {
        if let octets = value.stringOctets { return String(decoding: octets, as: UTF8.self) }
        return PythonRepr.renderString(value)
    }

    /// A readable JSON form of any value: strings of either kind as strings, tuples as arrays, UUIDs as their
    /// canonical text, map keys as strings (non-string keys in their Python repr), other tags as
    /// `{"tag": N, "value": V}`. For exact forms, data fields use ``CoordinateJSON/data(_:)``.
    static func json(_ value: CBORValue) -> JSONValue {
        switch value {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .unsigned(let n): return n <= UInt64(Int64.max) ? .int(Int64(n)) : .float(Double(n))
        case .negative(let n): return n <= UInt64(Int64.max) ? .int(-1 - Int64(n)) : .float(-1 - Double(n))
        case .float(let x): return .float(x)
        case .bytes(let octets), .text(let octets): return .string(String(decoding: octets, as: UTF8.self))
        case .array(let items), .tuple(let items): return .array(items.map(json))
        case .map(let map):
            return .object(map.pairs.map { (name($0.key), json($0.value)) })
        case .uuid(let uuid): return .string(uuid.canonicalString)
        case .tagged(let tag, let inner): return ["tag": .int(Int64(tag)), "value": json(inner)]
        case .simple(let n): return ["simple": .int(Int64(n))]
        case .encoded(let item): return json(item.decoded())
        }
    }

    /// The same readable form as YAML.
    static func yaml(_ value: CBORValue) -> String {
        tree(json(value)).yaml()
    }

    static func tree(_ json: JSONValue) -> ConfigTree {
        switch json {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .int(let n): return .int(n)
        case .float(let x): return .double(x)
        case .string(let text): return .string(text)
        case .array(let items): return .list(items.map(tree))
        case .object(let members): return .map(members.map { ($0.0, tree($0.1)) })
        }
    }

    /// A compact one-line rendering of unit data for tables.
    static func brief(_ value: CBORValue, limit: Int = 60) -> String {
        let text = json(value).serialized()
        return text.count <= limit ? text : String(text.prefix(limit - 1)) + "…"
    }

    static func time(_ seconds: Double?) -> String {
        guard let seconds else { return "-" }
        return RFC3339.format(microseconds: Int64((seconds * 1_000_000).rounded()))
    }
}

enum Parse {
    /// A YAML (or JSON) document as a CBOR value: maps with text keys, strings as text.
    static func yaml(_ text: String, what: String) throws -> CBORValue {
        do {
            return cbor(try ConfigTree.parse(yaml: text))
        } catch {
            throw CLIError.usage("cannot parse \(what): \(error)")
        }
    }

    static func cbor(_ tree: ConfigTree) -> CBORValue {
        switch tree {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .int(let n): return .int(n)
        case .double(let x): return .float(x)
        case .string(let text): return .text(text)
        case .list(let items): return .array(items.map(cbor))
        case .map(let pairs): return .map(CBORMap(pairs.map { (.text($0.0), cbor($0.1)) }))
        }
    }

    static func status(_ name: String) throws -> WorkUnitStatus {
        guard let status = WorkUnitStatus(name: name), status != .blocked else {
            throw CLIError.usage("unknown status \(name) (use available, pending, finished or failed)")
        }
        return status
    }

    /// Reads a file, or stdin for `-`.
    static func contents(of path: String) throws -> String {
        if path == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CLIError.usage("cannot read \(path): \(error.localizedDescription)")
        }
    }
}

/// Writes to stderr (progress and diagnostics; stdout stays for results).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
