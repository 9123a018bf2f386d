import CBOR
import CoordinateEngine
import CoordinateJSON
import Foundation
import HTTPTypes
import Hummingbird
import Locking
import Mustache
import NIOCore
import Synchronization

/// The web dashboard `/ui` (rest-api.md §8): server-rendered HTML, no JavaScript, no external resources, every
/// user-supplied value HTML-escaped (Mustache's `{{…}}`), markers (`data-*` attributes) as the specification
/// requires. Pages never create anything. Without `http_token` it is read-only; with it, every page needs the
/// token or a login session and the operator actions of ``DashboardActions.swift`` appear.
final class Dashboard: Sendable {
    let engine: Engine
    let version: String
    /// `http_token`: when set, the dashboard authenticates its own requests and offers actions.
    let token: String?
    /// Session cookies are `Secure` when the listener speaks only TLS.
    let secureTransport: Bool
    let sessions = DashboardSessions()
    private let templates: MustacheLibrary
    private let throughput = ThroughputSampler()

    init(engine: Engine, settings: HTTPSettings) {
        self.engine = engine
        self.version = settings.version
        self.token = settings.token
        self.secureTransport = settings.secureTransport
        var library = MustacheLibrary()
        for (name, text) in DashboardTemplates.all {
            // The templates are constants of this file; a parse error is a programming error caught by tests.
            if let template = try? MustacheTemplate(string: text) { library.register(template, named: name) }
        }
        templates = library
    }

    var route: Route {
        Route(
            "/ui", kind: [.ownAuthentication], prefixMatch: true,
            [
                .get: { [self] request in try await self.page(request) },
                .post: { [self] request in try await self.post(request) },
            ])
    }

    // MARK: - Dispatch

    func page(_ request: RESTRequest) async throws -> Response {
        let rest = (request.parameters["rest"] ?? "").split(separator: "/").map(String.init)
        let refresh = request.query.first("refresh").flatMap(Int.init).flatMap { $0 > 0 ? min($0, 3600) : nil }
        var principal: DashboardPrincipal?
        var logout: String?
        if token != nil {
            if rest == ["login"] { return loginPage() }
            guard let authenticated = authenticate(request.request) else { return Self.redirect(to: "/ui/login") }
            principal = authenticated
            if case .session(let id) = authenticated { logout = sessions.logoutToken(forSession: id) }
        }
        do {
            let (title, body): (String, String)
            switch rest.count {
            case 0: (title, body) = try await home()
            case 2 where rest[0] == "namespace": (title, body) = try await namespacePage(try Self.name(rest[1]))
            case 4 where rest[0] == "namespace" && rest[2] == "work_spec":
                (title, body) = try await specPage(
                    try Self.name(rest[1]), try Self.name(rest[3]), query: request.query, actions: principal != nil)
            case 5 where rest[0] == "namespace" && rest[2] == "work_spec" && principal != nil:
                guard let action = Action(rawValue: rest[4]), let principal else {
                    throw PageError.notFound("No such page.")
                }
                (title, body) = try await confirmationPage(
                    try Self.name(rest[1]), try Self.name(rest[3]), action, principal: principal, query: request.query)
                return html(.ok, title: title, body: body, refresh: nil, noStore: true, logout: logout)
            case 6 where rest[0] == "namespace" && rest[2] == "work_spec" && rest[4] == "work_unit":
                (title, body) = try await unitPage(
                    try Self.name(rest[1]), try Self.name(rest[3]), try Self.name(rest[5]))
            case 4 where rest[0] == "namespace" && rest[2] == "worker":
                (title, body) = try await workerPage(try Self.name(rest[1]), try Self.name(rest[3]))
            default: throw PageError.notFound("No such page.")
            }
            return html(.ok, title: title, body: body, refresh: refresh, noStore: logout != nil, logout: logout)
        } catch let error as PageError {
            return errorPage(error)
        }
    }

    enum PageError: Error {
        case notFound(String)
        case badRequest(String)
    }

    static func name(_ segment: String) throws -> Identifier {
        guard let octets = CoordinateJSON.name(fromPathSegment: segment) else {
            throw PageError.badRequest("Bad name encoding in the URL.")
        }
        return Identifier(octets: octets, isText: true)
    }

    func render(_ template: String, _ context: [String: Any]) -> String {
        templates.render(context, withTemplate: template) ?? ""
    }

    /// A page in the layout. Pages may not be framed by other sites (the confirmation forms would otherwise be
    /// open to clickjacking) and load nothing from anywhere; `noStore` keeps pages with forms out of caches.
    /// `logout` is the session's logout token: the page then carries a logout button.
    func html(
        _ status: HTTPResponse.Status, title: String, body: String, refresh: Int?, noStore: Bool = false,
        logout: String? = nil
    )
        -> Response
    {
        var context: [String: Any] = [
            "title": title, "body": body, "version": version, "now": RFC3339.format(microseconds: engine.clock.now()),
        ]
        if let refresh { context["refresh"] = refresh }
        if let logout { context["logout"] = logout }
        var headers: HTTPFields = [
            .contentType: MediaTypes.html,
            .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                + "frame-ancestors 'none'",
            HTTPField.Name("X-Frame-Options")!: "DENY",
        ]
        if noStore { headers[.cacheControl] = "no-store" }
        return Response(
            status: status, headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(string: render("layout", context))))
    }

    // MARK: - Helpers

    /// Names for `data-*` attributes and text: octets as UTF-8 with replacement.
    static func text(_ name: Identifier) -> String { String(decoding: name.octets, as: UTF8.self) }
    /// A namespace for headings: the default namespace `""` reads "(default)".
    static func label(_ ns: Identifier) -> String { ns.isEmpty ? "(default)" : text(ns) }
    /// Keys and other values as people read them: R() (wire-protocol.md §10).
    static func repr(_ value: CBORValue) -> String { PythonRepr.renderString(value) }
    static func time(_ instant: Timestamp?) -> String { instant.map { RFC3339.format(microseconds: $0) } ?? "" }

    static func nsLink(_ ns: Identifier) -> String { "/ui/namespace/" + CoordinateJSON.pathSegment(ns.octets) }
    static func specLink(_ ns: Identifier, _ spec: Identifier) -> String {
        nsLink(ns) + "/work_spec/" + CoordinateJSON.pathSegment(spec.octets)
    }
    static func unitLink(_ ns: Identifier, _ spec: Identifier, _ unit: Identifier) -> String {
        specLink(ns, spec) + "/work_unit/" + CoordinateJSON.pathSegment(unit.octets)
    }
    static func workerLink(_ ns: Identifier, _ worker: Identifier) -> String {
        nsLink(ns) + "/worker/" + CoordinateJSON.pathSegment(worker.octets)
    }

    /// A traceback for display: text as UTF-8 with replacement, other values with R(), at most 64 KiB.
    static func traceback(_ data: StoredValue) -> String {
        guard let value = data.decoded().mapValue?["traceback"] else { return "" }
        let text = value.stringOctets.map { String(decoding: $0, as: UTF8.self) } ?? repr(value)
        let limit = 64 * 1024
        return text.utf8.count <= limit ? text : String(decoding: Array(text.utf8.prefix(limit)), as: UTF8.self) + "…"
    }

    /// The most recently failed units (newest first) of some specs, as template rows.
    static func failures(
        _ tx: EngineTransaction, ns: Identifier, specs: [SpecRecord], limit: Int
    ) throws -> [[String: Any]] {
        var entries: [(SpecRecord, UnitRecord)] = []
        for spec in specs {
            entries += try tx.recentFailures(of: spec, limit: limit).map {
                (spec, $0)
            }
        }
        entries.sort { ($0.1.completionTime ?? 0, $0.1.key) > ($1.1.completionTime ?? 0, $1.1.key) }
        return try entries.prefix(limit).map { spec, unit in
            let worker = try tx.latestAttempt(ofUnit: unit)?.worker
            return [
                "spec": text(spec.name), "unit": text(unit.key), "key": repr(unit.key.value),
                "link": unitLink(ns, spec.name, unit.key), "worker": worker.map(text) ?? "",
                "completed": time(unit.completionTime), "traceback": traceback(unit.data),
            ]
        }
    }

    // MARK: - Pages

    private func home() async throws -> (String, String) {
        let namespaces = try await engine.perform(.read) { tx in try tx.namespaces().map(\.name) }
        let items: [[String: Any]] = namespaces.map {
            ["name": Self.text($0), "label": $0.isEmpty ? "(default)" : Self.text($0), "link": Self.nsLink($0)]
        }
        return ("Namespaces", render("home", ["namespaces": items, "empty": items.isEmpty]))
    }

    private func namespacePage(_ ns: Identifier) async throws -> (String, String) {
        let rates = throughput
        let page = try await engine.perform(.read) { tx -> PageContext? in
            guard try tx.namespace(ns, create: false) != nil else { return nil }
            let specs = try tx.listWorkSpecs(namespace: ns, start: nil, limit: nil).specs
            var rows: [[String: Any]] = []
            var totals = [Int](repeating: 0, count: 6)
            for spec in specs {
                let counts = try tx.unitCounts(of: spec)
                let archived = Int(spec.archivedFinished + spec.archivedFailed)
                let values = [counts.ready, counts.delayed, counts.pending, counts.finished, counts.failed, archived]
                for (index, value) in values.enumerated() { totals[index] += value }
                rows.append([
                    "name": Self.text(spec.name), "link": Self.specLink(ns, spec.name),
                    "cells": Self.countCells(values), "state": spec.effective.paused ? "paused" : "runnable",
                    "paused": spec.effective.paused,
                    "rate": rates.rate(specID: spec.id).map { String(format: "%.1f", $0) } ?? "–",
                ])
            }
            let workers = try tx.liveWorkers(namespace: ns).map { worker -> [String: Any] in
                let held = try tx.childHeldCount(namespace: ns, worker: worker.id)
                return [
                    "id": Self.text(worker.id), "link": Self.workerLink(ns, worker.id),
                    "mode": Self.repr(worker.mode.decoded()), "parent": worker.parent.map(Self.text) ?? "",
                    "heard": String(format: "%.0f", Time.seconds(tx.now - worker.lastHeartbeat)),
                    "expires": Self.time(worker.expiration), "held": held,
                ]
            }
            return PageContext([
                "namespace": Self.text(ns), "label": ns.isEmpty ? "(default)" : Self.text(ns), "specs": rows,
                "totals": Self.countCells(totals), "workers": workers, "noWorkers": workers.isEmpty,
                "failures": try Self.failures(tx, ns: ns, specs: specs, limit: 50),
                "link": Self.nsLink(ns),
            ])
        }
        throughput.sample(engine.statistics)
        guard let page = page?.values else { throw PageError.notFound("No such namespace.") }
        return ("Namespace \(page["label"] as? String ?? "")", render("namespace", page))
    }

    static func countCells(_ values: [Int]) -> [[String: Any]] {
        zip(["available", "delayed", "pending", "finished", "failed", "archived"], values).map {
            ["status": $0, "count": $1, "alert": $0 == "failed" && $1 > 0]
        }
    }

    private func specPage(
        _ ns: Identifier, _ name: Identifier, query: QueryParameters, actions: Bool
    ) async throws
        -> (String, String)
    {
        var selected: Set<UnitBucket>?
        if let status = query.first("status"), !status.isEmpty, status != "any" {
            guard let bucket = UnitBucket.allCases.first(where: { $0.name == status }) else {
                throw PageError.badRequest("Unknown status \(status).")
            }
            selected = [bucket]
        }
        let buckets = selected
        let previous = try query.first("previous").flatMap { $0.isEmpty ? nil : $0 }.map(Self.name)
        let limit = max(1, min(query.first("limit").flatMap(Int.init) ?? 50, 10_000))
        let filter = query.first("status") ?? ""
        let page = try await engine.perform(.read) { tx -> PageContext? in
            guard let spec = try tx.spec(namespace: ns, named: name) else { return nil }
            let counts = try tx.unitCounts(of: spec)
            let units =
                try tx.queryUnits(
                    namespace: ns, spec: name, UnitQuery(buckets: buckets, previous: previous, limit: limit + 1)) ?? []
            let rows = try units.prefix(limit).map { unit -> [String: Any] in
                let bucket = unit.bucket(at: tx.now)
                let latest = [.pending, .finished, .failed].contains(bucket) ? try tx.latestAttempt(ofUnit: unit) : nil
                let expiration =
                    bucket == .pending
                    ? unit.leaseDeadline : (bucket == .ready || bucket == .delayed ? nil : unit.completionTime)
                var row: [String: Any] = [
                    "name": Self.text(unit.key), "key": Self.repr(unit.key.value),
                    "link": Self.unitLink(ns, name, unit.key),
                    "status": bucket.name, "priority": PythonRepr.formatFloat(unit.priority),
                    "worker": latest.map { Self.text($0.worker) } ?? "", "expiration": Self.time(expiration),
                ]
                if actions {
                    row["priorityLink"] =
                        Self.specLink(ns, name) + "/priority?unit=" + CoordinateJSON.pathSegment(unit.key.octets)
                }
                return row
            }
            var next: String?
            if units.count > limit, let last = units.prefix(limit).last {
                var components = ["previous=" + CoordinateJSON.pathSegment(last.key.octets), "limit=\(limit)"]
                if !filter.isEmpty { components.insert("status=" + filter, at: 0) }
                next = Self.specLink(ns, name) + "?" + components.joined(separator: "&")
            }
            let fields = spec.effective
            let control: [[String: Any]] = [
                ["field": "state", "value": fields.paused ? "paused" : "runnable"],
                ["field": "priority", "value": String(fields.priority)],
                ["field": "weight", "value": String(fields.weight)],
                ["field": "continuous", "value": fields.continuous ? "yes" : "no"],
                [
                    "field": "interval",
                    "value": fields.interval.map { PythonRepr.formatFloat(Time.seconds($0)) + " s" } ?? "none",
                ],
                ["field": "max_running", "value": fields.maxRunning.map(String.init) ?? "unlimited"],
                ["field": "max_getwork", "value": fields.maxGetwork.map(String.init) ?? "unlimited"],
                ["field": "max_retries", "value": fields.maxRetries.map(String.init) ?? "unlimited"],
                ["field": "then", "value": fields.then.map(Self.text) ?? "none"],
                ["field": "runtime", "value": String(decoding: fields.runtime, as: UTF8.self)],
            ]
            let filters: [[String: Any]] = ["any", "available", "delayed", "pending", "finished", "failed"].map {
                [
                    "status": $0, "link": Self.specLink(ns, name) + ($0 == "any" ? "" : "?status=" + $0),
                    "current": $0 == (filter.isEmpty ? "any" : filter),
                ]
            }
            var context: [String: Any] = [
                "namespace": Self.label(ns), "nsLink": Self.nsLink(ns), "spec": Self.text(name),
                "data": Display.pretty(spec.data.decoded()), "control": control,
                "cells": Self.countCells([
                    counts.ready, counts.delayed, counts.pending, counts.finished, counts.failed,
                    Int(spec.archivedFinished + spec.archivedFailed),
                ]),
                "units": rows, "noUnits": rows.isEmpty, "filters": filters,
                "failures": try Self.failures(tx, ns: ns, specs: [spec], limit: 50),
            ]
            if let next { context["next"] = next }
            if actions {
                context["actions"] =
                    [
                        "link": Self.specLink(ns, name), "paused": fields.paused, "failed": counts.failed,
                    ] as [String: Any]
            }
            return PageContext(context)
        }
        guard let page = page?.values else { throw PageError.notFound("No such work spec.") }
        return ("Work spec \(Self.text(name))", render("spec", page))
    }

    private func unitPage(_ ns: Identifier, _ specName: Identifier, _ key: Identifier) async throws -> (String, String)
    {
        let page = try await engine.perform(.read) { tx -> PageContext? in
            guard let unit = try tx.workUnit(namespace: ns, spec: specName, key: key) else { return nil }
            let attempts = try tx.attempts(of: unit).map { attempt -> [String: Any] in
                [
                    "id": String(attempt.id), "worker": Self.text(attempt.worker),
                    "workerLink": Self.workerLink(ns, attempt.worker),
                    "status": attempt.status.name, "start": Self.time(attempt.startTime),
                    "expiration": Self.time(attempt.expirationTime), "end": Self.time(attempt.endTime),
                    "traceback": Self.traceback(attempt.data),
                ]
            }
            return PageContext([
                "namespace": Self.label(ns), "nsLink": Self.nsLink(ns), "spec": Self.text(specName),
                "specLink": Self.specLink(ns, specName), "unit": Self.text(key), "key": Self.repr(unit.key.value),
                "status": unit.bucket(at: tx.now).name, "priority": PythonRepr.formatFloat(unit.priority),
                "notBefore": Self.time(unit.notBefore), "data": Display.pretty(unit.data.decoded()),
                "traceback": Self.traceback(unit.data), "attempts": attempts.reversed() as [[String: Any]],
                "noAttempts": attempts.isEmpty,
            ])
        }
        guard let page = page?.values else { throw PageError.notFound("No such work unit.") }
        return ("Work unit \(page["key"] as? String ?? "")", render("unit", page))
    }

    private func workerPage(_ ns: Identifier, _ id: Identifier) async throws -> (String, String) {
        let page = try await engine.perform(.read) { tx -> PageContext? in
            guard let worker = try tx.worker(namespace: ns, id: id, create: false) else { return nil }
            let units = try tx.heldUnitsOf(namespace: ns, worker: id).map { entry -> [String: Any] in
                [
                    "spec": Self.text(entry.spec.name), "key": Self.repr(entry.unit.key.value),
                    "link": Self.unitLink(ns, entry.spec.name, entry.unit.key), "expires": Self.time(entry.expires),
                ]
            }
            let children = try tx.liveWorkers(namespace: ns).filter { $0.parent == id }.map {
                ["id": Self.text($0.id), "link": Self.workerLink(ns, $0.id)]
            }
            return PageContext([
                "namespace": Self.label(ns), "nsLink": Self.nsLink(ns), "worker": Self.text(id),
                "live": worker.isLive(at: tx.now), "mode": Self.repr(worker.mode.decoded()),
                "parent": worker.parent.map(Self.text) ?? "",
                "parentLink": worker.parent.map { Self.workerLink(ns, $0) } ?? "",
                "firstSeen": Self.time(worker.firstSeen), "heard": Self.time(worker.lastHeartbeat),
                "expires": Self.time(worker.expiration), "data": Display.pretty(worker.data.decoded()),
                "units": units, "noUnits": units.isEmpty, "children": children,
            ])
        }
        guard let page = page?.values else { throw PageError.notFound("No such worker.") }
        return ("Worker \(Self.text(id))", render("worker", page))
    }
}

extension EngineTransaction {
    /// How many units a worker holds (semantics.md §7.5).
    func childHeldCount(namespace name: Identifier, worker: Identifier) throws -> Int {
        try heldUnitsOf(namespace: name, worker: worker).count
    }
}

/// Pretty text of a value for `<pre>` blocks: JSON-like, strings of either kind as strings.
enum Display {
    static func pretty(_ value: CBORValue) -> String {
        readable(value).prettyPrinted()
    }

    static func readable(_ value: CBORValue) -> JSONValue {
        switch value {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .unsigned(let n): return n <= UInt64(Int64.max) ? .int(Int64(n)) : .float(Double(n))
        case .negative(let n): return n <= UInt64(Int64.max) ? .int(-1 - Int64(n)) : .float(-1 - Double(n))
        case .float(let x): return .float(x)
        case .bytes(let octets), .text(let octets): return .string(String(decoding: octets, as: UTF8.self))
        case .array(let items), .tuple(let items): return .array(items.map(readable))
        case .map(let map):
            return .object(
                map.pairs.map { pair in
                    (
                        pair.key.stringOctets.map { String(decoding: $0, as: UTF8.self) }
                            ?? PythonRepr.renderString(pair.key), readable(pair.value)
                    )
                })
        case .uuid(let uuid): return .string(uuid.canonicalString)
        case .tagged, .simple: return .string(PythonRepr.renderString(value))
        case .encoded(let item): return readable(item.decoded())
        }
    }
}

/// Finished and failed attempts per spec sampled over time, for the "per minute" column.
final class ThroughputSampler: Sendable {
    private let samples = Locked<[(at: ContinuousClock.Instant, done: [Int64: Int])]>([])
    static let window: Duration = .seconds(300)

    /// Records the current totals (at most one sample every 5 s; samples older than the window are dropped).
    func sample(_ statistics: EngineStatistics) {
        let now = ContinuousClock.now
        samples.withLock { samples in
            if let last = samples.last, now - last.at < .seconds(5) { return }
            var done: [Int64: Int] = [:]
            for (spec, counts) in statistics.attemptOutcomes { done[spec] = counts[.finished] + counts[.failed] }
            samples.append((now, done))
            samples.removeAll { now - $0.at > Self.window }
        }
    }

    /// Completed attempts per minute over the sampled window; nil until two samples exist.
    func rate(specID: Int64) -> Double? {
        samples.withLock { samples in
            guard let first = samples.first, let last = samples.last, last.at > first.at else { return nil }
            let elapsed = last.at - first.at
            let minutes = (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) / 60
            return Double((last.done[specID] ?? 0) - (first.done[specID] ?? 0)) / minutes
        }
    }
}

/// A template context built inside a storage read and handed, once, to the rendering code.
struct PageContext: @unchecked Sendable {
    // @unchecked Sendable: the dictionary holds only strings, numbers, booleans and arrays and dictionaries of
    // them, built by the closure that returns this value and never mutated afterwards.
    let values: [String: Any]
    init(_ values: [String: Any]) { self.values = values }
}
