import Crypto
import Foundation
import Synchronization

/// The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: no channel binding, and the user
/// name left empty (PostgreSQL takes it from the startup message, as libpq relies on).
///
/// The password is used as given: SASLprep is not applied, so a password with non-ASCII characters that
/// normalization would change does not match the server's verifier.
struct SCRAMClient {
    private let password: String
    private let clientNonce: String
    private let clientFirstBare: String
    private var expectedServerSignature: [UInt8]?

    init(password: String) {
        var generator = SystemRandomNumberGenerator()
        let nonce = (0..<18).map { _ in UInt8.random(in: 0...255, using: &generator) }
        self.init(password: password, clientNonce: Data(nonce).base64EncodedString())
    }

    init(password: String, clientNonce: String, user: String = "") {
        self.password = password
        self.clientNonce = clientNonce
        self.clientFirstBare = "n=" + user + ",r=" + clientNonce
    }

    static let mechanism = "SCRAM-SHA-256"

    /// The `SASLInitialResponse` data: GS2 header (no channel binding) and the bare first message.
    var clientFirstMessage: [UInt8] { Array(("n,," + clientFirstBare).utf8) }

    /// The client's final message for the server's first message (`r=…,s=…,i=…`).
    mutating func clientFinalMessage(serverFirst data: [UInt8]) throws(WireConnectionError) -> [UInt8] {
        let serverFirst = String(decoding: data, as: UTF8.self)
        let attributes = Self.attributes(serverFirst)
        guard let nonce = attributes["r"], nonce.hasPrefix(clientNonce),
            let saltText = attributes["s"], let salt = Data(base64Encoded: saltText),
            let iterationsText = attributes["i"], let iterations = Int(iterationsText), iterations > 0
        else { throw .authentication("malformed SCRAM server-first-message") }
        let salted = Self.saltedPassword(Array(password.utf8), salt: Array(salt), iterations: iterations)
        let clientKey = Self.hmac(salted, Array("Client Key".utf8))
        let storedKey = Array(SHA256.hash(data: clientKey))
        let finalWithoutProof = "c=biws,r=" + nonce
        let authMessage = Array((clientFirstBare + "," + serverFirst + "," + finalWithoutProof).utf8)
        let signature = Self.hmac(storedKey, authMessage)
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        let serverKey = Self.hmac(salted, Array("Server Key".utf8))
        expectedServerSignature = Self.hmac(serverKey, authMessage)
        return Array((finalWithoutProof + ",p=" + Data(proof).base64EncodedString()).utf8)
    }

    /// Checks the server's final message (`v=…`): the server proves it knows the verifier too.
    func verify(serverFinal data: [UInt8]) throws(WireConnectionError) {
        let attributes = Self.attributes(String(decoding: data, as: UTF8.self))
        if let error = attributes["e"] { throw .authentication("SCRAM: \(error)") }
        guard let expectedServerSignature, let text = attributes["v"], let signature = Data(base64Encoded: text),
            Array(signature) == expectedServerSignature
        else { throw .authentication("the server's SCRAM signature does not match") }
    }

    private static func attributes(_ message: String) -> [String: String] {
        var result: [String: String] = [:]
        for part in message.split(separator: ",") {
            guard let equals = part.firstIndex(of: "="), part.distance(from: part.startIndex, to: equals) == 1 else {
                continue
            }
            result[String(part[..<equals])] = String(part[part.index(after: equals)...])
        }
        return result
    }

    private static func hmac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// `Hi(password, salt, i)`: PBKDF2 with HMAC-SHA-256, one block; remembered (``SaltedPasswords``).
    static func saltedPassword(_ password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SaltedPasswords.Key(password: password, salt: salt, iterations: iterations)
        if let known = SaltedPasswords.known.withLock({ $0[key] }) { return known }
        // The key's pads are hashed once, not once per iteration.
        let keyed = HMAC<SHA256>(key: SymmetricKey(data: password))
        func mac(_ message: [UInt8]) -> [UInt8] {
            var hmac = keyed
            hmac.update(data: message)
            return Array(hmac.finalize())
        }
        var block = mac(salt + [0, 0, 0, 1])
        var result = block
        for _ in 1..<iterations {
            block = mac(block)
            for index in result.indices { result[index] ^= block[index] }
        }
        SaltedPasswords.known.withLock { known in
            if known.count >= SaltedPasswords.limit { known.removeAll() }
            known[key] = result
        }
        return result
    }
}

/// Salted passwords already derived. PostgreSQL keeps one salt and iteration count per user, so every connection
/// a pool opens derives the same key — 4 096 HMACs, on the connection's event loop, where a pool connecting at
/// once (at start, or after the database came back) stalled everything else the loop serves: in a loaded debug
/// test run, long enough for other connections' startups to time out. The salted password is derived from the
/// password, which the process holds anyway.
enum SaltedPasswords {
    struct Key: Hashable {
        let password: [UInt8]
        let salt: [UInt8]
        let iterations: Int
    }

    /// Entries kept at most (one per user and server a process connects as, in practice).
    static let limit = 16
    static let known = Mutex<[Key: [UInt8]]>([:])
}

/// The `md5` method's answer: `"md5" + md5hex(md5hex(password + user) + salt)`.
func md5PasswordMessage(user: String, password: String, salt: [UInt8]) -> [UInt8] {
    func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined()
    }
    let inner = hex(Insecure.MD5.hash(data: Array((password + user).utf8)))
    return Array(("md5" + hex(Insecure.MD5.hash(data: Array(inner.utf8) + salt))).utf8)
}
