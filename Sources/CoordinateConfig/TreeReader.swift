import Foundation

/// Applies a parsed `coordinate:` block to a configuration, validating each key and naming it in errors.
struct TreeReader {
    let source: String
    var warnings: [String]

    func fail(_ key: String, _ reason: String) -> ConfigurationError {
        ConfigurationError(source: source, key: key, reason: reason)
    }

    func pairs(_ tree: ConfigTree, key: String) throws(ConfigurationError) -> [(String, ConfigTree)] {
        switch tree {
        case .map(let pairs): return pairs
        case .null: return []
        default: throw fail(key, "expected a mapping")
        }
    }

    func string(_ tree: ConfigTree, _ key: String) throws(ConfigurationError) -> String {
        guard case .string(let value) = tree else { throw fail(key, "expected a string") }
        return value
    }

    func optionalString(_ tree: ConfigTree, _ key: String) throws(ConfigurationError) -> String? {
        if case .null = tree { return nil }
        return try string(tree, key)
    }

    func int(
        _ tree: ConfigTree, _ key: String, minimum: Int? = nil, maximum: Int? = nil
    ) throws(ConfigurationError)
        -> Int
    {
        guard case .int(let value) = tree, let int = Int(exactly: value) else { throw fail(key, "expected an integer") }
        if let minimum, int < minimum { throw fail(key, "must be at least \(minimum)") }
        if let maximum, int > maximum { throw fail(key, "must be at most \(maximum)") }
        return int
    }

    func optionalInt(_ tree: ConfigTree, _ key: String, minimum: Int? = nil) throws(ConfigurationError) -> Int? {
        if case .null = tree { return nil }
        return try int(tree, key, minimum: minimum)
    }

    func number(_ tree: ConfigTree, _ key: String, positive: Bool = false) throws(ConfigurationError) -> ConfigNumber {
        let number: ConfigNumber
        switch tree {
        case .int(let value): number = .int(value)
        case .double(let value) where value.isFinite: number = .double(value)
        default: throw fail(key, "expected a number")
        }
        if positive, number.doubleValue <= 0 { throw fail(key, "must be positive") }
        return number
    }

    func optionalNumber(
        _ tree: ConfigTree, _ key: String, positive: Bool = false
    ) throws(ConfigurationError)
        -> ConfigNumber?
    {
        if case .null = tree { return nil }
        return try number(tree, key, positive: positive)
    }

    func bool(_ tree: ConfigTree, _ key: String) throws(ConfigurationError) -> Bool {
        guard case .bool(let value) = tree else { throw fail(key, "expected a boolean") }
        return value
    }

    func stringList(_ tree: ConfigTree, _ key: String) throws(ConfigurationError) -> [String] {
        guard case .list(let items) = tree else { throw fail(key, "expected a list of strings") }
        var result: [String] = []
        for item in items {
            guard case .string(let value) = item else { throw fail(key, "expected a list of strings") }
            result.append(value)
        }
        return result
    }

    func port(_ tree: ConfigTree, _ key: String) throws(ConfigurationError) -> Int {
        try int(tree, key, minimum: 0, maximum: 65535)
    }

    mutating func unknown(_ key: String) {
        warnings.append("\(source): \(key): unknown configuration key ignored")
    }

    mutating func apply(_ block: ConfigTree, to configuration: inout CoordinateConfiguration) throws(ConfigurationError)
    {
        for (name, value) in try pairs(block, key: "coordinate") {
            let key = "coordinate.\(name)"
            switch name {
            case "namespace": configuration.namespace = try optionalString(value, key) ?? ""
            case "addresses", "registry_addresses": configuration.addresses = try stringList(value, key)
            case "address":
                switch value {
                case .null: configuration.address = nil
                case .string(let text):
                    guard CoordinateConfiguration.splitAddress(text) != nil else {
                        throw fail(key, "expected host:port")
                    }
                    configuration.address = text
                case .list(let items) where items.count == 2:
                    guard case .string(let host) = items[0], case .int(let port) = items[1], (0...65535).contains(port)
                    else { throw fail(key, "expected [host, port]") }
                    configuration.address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
                default: throw fail(key, "expected host:port or [host, port]")
                }
            case "retries": configuration.retries = try int(value, key, minimum: 0)
            case "base_retry_seconds":
                configuration.baseRetrySeconds = try number(value, key).doubleValue
                if configuration.baseRetrySeconds < 0 { throw fail(key, "must not be negative") }
            case "timeout": configuration.timeout = try number(value, key, positive: true)
            case "default_lifetime": configuration.defaultLifetime = try number(value, key, positive: true)
            case "max_response_bytes": configuration.maxResponseBytes = try int(value, key, minimum: 1)
            case "server": try applyServer(value, to: &configuration.server)
            case "job_queue": try applyJobQueue(value, to: &configuration.jobQueue)
            case "worker":
                for (inner, innerValue) in try pairs(value, key: key) {
                    let innerKey = "\(key).\(inner)"
                    switch inner {
                    case "max_task_seconds":
                        configuration.worker.maxTaskSeconds = try optionalNumber(innerValue, innerKey, positive: true)
                    default: unknown(innerKey)
                    }
                }
            default: unknown(key)
            }
        }
    }

    mutating func applyServer(
        _ block: ConfigTree, to server: inout CoordinateConfiguration.Server
    )
        throws(ConfigurationError)
    {
        for (name, value) in try pairs(block, key: "coordinate.server") {
            let key = "coordinate.server.\(name)"
            switch name {
            case "host": server.host = try string(value, key)
            case "port": server.port = try port(value, key)
            case "http_host": server.httpHost = try optionalString(value, key)
            case "http_port":
                server.httpPort =
                    value == .string("auto") ? CoordinateConfiguration.Server.automaticPort : try port(value, key)
            case "modules":
                let modules = try stringList(value, key)
                for module in modules where !CoordinateConfiguration.knownModules.contains(module) {
                    throw fail(key, "unknown module \(module)")
                }
                server.modules = modules
            case "storage":
                let name = try string(value, key)
                guard let kind = StorageKind(rawValue: name) else { throw fail(key, "unknown storage backend \(name)") }
                server.storage = kind
            case "data_dir": server.dataDir = try optionalString(value, key)
            case "sqlite_path": server.sqlitePath = try optionalString(value, key)
            case "sqlite_group_commit": server.sqliteGroupCommit = try bool(value, key)
            case "postgres_url": server.postgresURL = try optionalString(value, key)
            case "postgres_schema": server.postgresSchema = try string(value, key)
            case "postgres_pool_size": server.postgresPoolSize = try int(value, key, minimum: 1)
            case "postgres_write_transactions": server.postgresWriteTransactions = try int(value, key, minimum: 1)
            case "max_message_bytes": server.maxMessageBytes = try int(value, key, minimum: 16)
            case "max_nesting_depth": server.maxNestingDepth = try int(value, key, minimum: 2)
            case "max_connections": server.maxConnections = try int(value, key, minimum: 1)
            case "max_pending_response_bytes": server.maxPendingResponseBytes = try int(value, key, minimum: 1)
            case "idle_timeout": server.idleTimeout = try optionalNumber(value, key, positive: true)
            case "http_max_connections": server.httpMaxConnections = try int(value, key, minimum: 1)
            case "http_header_timeout": server.httpHeaderTimeout = try number(value, key, positive: true)
            case "http_idle_timeout": server.httpIdleTimeout = try number(value, key, positive: true)
            case "http_max_body_bytes": server.httpMaxBodyBytes = try int(value, key, minimum: 1024)
            case "http_max_import_bytes": server.httpMaxImportBytes = try int(value, key, minimum: 1024)
            case "max_units_per_call": server.maxUnitsPerCall = try optionalInt(value, key, minimum: 1)
            case "max_unit_data_bytes": server.maxUnitDataBytes = try optionalInt(value, key, minimum: 1)
            case "rpclog": server.rpclog = try bool(value, key)
            case "log_format":
                let name = try string(value, key)
                guard let format = LogFormat(rawValue: name) else { throw fail(key, "unknown log format \(name)") }
                server.logFormat = format
            case "tls_cert_file": server.tlsCertFile = try optionalString(value, key)
            case "tls_key_file": server.tlsKeyFile = try optionalString(value, key)
            case "http_token": server.httpToken = try optionalString(value, key)
            case "http_allowed_hosts":
                server.httpAllowedHosts = value == .null ? [] : try stringList(value, key)
            case "cborrpc_allow":
                server.cborrpcAllow = value == .null ? nil : try stringList(value, key)
            default: unknown(key)
            }
        }
    }

    mutating func applyJobQueue(
        _ block: ConfigTree, to jobQueue: inout CoordinateConfiguration.JobQueue
    )
        throws(ConfigurationError)
    {
        for (name, value) in try pairs(block, key: "coordinate.job_queue") {
            let key = "coordinate.job_queue.\(name)"
            switch name {
            case "limit_completed_count":
                if case .int(let count) = value, count < 0 { throw fail(key, "must not be negative") }
                jobQueue.limitCompletedCount = try optionalInt(value, key, minimum: 0)
            case "limit_completed_age": jobQueue.limitCompletedAge = try optionalNumber(value, key)
            case "archive_interval": jobQueue.archiveInterval = try number(value, key, positive: true)
            case "worker_retention": jobQueue.workerRetention = try number(value, key, positive: true)
            default: unknown(key)
            }
        }
    }
}

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address means a single host.
public struct CIDR: Sendable, Equatable {
    public let address: [UInt8]
    public let prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let address = Self.parseAddress(String(parts[0])) else {
            return nil
        }
        let maximum = address.count * 8
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length) else { return nil }
            prefixLength = length
        } else {
            prefixLength = maximum
        }
        self.address = address
    }

    /// Whether `candidate` (4 or 16 octets) lies in this network. IPv4-mapped IPv6 addresses match IPv4 networks.
    public func contains(_ candidate: [UInt8]) -> Bool {
        var octets = candidate
        if address.count == 4, octets.count == 16, octets[0..<10].allSatisfy({ $0 == 0 }), octets[10] == 0xff,
            octets[11] == 0xff
        {
            octets = Array(octets[12...])
        }
        guard octets.count == address.count else { return false }
        var remaining = prefixLength
        for index in 0..<address.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if octets[index] & mask != address[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    public static func parseAddress(_ text: String) -> [UInt8]? {
        if text.contains(":") { return parseIPv6(text) }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let value = UInt8(part) else {
                return nil
            }
            octets.append(value)
        }
        return octets
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !group.isEmpty, group.count <= 4, let value = UInt16(group, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }
}
