import Foundation

/// A configuration problem, rendered as `SOURCE: KEY: REASON` (spec README, "Startup and shutdown
/// requirements"); `KEY` is omitted when the error concerns the whole file.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible, Sendable {
    public var source: String
    public var key: String?
    public var reason: String

    public init(source: String, key: String?, reason: String) {
        self.source = source
        self.key = key
        self.reason = reason
    }

    public var description: String {
        if let key { return "\(source): \(key): \(reason)" }
        return "\(source): \(reason)"
    }
}

/// A number that remembers whether it was written as an integer, so `get_config` can echo its kind.
public enum ConfigNumber: Sendable, Equatable {
    case int(Int64)
    case double(Double)

    public var doubleValue: Double {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        }
    }

    var tree: ConfigTree {
        switch self {
        case .int(let value): return .int(value)
        case .double(let value): return .double(value)
        }
    }
}

/// Storage backends a daemon can be configured with.
public enum StorageKind: String, Sendable, CaseIterable {
    case memory, sqlite, postgres
}

/// Log line formats.
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// The `coordinate:` block of the YAML configuration (spec README, "Configuration"), shared by the daemon, the
/// client library, the worker runtime and the CLI. Every field has the documented default.
public struct CoordinateConfiguration: Sendable, Equatable {
    public var namespace = ""
    public var addresses = ["127.0.0.1:5932"]
    public var address: String?
    public var retries: Int = 5
    public var baseRetrySeconds: Double = 0.5
    public var timeout: ConfigNumber = .int(60)
    public var defaultLifetime: ConfigNumber = .int(900)
    public var maxResponseBytes: Int = 1 << 30
    public var server = Server()
    public var jobQueue = JobQueue()
    public var worker = Worker()

    public struct Server: Sendable, Equatable {
        public var host = "127.0.0.1"
        public var port = 5932
        public var httpHost: String?
        /// The HTTP port: 0 disables the listener, ``automaticPort`` (`auto` in a file or on the command line)
        /// binds a free port the kernel chooses (`coordinated --ports-file` reports it).
        public var httpPort = 5980
        public var modules = ["JobQueue", "LockService"]
        /// The built-in default is the durable embedded SQLite backend.
        public var storage: StorageKind = .sqlite
        public var dataDir: String?
        public var sqlitePath: String?
        public var sqliteGroupCommit = true
        public var postgresURL: String?
        public var postgresSchema = "public"
        public var postgresPoolSize = 10
        /// Write transactions a daemon runs at once on PostgreSQL (at most half the pool): each takes every write
        /// queued meanwhile, so fewer make larger batches (docs/operations.md, "Sizing the pool").
        public var postgresWriteTransactions = 2
        public var maxMessageBytes = 64 << 20
        public var maxNestingDepth = 256
        public var maxConnections = 4096
        public var maxPendingResponseBytes = 4 << 20
        public var idleTimeout: ConfigNumber?
        /// Open HTTP connections; at the limit a new one replaces the oldest still waiting for a request head.
        public var httpMaxConnections = 256
        /// Seconds a new HTTP connection has to deliver its first complete request head.
        public var httpHeaderTimeout: ConfigNumber = .int(10)
        /// Seconds an HTTP connection may wait for (or trickle) its next request head after a response.
        public var httpIdleTimeout: ConfigNumber = .int(60)
        /// Largest REST request body, the NDJSON import excepted.
        public var httpMaxBodyBytes = 16 << 20
        /// Largest NDJSON import body. An import is one transaction: the daemon holds all of it while it runs.
        public var httpMaxImportBytes = 1 << 30
        public var maxUnitsPerCall: Int?
        public var maxUnitDataBytes: Int?
        public var rpclog = false
        public var logFormat: LogFormat = .text
        public var tlsCertFile: String?
        public var tlsKeyFile: String?
        public var httpToken: String?
        public var httpAllowedHosts: [String] = []
        public var cborrpcAllow: [String]?

        /// The ``httpPort`` value meaning "any free port": HTTP has no port 0 of its own, since 0 disables it.
        public static let automaticPort = -1

        public init() {}
    }

    public struct JobQueue: Sendable, Equatable {
        public var limitCompletedCount: Int?
        public var limitCompletedAge: ConfigNumber?
        public var archiveInterval: ConfigNumber = .int(60)
        public var workerRetention: ConfigNumber = .int(86400)

        public init() {}
    }

    public struct Worker: Sendable, Equatable {
        public var maxTaskSeconds: ConfigNumber?

        public init() {}
    }

    /// The modules a daemon knows how to serve.
    public static let knownModules = ["JobQueue", "LockService"]

    public init() {}

    /// Loads a configuration file. Unknown keys inside `coordinate:` are reported in `warnings`; other
    /// top-level keys are ignored.
    public static func load(
        path: String, base: CoordinateConfiguration = CoordinateConfiguration(), warnings: inout [String]
    ) throws(ConfigurationError) -> CoordinateConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(source: path, key: nil, reason: "cannot read file: \(Self.describe(error))")
        }
        return try parse(yaml: text, source: path, base: base, warnings: &warnings)
    }

    /// Parses configuration YAML text; `source` names it in error messages.
    public static func parse(
        yaml: String, source: String, base: CoordinateConfiguration = CoordinateConfiguration(),
        warnings: inout [String]
    ) throws(ConfigurationError) -> CoordinateConfiguration {
        let tree: ConfigTree
        do {
            tree = try ConfigTree.parse(yaml: yaml)
        } catch let error as ConfigurationError {
            throw ConfigurationError(source: source, key: nil, reason: error.reason)
        } catch {
            throw ConfigurationError(source: source, key: nil, reason: "cannot parse YAML: \(Self.describe(error))")
        }
        var configuration = base
        var reader = TreeReader(source: source, warnings: [])
        switch tree {
        case .null:
            break
        case .map(let pairs):
            if let block = pairs.last(where: { $0.0 == "coordinate" })?.1 {
                try reader.apply(block, to: &configuration)
            }
        default:
            throw ConfigurationError(source: source, key: nil, reason: "expected a mapping at the top level")
        }
        warnings.append(contentsOf: reader.warnings)
        try configuration.validate(source: source)
        return configuration
    }

    /// Checks the cross-key rules that a single key cannot express.
    public func validate(source: String) throws(ConfigurationError) {
        if server.storage == .postgres, server.postgresURL == nil {
            throw ConfigurationError(
                source: source, key: "coordinate.server.postgres_url", reason: "required when storage is postgres")
        }
        if (server.tlsCertFile == nil) != (server.tlsKeyFile == nil) {
            throw ConfigurationError(
                source: source,
                key: server.tlsCertFile == nil ? "coordinate.server.tls_cert_file" : "coordinate.server.tls_key_file",
                reason: "tls_cert_file and tls_key_file must be set together")
        }
        for (key, path) in [("tls_cert_file", server.tlsCertFile), ("tls_key_file", server.tlsKeyFile)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw ConfigurationError(source: source, key: "coordinate.server.\(key)", reason: "cannot read \(path)")
            }
        }
        if let token = server.httpToken, token.isEmpty {
            throw ConfigurationError(source: source, key: "coordinate.server.http_token", reason: "must not be empty")
        }
        for cidr in server.cborrpcAllow ?? [] where CIDR(cidr) == nil {
            throw ConfigurationError(
                source: source, key: "coordinate.server.cborrpc_allow", reason: "malformed CIDR \(cidr)")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if let error = error as? CocoaError {
            switch error.code {
            case .fileReadNoSuchFile, .fileNoSuchFile: return "No such file or directory"
            case .fileReadNoPermission: return "Permission denied"
            default: break
            }
        }
        return "\(error)"
    }

    // MARK: - Effective configuration as a tree

    /// The effective configuration with every key (nulls included), as `--dump-config` prints it and
    /// `get_config` returns it: the password in `postgres_url` and the `http_token` are redacted.
    public func effectiveTree(redacted: Bool = true) -> ConfigTree {
        func string(_ value: String?) -> ConfigTree { value.map(ConfigTree.string) ?? .null }
        func int(_ value: Int?) -> ConfigTree { value.map { .int(Int64($0)) } ?? .null }
        func number(_ value: ConfigNumber?) -> ConfigTree { value?.tree ?? .null }
        let serverTree: ConfigTree = .map([
            ("host", .string(server.host)),
            ("port", .int(Int64(server.port))),
            ("http_host", string(server.httpHost)),
            ("http_port", server.httpPort == Server.automaticPort ? .string("auto") : .int(Int64(server.httpPort))),
            ("modules", .list(server.modules.map(ConfigTree.string))),
            ("storage", .string(server.storage.rawValue)),
            ("data_dir", string(server.dataDir)),
            ("sqlite_path", string(server.sqlitePath)),
            ("sqlite_group_commit", .bool(server.sqliteGroupCommit)),
            ("postgres_url", string(redacted ? server.postgresURL.map(Self.redactPassword) : server.postgresURL)),
            ("postgres_schema", .string(server.postgresSchema)),
            ("postgres_pool_size", .int(Int64(server.postgresPoolSize))),
            ("postgres_write_transactions", .int(Int64(server.postgresWriteTransactions))),
            ("max_message_bytes", .int(Int64(server.maxMessageBytes))),
            ("max_nesting_depth", .int(Int64(server.maxNestingDepth))),
            ("max_connections", .int(Int64(server.maxConnections))),
            ("max_pending_response_bytes", .int(Int64(server.maxPendingResponseBytes))),
            ("idle_timeout", number(server.idleTimeout)),
            ("http_max_connections", .int(Int64(server.httpMaxConnections))),
            ("http_header_timeout", number(server.httpHeaderTimeout)),
            ("http_idle_timeout", number(server.httpIdleTimeout)),
            ("http_max_body_bytes", .int(Int64(server.httpMaxBodyBytes))),
            ("http_max_import_bytes", .int(Int64(server.httpMaxImportBytes))),
            ("max_units_per_call", int(server.maxUnitsPerCall)),
            ("max_unit_data_bytes", int(server.maxUnitDataBytes)),
            ("rpclog", .bool(server.rpclog)),
            ("log_format", .string(server.logFormat.rawValue)),
            ("tls_cert_file", string(server.tlsCertFile)),
            ("tls_key_file", string(server.tlsKeyFile)),
            ("http_token", redacted && server.httpToken != nil ? .string("***") : string(server.httpToken)),
            ("http_allowed_hosts", .list(server.httpAllowedHosts.map(ConfigTree.string))),
            ("cborrpc_allow", server.cborrpcAllow.map { .list($0.map(ConfigTree.string)) } ?? .null),
        ])
        let jobQueueTree: ConfigTree = .map([
            ("limit_completed_count", int(jobQueue.limitCompletedCount)),
            ("limit_completed_age", number(jobQueue.limitCompletedAge)),
            ("archive_interval", jobQueue.archiveInterval.tree),
            ("worker_retention", jobQueue.workerRetention.tree),
        ])
        let addressTree: ConfigTree = string(address)
        return .map([
            (
                "coordinate",
                .map([
                    ("namespace", .string(namespace)),
                    ("addresses", .list(addresses.map(ConfigTree.string))),
                    ("address", addressTree),
                    ("retries", .int(Int64(retries))),
                    ("base_retry_seconds", .double(baseRetrySeconds)),
                    ("timeout", timeout.tree),
                    ("default_lifetime", defaultLifetime.tree),
                    ("max_response_bytes", .int(Int64(maxResponseBytes))),
                    ("server", serverTree),
                    ("job_queue", jobQueueTree),
                    ("worker", .map([("max_task_seconds", number(worker.maxTaskSeconds))])),
                ])
            )
        ])
    }

    /// Replaces the password of a libpq URL (`postgres://user:pass@host/db`) or key/value string
    /// (`password=…`) with `***`.
    public static func redactPassword(_ url: String) -> String {
        if let schemeEnd = url.range(of: "://") {
            let rest = url[schemeEnd.upperBound...]
            guard let at = rest.firstIndex(of: "@") else { return url }
            let userInfo = rest[..<at]
            guard let colon = userInfo.firstIndex(of: ":") else { return url }
            return String(url[..<schemeEnd.upperBound]) + userInfo[..<colon] + ":***" + rest[at...]
        }
        // key=value form: password=secret or password='se cret'
        var parts: [String] = []
        for part in url.split(separator: " ", omittingEmptySubsequences: false) {
            if part.hasPrefix("password=") {
                parts.append("password=***")
            } else {
                parts.append(String(part))
            }
        }
        return parts.joined(separator: " ")
    }

    // MARK: - Derived values

    /// The data directory: the configured one, else `$COORDINATE_DATA_DIR`, `$XDG_DATA_HOME/coordinate`, or
    /// `$HOME/.local/share/coordinate` (storage.md §3.1).
    public func resolvedDataDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let dir = server.dataDir { return dir }
        if let dir = environment["COORDINATE_DATA_DIR"], !dir.isEmpty { return dir }
        if let xdg = environment["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/coordinate" }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return home + "/.local/share/coordinate"
    }

    /// The SQLite database path: `sqlite_path`, else `<data_dir>/coordinate.sqlite3`.
    public func resolvedSQLitePath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        server.sqlitePath ?? resolvedDataDirectory(environment: environment) + "/coordinate.sqlite3"
    }

    /// The client-side server address (wire-protocol.md §12.1): `address`, else a random element of `addresses`,
    /// else `127.0.0.1:5932`; split at the last colon.
    public func clientAddress() -> (host: String, port: Int) {
        let chosen = address ?? addresses.randomElement() ?? "127.0.0.1:5932"
        return Self.splitAddress(chosen) ?? ("127.0.0.1", 5932)
    }

    /// Splits `host:port` at the last colon (an IPv6 literal may be bracketed).
    public static func splitAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}
