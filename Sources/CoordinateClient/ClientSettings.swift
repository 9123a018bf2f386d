import CoordinateConfig
import Foundation

/// How a ``CoordinateClient`` reaches the daemon and how hard it tries (wire-protocol.md §12).
public struct ClientSettings: Sendable, Equatable {
    /// Servers to choose from at random on every (re)connection; `host:port` strings.
    public var addresses: [String]
    /// Retries after a transport failure, per call; `1` means at most two attempts in total.
    public var retries: Int
    /// The first retry sleeps this long; each further retry doubles it.
    public var baseRetrySeconds: Double
    /// Seconds to wait for a response before the connection counts as failed.
    public var timeout: Double
    /// Seconds to wait for a TCP connection.
    public var connectTimeout: Double
    /// Lease, in seconds, requested by `getWork` and lease renewals unless the caller gives one.
    public var defaultLifetime: Double
    /// Largest response accepted; a larger one is a protocol error.
    public var maxResponseBytes: Int
    /// Deepest nesting accepted in a response.
    public var maxNestingDepth: Int
    /// Speak TLS to a daemon started with `tls_cert_file`/`tls_key_file`; nil (the default) speaks plain TCP.
    public var tls: ClientTLS?

    /// Settings with the documented defaults, talking to `address` (default `127.0.0.1:5932`).
    public init(
        address: String = "127.0.0.1:5932", retries: Int = 5, baseRetrySeconds: Double = 0.5, timeout: Double = 60,
        connectTimeout: Double = 10, defaultLifetime: Double = 900, maxResponseBytes: Int = 1 << 30,
        maxNestingDepth: Int = 10_000, tls: ClientTLS? = nil
    ) {
        self.addresses = [address]
        self.retries = retries
        self.baseRetrySeconds = baseRetrySeconds
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.defaultLifetime = defaultLifetime
        self.maxResponseBytes = maxResponseBytes
        self.maxNestingDepth = maxNestingDepth
        self.tls = tls
    }

    /// The client-side keys of a configuration (`address` wins over `addresses`).
    public init(configuration: CoordinateConfiguration) {
        self.init()
        addresses = configuration.address.map { [$0] } ?? configuration.addresses
        if addresses.isEmpty { addresses = ["127.0.0.1:5932"] }
        retries = max(0, configuration.retries)
        baseRetrySeconds = configuration.baseRetrySeconds
        timeout = configuration.timeout.doubleValue
        defaultLifetime = configuration.defaultLifetime.doubleValue
        maxResponseBytes = configuration.maxResponseBytes
    }

    /// Reads the client-side keys from a YAML configuration file (the format every Coordinate program reads).
    /// Unknown keys produce `warnings`, not errors.
    public init(configFile path: String, warnings: inout [String]) throws(ConfigurationError) {
        self.init(configuration: try CoordinateConfiguration.load(path: path, warnings: &warnings))
    }

    /// One address, chosen at random, split into host and port.
    func chooseAddress() -> (host: String, port: Int)? {
        CoordinateConfiguration.splitAddress(addresses.randomElement() ?? "127.0.0.1:5932")
    }
}

/// How the client verifies the daemon over TLS. The certificate is always verified, including the host name
/// (or IP address) it was reached at: there is deliberately no option to skip verification.
public struct ClientTLS: Sendable, Equatable {
    /// PEM file with the certificates to trust (for example a private CA's); nil trusts the system's roots.
    public var trustRootsFile: String?
    /// The name to verify the certificate against and to send as SNI; nil uses the host of the address.
    public var serverName: String?

    public init(trustRootsFile: String? = nil, serverName: String? = nil) {
        self.trustRootsFile = trustRootsFile
        self.serverName = serverName
    }
}
