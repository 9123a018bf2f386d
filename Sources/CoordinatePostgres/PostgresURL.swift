import Foundation
import NIOSSL
import PostgresWire

/// Connection settings from `postgres_url` (storage.md §4.1): a libpq URL
/// (`postgres://user:pass@host:port/db?sslmode=…`), a key/value string (`host=… port=… user=…`), or empty for
/// the standard `PG*` environment variables.
public struct PostgresURL: Sendable, Equatable {
    public var host = "localhost"
    public var port = 5432
    public var user = "postgres"
    public var password: String?
    public var database: String?
    /// `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full`.
    public var sslMode = "prefer"

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public init(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ParseError)
    {
        host = environment["PGHOST"] ?? host
        port = environment["PGPORT"].flatMap(Int.init) ?? port
        user = environment["PGUSER"] ?? environment["USER"] ?? user
        password = environment["PGPASSWORD"]
        database = environment["PGDATABASE"]
        sslMode = environment["PGSSLMODE"] ?? sslMode
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty { return }
        if trimmed.hasPrefix("postgres://") || trimmed.hasPrefix("postgresql://") {
            try parseURL(trimmed)
        } else {
            try parseKeyValues(trimmed)
        }
    }

    private mutating func parseURL(_ text: String) throws(ParseError) {
        guard let components = URLComponents(string: text) else {
            throw ParseError(description: "invalid postgres_url")
        }
        if let value = components.host, !value.isEmpty { host = value }
        if let value = components.port { port = value }
        if let value = components.user, !value.isEmpty { user = value.removingPercentEncoding ?? value }
        if let value = components.password { password = value.removingPercentEncoding ?? value }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        if !path.isEmpty { database = path.removingPercentEncoding ?? path }
        for item in components.queryItems ?? [] {
            try apply(item.name, item.value ?? "")
        }
    }

    private mutating func parseKeyValues(_ text: String) throws(ParseError) {
        for pair in text.split(separator: " ", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ParseError(description: "invalid postgres_url entry \(pair)") }
            try apply(parts[0], parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'")))
        }
    }

    private mutating func apply(_ key: String, _ value: String) throws(ParseError) {
        switch key {
        case "host": host = value
        case "port":
            guard let number = Int(value) else { throw ParseError(description: "invalid port \(value)") }
            port = number
        case "user": user = value
        case "password": password = value
        case "dbname": database = value
        case "sslmode":
            guard ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(value) else {
                throw ParseError(description: "invalid sslmode \(value)")
            }
            sslMode = value
        default: break  // other libpq options (application_name, connect_timeout, …) are accepted and ignored
        }
    }

    /// The connection configuration for this URL. `disable`, `allow` and `prefer` connect without TLS;
    /// `require` uses TLS without certificate checks; `verify-ca` and `verify-full` verify the server certificate.
    public func configuration() throws -> WireConfiguration {
        // The name sent for SNI and checked against the certificate; TLS forbids an address there.
        let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
        let serverName = isAddress ? nil : host
        let tls: WireConfiguration.TLS
        switch sslMode {
        case "require":
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = .none
            tls = .require(try NIOSSLContext(configuration: config), serverHostname: serverName)
        case "verify-ca", "verify-full":
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = sslMode == "verify-full" ? .fullVerification : .noHostnameVerification
            tls = .require(try NIOSSLContext(configuration: config), serverHostname: serverName)
        default:
            tls = .disable
        }
        return WireConfiguration(
            host: host, port: port, user: user, password: password, database: database, tls: tls,
            connectTimeout: .seconds(5))
    }
}
