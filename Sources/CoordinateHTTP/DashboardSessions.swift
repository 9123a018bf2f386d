import Foundation
import Locking
import Synchronization

/// Who is making a dashboard request once `http_token` is set (rest-api.md §8.1).
enum DashboardPrincipal: Hashable, Sendable {
    /// The request carried `Authorization: Bearer TOKEN` (a script, not a browser: it cannot be forged across
    /// sites, but its forms still need CSRF tokens so that every action goes through the same path).
    case bearer
    /// The request carried a valid `coordinate_session` cookie.
    case session(String)
}

/// Login sessions and the CSRF tokens issued with each confirmation page, in memory.
///
/// Sessions are random 256-bit values, never derived from the token, so a leaked cookie does not reveal it and
/// a restart logs everyone out. Each confirmation page gets its own CSRF token, bound to the principal that
/// viewed it and consumed by the one POST it authorises (a replayed or cross-session token is refused). Both
/// tables are bounded: only holders of the token can create sessions, but a script logging in in a loop must
/// not grow the daemon's memory.
final class DashboardSessions: Sendable {
    static let cookieName = "coordinate_session"
    /// How long a login lasts.
    static let sessionLifetime: Duration = .seconds(12 * 3600)
    /// How long a confirmation page's form stays usable (the specification asks for at least an hour).
    static let csrfLifetime: Duration = .seconds(2 * 3600)
    static let maxSessions = 1024
    static let maxTokensPerPrincipal = 256

    private struct Entry {
        var expires: ContinuousClock.Instant
        var tokens: [String: ContinuousClock.Instant] = [:]
        /// The CSRF token of the logout form every page of a session carries: one per session, so that pages
        /// reloading themselves do not use up the per-page tokens of open confirmation pages.
        var logoutToken: String?
    }

    private let entries = Locked<[DashboardPrincipal: Entry]>([:])

    /// Starts a session and returns its cookie value.
    func createSession() -> String {
        let id = Self.randomValue()
        let now = ContinuousClock.now
        entries.withLock { entries in
            entries = entries.filter { $0.value.expires > now }
            let sessions = entries.filter { if case .session = $0.key { true } else { false } }
            if sessions.count >= Self.maxSessions,
                let oldest = sessions.min(by: { $0.value.expires < $1.value.expires })
            {
                entries.removeValue(forKey: oldest.key)
            }
            entries[.session(id)] = Entry(expires: now + Self.sessionLifetime, logoutToken: Self.randomValue())
        }
        return id
    }

    /// The logout form's token of a live session.
    func logoutToken(forSession id: String) -> String? {
        entries.withLock { $0[.session(id)]?.logoutToken }
    }

    /// Ends the session when `token` is its logout token; false (and nothing changes) otherwise.
    func endSession(_ id: String, logoutToken token: String) -> Bool {
        entries.withLock { entries in
            guard let expected = entries[.session(id)]?.logoutToken,
                HTTPAPI.constantTimeEqual(Array(expected.utf8), Array(token.utf8))
            else { return false }
            entries.removeValue(forKey: .session(id))
            return true
        }
    }

    func isValidSession(_ id: String) -> Bool {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[.session(id)] else { return false }
            if entry.expires <= now {
                entries.removeValue(forKey: .session(id))
                return false
            }
            return true
        }
    }

    /// A fresh CSRF token for one form shown to `principal`.
    func issueToken(for principal: DashboardPrincipal) -> String {
        let token = Self.randomValue()
        let now = ContinuousClock.now
        entries.withLock { entries in
            // A bearer principal is not a login: its entry only holds tokens and does not expire. A session that
            // ended since the request was authenticated gets a token that will never validate.
            guard
                var entry = entries[principal]
                    ?? (principal == .bearer ? Entry(expires: .now + .seconds(1 << 40)) : nil)
            else { return }
            entry.tokens = entry.tokens.filter { $0.value > now }
            if entry.tokens.count >= Self.maxTokensPerPrincipal,
                let oldest = entry.tokens.min(by: { $0.value < $1.value })
            {
                entry.tokens.removeValue(forKey: oldest.key)
            }
            entry.tokens[token] = now + Self.csrfLifetime
            entries[principal] = entry
        }
        return token
    }

    /// Whether `token` was issued to `principal` and is still valid; it cannot be used again either way.
    func consumeToken(_ token: String, for principal: DashboardPrincipal) -> Bool {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let expires = entries[principal]?.tokens.removeValue(forKey: token) else { return false }
            return expires > now
        }
    }

    /// 256 bits from the system's cryptographically secure generator, as hex.
    static func randomValue() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return String(byte, radix: 16).leftPadded(to: 2)
        }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Fields of an `application/x-www-form-urlencoded` body (the WHATWG URL standard's parser: `&`-separated
/// `name=value` pairs, `+` for space, percent-escapes; invalid escapes kept literally). A repeated name keeps
/// its first value.
enum FormFields {
    static func parse(_ body: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in body.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let name = decode(parts[0])
            let value = parts.count > 1 ? decode(parts[1]) : ""
            if fields[name] == nil { fields[name] = value }
        }
        return fields
    }

    private static func decode(_ bytes: ArraySlice<UInt8>) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                output.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), index + 2 < bytes.endIndex, let high = hexValue(bytes[index + 1]),
                let low = hexValue(bytes[index + 2])
            {
                output.append(high << 4 | low)
                index += 3
                continue
            } else {
                output.append(byte)
            }
            index += 1
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
