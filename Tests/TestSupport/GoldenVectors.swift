import CBOR
import Foundation

/// One request/response vector of the specification's golden-vectors.json (wire-protocol.md §13).
public struct GoldenVector: Sendable, CustomStringConvertible {
    public let name: String
    public let method: String
    public let request: [UInt8]
    public let response: [UInt8]
    public let notes: String

    /// The sequence a vector belongs to: `py`, `val`, `lock` or `proto`.
    public var sequence: String { String(name.prefix { $0.isLetter }) }
    public var description: String { name }
}

/// Locations of files kept in the repository for tests.
public enum TestPaths {
    /// The repository root, found from this source file's location.
    public static let repositoryRoot: URL = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }()

    /// `Tests/Fixtures`, which holds a copy of the specification's machine-readable test data.
    public static let fixtures = repositoryRoot.appendingPathComponent("Tests/Fixtures")
}

public enum GoldenVectors {
    /// All vectors in file order.
    public static let all: [GoldenVector] = {
        let url = TestPaths.fixtures.appendingPathComponent("spec/golden-vectors.json")
        guard let data = try? Data(contentsOf: url),
            let array = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else {
            fatalError("cannot read \(url.path)")
        }
        return array.map { entry in
            GoldenVector(
                name: entry["name"] as? String ?? "",
                method: entry["method"] as? String ?? "",
                request: Hex.decode(entry["request_hex"] as? String ?? ""),
                response: Hex.decode(entry["response_hex"] as? String ?? ""),
                notes: entry["notes"] as? String ?? "")
        }
    }()

    /// The vectors of one sequence, in order.
    public static func sequence(_ prefix: String) -> [GoldenVector] { all.filter { $0.sequence == prefix } }
}

public enum Hex {
    public static func decode(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        func nibble(_ c: UInt8) -> UInt8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return 0
            }
        }
        while let high = iterator.next(), let low = iterator.next() {
            bytes.append(nibble(high) << 4 | nibble(low))
        }
        return bytes
    }

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
