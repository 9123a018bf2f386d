import CoordinateConfig
import NIOSSL

/// The daemon's TLS material (`tls_cert_file`, `tls_key_file`), loaded and checked once at start-up so that a
/// broken certificate or key is a configuration error (exit status 2), never a failure on the first handshake.
public struct ServerTLS: Sendable {
    /// For the HTTP listener, which builds its own channel handlers from it.
    public let configuration: TLSConfiguration
    /// For the CBOR-RPC listener: one context shared by every connection.
    public let context: NIOSSLContext

    /// Loads a PEM certificate chain (leaf first) and its PEM private key.
    public init(certificateFile: String, keyFile: String, source: String) throws(ConfigurationError) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw ConfigurationError(
                source: source, key: "coordinate.server.tls_cert_file",
                reason: "cannot load a PEM certificate from \(certificateFile): \(error)")
        }
        guard !chain.isEmpty else {
            throw ConfigurationError(
                source: source, key: "coordinate.server.tls_cert_file",
                reason: "no PEM certificate in \(certificateFile)")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw ConfigurationError(
                source: source, key: "coordinate.server.tls_key_file",
                reason: "cannot load a PEM private key from \(keyFile): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        do {
            // Creating the context checks that the key belongs to the certificate.
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(
                source: source, key: "coordinate.server.tls_key_file",
                reason: "the key in \(keyFile) does not match the certificate in \(certificateFile): \(error)")
        }
        self.configuration = configuration
    }
}
