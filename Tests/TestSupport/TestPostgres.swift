import Foundation

/// The PostgreSQL server of the test run (storage.md §7): scripts/test starts a throw-away cluster and exports
/// its URL as `COORDINATE_TEST_POSTGRES_URL`.
public enum TestPostgres {
    public struct Missing: Error, CustomStringConvertible {
        public var description: String {
            "COORDINATE_TEST_POSTGRES_URL is not set: run the tests through scripts/test, which starts PostgreSQL"
        }
    }

    /// Whether PostgreSQL cases run: with a server, and always under `CI=true` (where a missing server then
    /// fails the cases instead of skipping them).
    public static var available: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["COORDINATE_TEST_POSTGRES_URL"] != nil || environment["CI"] == "true"
    }

    public static func url() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["COORDINATE_TEST_POSTGRES_URL"], !url.isEmpty else {
            throw Missing()
        }
        return url
    }

    /// A schema name no other case uses.
    public static func freshSchema() -> String {
        "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
    }
}

/// Which storage backends the backend-parameterised suites run against. By default every one that can run
/// here; `COORDINATE_TEST_BACKENDS=memory` (a comma-separated list) narrows them — the sanitizer runs use it
/// (docs/testing.md).
public enum TestBackends {
    public static func enabled(_ name: String) -> Bool {
        guard let list = ProcessInfo.processInfo.environment["COORDINATE_TEST_BACKENDS"], !list.isEmpty else {
            return name != "postgres" || TestPostgres.available
        }
        return list.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == name }
    }
}
