import CBOR
import CoordinateClient
import Foundation
import TestSupport
import Testing

/// TLS on both listeners with the test-only certificates of `Tests/Fixtures/tls` (README "Network defaults",
/// docs/security.md).
@Suite("TLS")
struct TLSTests {
    static let fixtures = TestPaths.fixtures.appendingPathComponent("tls").path
    static let caFile = fixtures + "/ca.pem"
    static let otherCAFile = fixtures + "/other-ca.pem"

    /// Runs `body` with a memory daemon whose listeners both speak TLS (or a configuration the test chose), and
    /// its HTTP port.
    static func withTLSDaemon<R>(
        certificate: String = fixtures + "/server.pem", key: String = fixtures + "/server.key",
        extra: String = "", _ body: (DaemonProcess, Int) async throws -> R
    ) async throws -> R {
        let path = try TestBuild.temporaryFile(
            "coordinate:\n  server:\n    tls_cert_file: \(certificate)\n    tls_key_file: \(key)\n\(extra)",
            prefix: "coordinate-tls")
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try await withDaemon(arguments: ["-c", path, "-q"], http: true) { daemon in
            try await body(daemon, try #require(daemon.httpPort))
        }
    }

    static func client(port: Int, host: String = "127.0.0.1", tls: ClientTLS?) -> CoordinateClient {
        CoordinateClient(
            settings: ClientSettings(
                address: "\(host):\(port)", retries: 3, baseRetrySeconds: 0.05, timeout: 30, tls: tls))
    }

    @Test("CBOR-RPC over TLS: the Swift client verifies the daemon by IP address and by host name")
    func clientOverTLS() async throws {
        try await Self.withTLSDaemon { daemon, _ throws in
            for host in ["127.0.0.1", "localhost"] {
                let client = Self.client(port: daemon.port, host: host, tls: ClientTLS(trustRootsFile: Self.caFile))
                let spec = "s-\(host)"
                try await client.setWorkSpec(["name": .text(spec)])
                try await client.addWorkUnits(spec, [WorkUnitSubmission(key: "k", data: .map(["n": 1]))])
                let counts: [WorkUnitStatus: Int] = try await client.countWorkUnits(spec)
                #expect(counts[WorkUnitStatus.available] == 1)
                await client.close()
            }
        }
    }

    @Test("a plaintext peer gets no CBOR-RPC service from a TLS listener")
    func plaintextPeerRefused() async throws {
        try await Self.withTLSDaemon { daemon, _ throws in
            let client = Self.client(port: daemon.port, tls: nil)
            // The daemon's TLS alert is recognised rather than decoded as a CBOR integer.
            await #expect(throws: CoordinateClientError.protocolViolation("the server speaks TLS; connect with TLS")) {
                try await client.setWorkSpec(["name": "s"])
            }
            await client.close()
            // Nothing reached the engine.
            let secure = Self.client(port: daemon.port, tls: ClientTLS(trustRootsFile: Self.caFile))
            #expect(try await secure.allWorkSpecs().isEmpty)
            await secure.close()
        }
    }

    /// Expects `call` to fail at once with the client's TLS handshake error (no retries).
    static func expectHandshakeFailure(_ client: CoordinateClient, _ what: String) async {
        do {
            try await client.setWorkSpec(["name": "s"])
            Issue.record("\(what): the call succeeded")
        } catch let error as CoordinateClientError {
            guard case .connection(let detail) = error else {
                Issue.record("\(what): expected a connection error, got \(error)")
                return
            }
            #expect(detail.hasPrefix("TLS handshake failed"), "\(what): \(detail)")
        } catch {
            Issue.record("\(what): unexpected \(error)")
        }
        await client.close()
    }

    @Test("the client refuses an untrusted certificate, a certificate for another name, and a plaintext daemon")
    func clientRefusesUntrusted() async throws {
        try await Self.withTLSDaemon { daemon, _ throws in
            await Self.expectHandshakeFailure(
                Self.client(port: daemon.port, tls: ClientTLS(trustRootsFile: Self.otherCAFile)), "untrusted CA")

            // A certificate for coordinate.example only: reaching it by address fails verification; naming it passes.
            try await Self.withTLSDaemon(certificate: Self.fixtures + "/named.pem", key: Self.fixtures + "/named.key") {
                named, _ throws in
                for host in ["127.0.0.1", "localhost"] {
                    await Self.expectHandshakeFailure(
                        Self.client(port: named.port, host: host, tls: ClientTLS(trustRootsFile: Self.caFile)),
                        "certificate for another name reached as \(host)")
                }
                let byName = Self.client(
                    port: named.port, tls: ClientTLS(trustRootsFile: Self.caFile, serverName: "coordinate.example"))
                #expect(try await byName.allWorkSpecs().isEmpty)
                await byName.close()
            }

            try await withDaemon(arguments: ["-q"]) { plain throws in
                await Self.expectHandshakeFailure(
                    Self.client(port: plain.port, tls: ClientTLS(trustRootsFile: Self.caFile)), "plaintext daemon")
                #expect(try await makeClient(port: plain.port).allWorkSpecs().isEmpty)
            }
        }
    }

    @Test("HTTP over TLS: REST, /healthz and the dashboard login answer over TLS only")
    func httpOverTLS() async throws {
        try await Self.withTLSDaemon(extra: "    http_token: secret-token\n") { daemon, httpPort in
            let secure = HTTPTestClient(port: httpPort, trustRootsFile: Self.caFile)
            #expect(try await secure.request("GET", "/healthz").status == 200)
            let unauthorized = try await secure.request("GET", "/namespace")
            #expect(unauthorized.status == 401)
            let listed = try await secure.request(
                "GET", "/namespace", headers: [("Authorization", "Bearer secret-token")])
            #expect(listed.status == 200)
            // The dashboard's session cookie is marked Secure under TLS (rest-api.md §8.1).
            let login = try await secure.request(
                "POST", "/ui/login", headers: [("Content-Type", "application/x-www-form-urlencoded")],
                body: Array("token=secret-token".utf8))
            #expect(login.status == 303)
            #expect(login.header("set-cookie")?.hasSuffix("; HttpOnly; SameSite=Strict; Path=/ui; Secure") == true)
            // A plaintext request gets no HTTP answer at all.
            await #expect(throws: (any Error).self) {
                try await HTTPTestClient(port: httpPort).request("GET", "/healthz")
            }
            // A client that does not trust the certificate cannot complete the handshake.
            await #expect(throws: (any Error).self) {
                try await HTTPTestClient(port: httpPort, trustRootsFile: Self.otherCAFile).request("GET", "/healthz")
            }
        }
    }

    @Test("unusable TLS files are configuration errors naming the file and the key")
    func badFiles() async throws {
        let directory = NSTemporaryDirectory() + "coordinate-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let garbage = directory + "/garbage.pem"
        try "-----BEGIN X-----\n-----END X-----\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        let cases: [(certificate: String, key: String, failingKey: String, reason: String)] = [
            (garbage, Self.fixtures + "/server.key", "tls_cert_file", "cannot load a PEM certificate from \(garbage)"),
            (Self.fixtures + "/server.pem", garbage, "tls_key_file", "cannot load a PEM private key from \(garbage)"),
            // The CA's certificate with the server's key: a pair that does not belong together.
            (Self.caFile, Self.fixtures + "/server.key", "tls_key_file", "does not match the certificate"),
        ]
        for (certificate, key, failingKey, reason) in cases {
            let path = directory + "/c.yaml"
            try "coordinate:\n  server:\n    tls_cert_file: \(certificate)\n    tls_key_file: \(key)\n"
                .write(toFile: path, atomically: true, encoding: .utf8)
            let result = try await runExecutable("coordinated", ["-c", path, "--port", "0", "--storage", "memory"])
            #expect(result.status == 2)
            let prefix = "coordinated: configuration error: \(path): coordinate.server.\(failingKey): "
            #expect(result.stderr.hasPrefix(prefix), "\(result.stderr)")
            #expect(result.stderr.contains(reason), "\(result.stderr)")
            #expect(result.stderr.filter { $0 == "\n" }.count == 1, "one line: \(result.stderr)")
        }
    }
}
