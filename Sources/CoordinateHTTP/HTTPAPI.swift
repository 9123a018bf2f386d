import CoordinateEngine
import CoordinateJSON
import Foundation
import HTTPTypes
import Hummingbird
import Locking
import Logging
import NIOCore
import Synchronization

/// Settings of the HTTP listener that the request pipeline needs.
public struct HTTPSettings: Sendable {
    /// The configured bind address (`http_host`, else `host`).
    public var bindHost: String
    /// `coordinate.server.http_allowed_hosts`.
    public var allowedHosts: [String]
    /// `coordinate.server.http_token`.
    public var token: String?
    /// The listener speaks only TLS: session cookies are marked `Secure` (rest-api.md §8.1).
    public var secureTransport: Bool
    /// `coordinate.server.http_max_body_bytes`: the largest request body, the import excepted.
    public var maxBodyBytes: Int
    /// `coordinate.server.http_max_import_bytes`: the largest NDJSON import body.
    public var maxImportBytes: Int
    /// The CBOR-RPC namespace: deleting it through REST empties it but keeps it existing.
    public var cborNamespace: Identifier
    /// The storage backend's name, for `/healthz`.
    public var storageName: String
    /// The product version.
    public var version: String

    public init(
        bindHost: String = "127.0.0.1", allowedHosts: [String] = [], token: String? = nil,
        secureTransport: Bool = false, maxBodyBytes: Int = 64 << 20, maxImportBytes: Int = 1 << 30,
        cborNamespace: Identifier = Identifier(text: ""),
        storageName: String = "memory",
        version: String = "0.0.0"
    ) {
        self.bindHost = bindHost
        self.allowedHosts = allowedHosts
        self.token = token
        self.secureTransport = secureTransport
        self.maxBodyBytes = maxBodyBytes
        self.maxImportBytes = maxImportBytes
        self.cborNamespace = cborNamespace
        self.storageName = storageName
        self.version = version
    }
}

/// Records one HTTP request for `/metrics`: route template, method, status code, seconds.
public typealias HTTPRequestObserver =
    @Sendable (_ route: String, _ method: String, _ code: Int, _ seconds: Double) ->
    Void

/// The HTTP API: REST routes, `/metrics`, `/healthz` and `/ui`, with the protections of rest-api.md §1.1 applied
/// to every request before its route runs.
public final class HTTPAPI: Sendable {
    let engine: Engine
    let settings: HTTPSettings
    let logger: Logger
    let observer: HTTPRequestObserver
    /// Extra routes (metrics, health, dashboard) registered by the daemon.
    private let routes: [Route]

    init(
        engine: Engine, settings: HTTPSettings, logger: Logger, observer: @escaping HTTPRequestObserver,
        extraRoutes: [Route]
    ) {
        self.engine = engine
        self.settings = settings
        self.logger = logger
        self.observer = observer
        self.routes = extraRoutes + RESTRoutes(engine: engine, settings: settings).routes
    }

    /// The API with `/healthz` and, when `metrics` is given, `/metrics` (its closure renders the exposition
    /// text at scrape time).
    public convenience init(
        engine: Engine, settings: HTTPSettings, logger: Logger,
        observer: @escaping HTTPRequestObserver = { _, _, _, _ in },
        metrics: (@Sendable () async -> String)? = nil
    ) {
        let health = HealthCheck(engine: engine, settings: settings)
        var extra: [Route] = [
            Route("/healthz", kind: [.public_], [.get: { _ in await health.response() }]),
            Dashboard(engine: engine, settings: settings).route,
        ]
        if let metrics {
            extra.append(
                Route(
                    "/metrics", kind: [],
                    [
                        .get: { _ in
                            Response(
                                status: .ok, headers: [.contentType: MediaTypes.prometheus],
                                body: ResponseBody(byteBuffer: ByteBuffer(string: await metrics())))
                        }
                    ]))
        }
        self.init(engine: engine, settings: settings, logger: logger, observer: observer, extraRoutes: extra)
    }

    /// Answers one request; never throws (every failure becomes an error response).
    @Sendable
    func respond(to request: Request, context: BasicRequestContext) async -> Response {
        let started = ContinuousClock.now
        var routeTemplate = "unmatched"
        var response: Response
        do {
            let (route, handled) = try await handle(request)
            routeTemplate = route
            response = handled
        } catch let error as RESTError {
            response = Self.errorResponse(error)
        } catch {
            logger.error("HTTP request failed: \(error)")
            response = Self.errorResponse(RESTError(.internalServerError, "error", "internal error"))
        }
        if request.method == .head {
            var headers = response.headers
            if headers[.contentLength] == nil, let length = response.body.contentLength {
                headers[.contentLength] = String(length)
            }
            response = Response(status: response.status, headers: headers, body: ResponseBody())
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        observer(routeTemplate, request.method.rawValue, response.status.code, seconds)
        return response
    }

    /// Runs the checks of rest-api.md §1.1 in order, then the route. Returns the route template for metrics.
    private func handle(_ request: Request) async throws -> (String, Response) {
        try checkHost(request)
        let pathSegments = request.uri.path.split(separator: "/", omittingEmptySubsequences: true)
        var matched: (Route, [String: String])?
        for route in routes {
            if let parameters = route.match(pathSegments) {
                matched = (route, parameters)
                break
            }
        }
        let kind = matched?.0.kind ?? []
        if !kind.contains(.public_) && !kind.contains(.ownAuthentication) { try checkToken(request) }
        guard let (route, parameters) = matched else { throw RESTError.notFound }
        let method = request.method == .head ? HTTPRequest.Method.get : request.method
        guard let handler = route.handlers[request.method] ?? route.handlers[method], request.method != .options else {
            var error = RESTError(
                .methodNotAllowed, "ErrMethodNotAllowed", "method \(request.method.rawValue) not allowed")
            error.headers = [(.allow, route.allowed.joined(separator: ", "))]
            throw error
        }
        var responseType = MediaTypes.preferred
        if route.kind.contains(.rest) {
            guard let negotiated = MediaTypes.negotiate(request.headers[.accept]) else {
                throw RESTError(.notAcceptable, "ErrNotAcceptable", "no acceptable response type")
            }
            responseType = negotiated
        }
        let body = try await collectBody(request, route: route)
        let restRequest = RESTRequest(
            request: request, parameters: parameters, query: QueryParameters(request.uri.query), body: body,
            responseType: responseType)
        do {
            return (route.template, try await handler(restRequest))
        } catch let error as EngineError {
            throw RESTError.from(error)
        } catch let error as StorageError {
            if case .unavailable = error {
                throw RESTError(.serviceUnavailable, "ErrStorageUnavailable", error.description)
            }
            throw RESTError(.internalServerError, "error", error.description)
        }
    }

    private func checkHost(_ request: Request) throws {
        guard let authority = request.head.authority else {
            throw RESTError.badRequest("missing Host header")
        }
        // The first Host header became the authority; any left among the fields is a second one. A request with
        // two is invalid (RFC 9112 §3.2), and which of them "counts" is exactly what a rebinding attack probes.
        if request.headers.contains(where: { $0.name.canonicalName == "host" }) {
            throw RESTError.badRequest("more than one Host header")
        }
        let host = Self.hostWithoutPort(authority).lowercased()
        let bind = settings.bindHost.lowercased()
        var accepted: Set<String> = ["localhost", "127.0.0.1", "[::1]", "::1", bind, "[\(bind)]"]
        for name in settings.allowedHosts { accepted.insert(name.lowercased()) }
        if accepted.contains(host) { return }
        if bind == "0.0.0.0" || bind == "::" || bind == "[::]" {
            let literal = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
            if IPAddressText.isLiteral(literal) { return }
        }
        throw RESTError(.misdirectedRequest, "ErrMisdirectedRequest", "host \(host) not accepted")
    }

    static func hostWithoutPort(_ authority: String) -> String {
        if authority.hasPrefix("[") {
            if let close = authority.firstIndex(of: "]") { return String(authority[...close]) }
            return authority
        }
        if let colon = authority.lastIndex(of: ":"), authority.firstIndex(of: ":") == colon {
            return String(authority[..<colon])
        }
        return authority
    }

    private func checkToken(_ request: Request) throws {
        guard let token = settings.token else { return }
        if let header = request.headers[.authorization], header.hasPrefix("Bearer "),
            Self.constantTimeEqual(Array(header.dropFirst(7).utf8), Array(token.utf8))
        {
            return
        }
        var error = RESTError(.unauthorized, "ErrUnauthorized", "missing or invalid bearer token")
        error.headers = [(.wwwAuthenticate, "Bearer")]
        throw error
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    private func collectBody(_ request: Request, route: Route) async throws -> ByteBuffer? {
        let contentType = request.headers[.contentType]
        let ndjson = route.kind.contains(.ndjsonBody)
        switch request.method {
        case .post, .put:
            if ndjson {
                guard let contentType, MediaTypes.essence(contentType) == MediaTypes.ndjson else {
                    throw RESTError(.unsupportedMediaType, "ErrUnsupportedMediaType", "expected \(MediaTypes.ndjson)")
                }
            } else if route.kind.contains(.rest) {
                guard MediaTypes.isJSON(contentType) else {
                    throw RESTError(
                        .unsupportedMediaType, "ErrUnsupportedMediaType",
                        "Content-Type must be one of \(MediaTypes.json.joined(separator: ", "))")
                }
            }
        case .delete:
            if let contentType, !MediaTypes.isJSON(contentType) {
                throw RESTError(.unsupportedMediaType, "ErrUnsupportedMediaType", "unsupported Content-Type")
            }
        default:
            break
        }
        let limit = ndjson ? settings.maxImportBytes : settings.maxBodyBytes
        var body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch {
            throw RESTError(.contentTooLarge, "ErrTooLarge", "request body larger than \(limit) bytes")
        }
        if body.readableBytes > 0, contentType == nil, request.method != .post, request.method != .put {
            throw RESTError(.unsupportedMediaType, "ErrUnsupportedMediaType", "a body needs a Content-Type")
        }
        if body.readableBytes == 0 { return nil }
        body.discardReadBytes()
        return body
    }

    static func errorResponse(_ error: RESTError) -> Response {
        var response = json(error.body, status: error.status, type: MediaTypes.preferred)
        for (name, value) in error.headers { response.headers[name] = value }
        return response
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, type: String) -> Response {
        Response(
            status: status, headers: [.contentType: type],
            body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized())))
    }
}

/// Whether text is an IPv4 or IPv6 address literal.
enum IPAddressText {
    static func isLiteral(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}

/// `/healthz` (rest-api.md §7): a trivial storage read within 1 s, cached for 1 s.
final class HealthCheck: Sendable {
    let engine: Engine
    let settings: HTTPSettings
    private let cache = Locked<(at: ContinuousClock.Instant, healthy: Bool, detail: String?)?>(nil)

    init(engine: Engine, settings: HTTPSettings) {
        self.engine = engine
        self.settings = settings
    }

    func response() async -> Response {
        let (healthy, detail) = await check()
        let body: JSONValue =
            healthy
            ? ["status": "ok", "storage": .string(settings.storageName), "version": .string(settings.version)]
            : [
                "status": "unavailable", "storage": .string(settings.storageName),
                "error": .string(detail ?? "unavailable"),
            ]
        return HTTPAPI.json(body, status: healthy ? .ok : .serviceUnavailable, type: "application/json")
    }

    private func check() async -> (Bool, String?) {
        if let cached = cache.withLock({ $0 }), ContinuousClock.now - cached.at < .seconds(1) {
            return (cached.healthy, cached.detail)
        }
        let result: (Bool, String?) = await withTaskGroup(of: (Bool, String?)?.self) { group in
            group.addTask { [engine] in
                do {
                    try await engine.perform(.read) { _ in }
                    return (true, nil)
                } catch let error as StorageError {
                    if case .unavailable(let detail) = error { return (false, detail) }
                    return (false, error.description)
                } catch {
                    return (false, "\(error)")
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(1))
                return Task.isCancelled ? nil : (false, "storage did not answer within 1 s")
            }
            var outcome: (Bool, String?) = (false, "unavailable")
            while let next = await group.next() {
                if let next {
                    outcome = next
                    break
                }
            }
            group.cancelAll()
            return outcome
        }
        cache.withLock { $0 = (.now, result.0, result.1) }
        return result
    }
}
