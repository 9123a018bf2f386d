import CBOR
import CoordinateEngine
import CoordinateJSON
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// How a route treats requests beyond its handler.
struct RouteKind: OptionSet, Sendable {
    let rawValue: Int
    /// A REST route: `Accept` negotiation and JSON request bodies apply.
    static let rest = RouteKind(rawValue: 1)
    /// Takes an `application/x-ndjson` body without the `max_message_bytes` limit (import).
    static let ndjsonBody = RouteKind(rawValue: 2)
    /// Open without the bearer token (`/healthz`).
    static let public_ = RouteKind(rawValue: 4)
    /// Checks `http_token` itself (the dashboard: bearer token or session cookie, a login page, redirects).
    static let ownAuthentication = RouteKind(rawValue: 8)
}

/// What a handler gets: the request, its path parameters and query, the collected body, and the negotiated
/// response type.
struct RESTRequest: Sendable {
    let request: Request
    let parameters: [String: String]
    let query: QueryParameters
    let body: ByteBuffer?
    /// The JSON type responses are sent as.
    let responseType: String

    /// A path parameter decoded as a name (rest-api.md §1.3); 400 when its `-` form is not base64url.
    func name(_ parameter: String) throws -> Identifier {
        guard let segment = parameters[parameter], let octets = CoordinateJSON.name(fromPathSegment: segment) else {
            throw RESTError.badRequest("bad name encoding in \(parameter)")
        }
        // Names in URLs are compared by octets; names created through REST are stored as text.
        return Identifier(octets: octets, isText: true)
    }

    /// The body as JSON; `required` false allows an empty body (then `{}`).
    func json(required: Bool = true) throws -> JSONValue {
        guard let body, body.readableBytes > 0 else {
            if required { throw RESTError.badRequest("request body required") }
            return .object([])
        }
        let budget = DecodeBudget.bytes(forMessageOf: body.readableBytes)
        do {
            return try body.withUnsafeReadableBytes { bytes throws(JSONParseError) in
                try JSONValue.parse(bytes, maxDecodedBytes: budget)
            }
        } catch  where error.reason == JSONParseError.tooLargeReason {
            throw RESTError(
                .contentTooLarge, "ErrTooLarge", "request body too large once parsed; send fewer items per request")
        } catch {
            throw RESTError.badRequest("malformed JSON: \(error)")
        }
    }
}

typealias RouteHandler = @Sendable (RESTRequest) async throws -> Response

/// A route: a path template, the handlers by method, and its kind.
struct Route: Sendable {
    enum Segment: Sendable {
        case literal(String)
        case parameter(String)
    }

    let template: String
    let segments: [Segment]
    let handlers: [HTTPRequest.Method: RouteHandler]
    let kind: RouteKind
    /// A trailing `…` segment that swallows the rest of the path (`/ui/...`).
    let prefixMatch: Bool

    init(
        _ template: String, kind: RouteKind = .rest, prefixMatch: Bool = false,
        _ handlers: [HTTPRequest.Method: RouteHandler]
    ) {
        self.template = template
        self.segments = template.split(separator: "/").map { part in
            part.hasPrefix("{") && part.hasSuffix("}")
                ? .parameter(String(part.dropFirst().dropLast())) : .literal(String(part))
        }
        self.handlers = handlers
        self.kind = kind
        self.prefixMatch = prefixMatch
    }

    /// The path parameters when `path` matches.
    func match(_ path: [Substring]) -> [String: String]? {
        if prefixMatch {
            guard path.count >= segments.count else { return nil }
        } else {
            guard path.count == segments.count else { return nil }
        }
        var parameters: [String: String] = [:]
        for (segment, part) in zip(segments, path) {
            switch segment {
            case .literal(let literal): guard part == literal else { return nil }
            case .parameter(let name): parameters[name] = String(part)
            }
        }
        if prefixMatch { parameters["rest"] = path.dropFirst(segments.count).joined(separator: "/") }
        return parameters
    }

    /// The methods this route answers, `HEAD` wherever `GET` is.
    var allowed: [String] {
        var methods = handlers.keys.map(\.rawValue)
        if handlers[.get] != nil, handlers[.head] == nil { methods.append("HEAD") }
        return methods.sorted()
    }
}
