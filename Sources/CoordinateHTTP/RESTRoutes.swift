import CBOR
import CoordinateEngine
import CoordinateJSON
import HTTPTypes
import Hummingbird
import NIOCore

/// The REST routes of rest-api.md §2–§3 over the engine.
struct RESTRoutes: Sendable {
    let engine: Engine
    let settings: HTTPSettings

    /// Most REST bodies are JSON; bulk requests take at most this many items.
    static let maxBatchItems = 10_000

    var routes: [Route] {
        let ns = "/namespace/{ns}"
        let spec = ns + "/work_spec/{spec}"
        let unit = spec + "/work_unit/{unit}"
        let attempt = ns + "/attempt/{id}"
        let alias = unit + "/attempt/{worker}/{start}"
        let worker = ns + "/worker/{worker}"
        var routes: [Route] = [
            Route("/", [.get: root]),
            Route("/summary", [.get: summaryAll]),
            Route("/namespace", [.get: listNamespaces, .post: createNamespace]),
            Route(ns, [.get: getNamespace, .delete: deleteNamespace]),
            Route(ns + "/summary", [.get: namespaceSummary]),
            Route(ns + "/work_spec", [.get: listSpecs, .post: postSpec]),
            Route(spec, [.get: getSpec, .put: putSpec, .delete: deleteSpec]),
            Route(spec + "/meta", [.get: getMeta, .put: putMeta]),
            Route(spec + "/counts", [.get: getCounts]),
            Route(spec + "/change", [.post: { try await changePriorities($0, adjust: false) }]),
            Route(spec + "/adjust", [.post: { try await changePriorities($0, adjust: true) }]),
            Route(spec + "/summary", [.get: specSummary]),
            Route(spec + "/add_work_units", [.post: bulkAdd]),
            Route(spec + "/update_work_units", [.post: bulkUpdate]),
            Route(spec + "/work_unit", [.get: listUnits, .delete: deleteUnits, .post: postUnit]),
            Route(unit, [.get: getUnit, .put: putUnit, .delete: deleteUnit]),
            Route(unit + "/attempts", [.get: unitAttempts]),
            Route(unit + "/num-attempts", [.get: unitAttemptCount]),
            Route(attempt, [.get: { try await getAttempt($0, alias: false) }]),
            Route(alias, [.get: { try await getAttempt($0, alias: true) }]),
            Route(ns + "/worker", [.get: listWorkers]),
            Route(worker, [.get: getWorker, .put: putWorker, .delete: deleteWorker]),
            Route(worker + "/request_attempts", [.post: requestAttempts]),
            Route(worker + "/make_attempt", [.post: makeAttempt]),
            Route(worker + "/active_attempts", [.get: { try await workerAttempts($0, which: .active) }]),
            Route(worker + "/all_attempts", [.get: { try await workerAttempts($0, which: .all) }]),
            Route(worker + "/child_attempts", [.get: { try await workerAttempts($0, which: .children) }]),
            Route(ns + "/lock", [.get: listLocks]),
            Route(ns + "/export", kind: [], [.get: exportNamespace]),
            Route(ns + "/import", kind: [.rest, .ndjsonBody], [.post: importNamespace]),
        ]
        let actions: [(String, @Sendable (RESTRequest) async throws -> Response)] = [
            ("renew", { try await attemptAction($0, name: "renew") }),
            ("expire", { try await attemptAction($0, name: "expire") }),
            ("finish", { try await attemptAction($0, name: "finish") }),
            ("fail", { try await attemptAction($0, name: "fail") }),
            ("retry", { try await attemptAction($0, name: "retry") }),
        ]
        for (name, handler) in actions {
            routes.append(Route(attempt + "/" + name, [.post: handler]))
            routes.append(Route(alias + "/" + name, [.post: handler]))
        }
        return routes
    }

    // MARK: - Helpers

    func read<T: Sendable>(_ body: @escaping @Sendable (inout EngineTransaction) throws -> T) async throws -> T {
        try await engine.perform(.read, body)
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (inout EngineTransaction) throws -> T) async throws -> T {
        try await engine.perform(.write, body)
    }

    func ok(
        _ request: RESTRequest, _ value: JSONValue, status: HTTPResponse.Status = .ok, location: String? = nil
    )
        -> Response
    {
        var response = HTTPAPI.json(value, status: status, type: request.responseType)
        if let location { response.headers[.location] = location }
        return response
    }

    func noContent() -> Response { Response(status: .noContent) }

    /// The unit query parameters `Q` (rest-api.md §3).
    func unitQuery(_ request: RESTRequest) throws -> UnitQuery {
        var query = UnitQuery()
        let names = request.query.all("name")
        if !names.isEmpty { query.names = try names.map(Self.queryName) }
        let statuses = request.query.all("status")
        if !statuses.isEmpty, !statuses.contains("any") {
            query.buckets = Set(
                try statuses.map { status in
                    guard let bucket = UnitBucket.allCases.first(where: { $0.name == status }) else {
                        throw RESTError.badRequest("unknown status \(status)")
                    }
                    return bucket
                })
        }
        if let previous = request.query.first("previous") { query.previous = try Self.queryName(previous) }
        if let limit = request.query.first("limit") {
            guard let value = Int(limit) else { throw RESTError.badRequest("limit must be an integer") }
            query.limit = value > 0 ? value : nil
        }
        return query
    }

    static func queryName(_ text: String) throws -> Identifier {
        guard let octets = CoordinateJSON.name(fromPathSegment: text) else {
            throw RESTError.badRequest("bad name encoding \(text)")
        }
        return Identifier(octets: octets, isText: true)
    }

    static func bool(_ text: String) throws -> Bool {
        switch text.lowercased() {
        case "1", "t", "y", "true", "on", "yes": return true
        case "0", "f", "n", "false", "off", "no": return false
        default: throw RESTError.badRequest("bad boolean \(text)")
        }
    }

    /// A name from a JSON object's `field`/`field_base64` members, stored as text.
    static func bodyName(_ object: JSONValue, field: String = "name") throws -> Identifier? {
        do {
            guard let octets = try CoordinateJSON.name(in: object, field: field) else { return nil }
            return Identifier(octets: octets, isText: true)
        } catch {
            throw RESTError.badRequest("\(error)")
        }
    }

    static func data(_ json: JSONValue?, field: String = "data") throws -> StoredValue? {
        guard let json, json != .null else { return nil }
        do {
            return StoredValue(encoding: try CoordinateJSON.data(from: json))
        } catch {
            throw RESTError.badRequest("\(field): \(error)")
        }
    }

    static func number(_ json: JSONValue?, _ field: String) throws -> Double? {
        guard let json, json != .null else { return nil }
        guard let value = json.doubleValue, value.isFinite else {
            throw RESTError.badRequest("\(field) must be a number")
        }
        return value
    }

    static func time(_ json: JSONValue?, _ field: String) throws -> Timestamp?? {
        guard let json else { return nil }
        if json == .null { return nil }
        guard let text = json.stringValue, let instant = RFC3339.parse(text) else {
            throw RESTError.badRequest("\(field) must be an RFC 3339 time")
        }
        return .some(instant == RFC3339.zeroTime ? nil : instant)
    }

    /// A JSON object body, or 400.
    static func object(_ json: JSONValue) throws -> JSONValue {
        guard case .object = json else { throw RESTError.badRequest("request body must be a JSON object") }
        return json
    }

    // MARK: - Discovery and namespaces

    func root(_ request: RESTRequest) async throws -> Response {
        ok(
            request,
            [
                "url": "/", "summary_url": "/summary", "namespaces_url": "/namespace",
                "namespace_url": "/namespace/{namespace}", "metrics_url": "/metrics", "health_url": "/healthz",
                "ui_url": "/ui",
            ])
    }

    func summaryAll(_ request: RESTRequest) async throws -> Response {
        ok(request, Rep.summary(try await read { tx in try tx.summary(namespace: nil) }))
    }

    func listNamespaces(_ request: RESTRequest) async throws -> Response {
        let names = try await read { tx in try tx.namespaces().map(\.name) }
        return ok(request, .object([("namespaces", .array(names.map(Rep.namespaceShort)))]))
    }

    func createNamespace(_ request: RESTRequest) async throws -> Response {
        let body = try Self.object(try request.json())
        guard let name = try Self.bodyName(body) else { throw RESTError.badRequest("namespace name required") }
        _ = try await write { tx in try tx.namespace(name, create: true) }
        return ok(request, Rep.namespace(name), status: .created, location: Rep.namespaceURL(name))
    }

    func getNamespace(_ request: RESTRequest) async throws -> Response {
        let name = try request.name("ns")
        if request.request.method == .head {
            guard try await read({ tx in try tx.namespace(name, create: false) }) != nil else {
                throw RESTError.notFound
            }
        } else {
            _ = try await write { tx in try tx.namespace(name, create: true) }
        }
        return ok(request, Rep.namespace(name))
    }

    func deleteNamespace(_ request: RESTRequest) async throws -> Response {
        let name = try request.name("ns")
        let keep = name == settings.cborNamespace
        _ = try await write { tx in try tx.deleteNamespace(name, keepRecord: keep) }
        return noContent()
    }

    func namespaceSummary(_ request: RESTRequest) async throws -> Response {
        let name = try request.name("ns")
        return ok(request, Rep.summary(try await read { tx in try tx.summary(namespace: name) }))
    }

    // MARK: - Work specs

    func listSpecs(_ request: RESTRequest) async throws -> Response {
        let ns = try request.name("ns")
        let specs = try await read { tx in try tx.listWorkSpecs(namespace: ns, start: nil, limit: nil).specs }
        return ok(request, .object([("work_specs", .array(specs.map { Rep.specShort(ns, $0) }))]))
    }

    func postSpec(_ request: RESTRequest) async throws -> Response {
        let ns = try request.name("ns")
        let body = try Self.object(try request.json())
        let data = try Self.specData(body["data"])
        let (created, spec) = try await write { tx -> (Bool, SpecRecord?) in
            let created = try tx.setWorkSpec(namespace: ns, data: data)
            let name = try SpecDerivation.name(of: data)
            return (created, try tx.spec(namespace: ns, named: name))
        }
        guard let spec else { throw RESTError(.internalServerError, "error", "spec vanished") }
        return ok(
            request, Rep.specShort(ns, spec), status: created ? .created : .ok, location: Rep.specURL(ns, spec.name))
    }

    static func specData(_ json: JSONValue?) throws -> CBORMap {
        guard let json, json != .null else {
            throw RESTError(.badRequest, "ErrNoWorkSpecName", "No 'name' key in work spec")
        }
        let value: CBORValue
        do {
            value = try CoordinateJSON.data(from: json)
        } catch {
            throw RESTError.badRequest("data: \(error)")
        }
        guard let map = value.mapValue else { throw RESTError.badRequest("work spec data must be a map") }
        return map
    }

    func specOr404(_ tx: EngineTransaction, _ ns: Identifier, _ name: Identifier) throws -> SpecRecord {
        guard let spec = try tx.spec(namespace: ns, named: name) else { throw RESTError.noSuchWorkSpec(name) }
        return spec
    }

    func getSpec(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let spec = try await read { tx in try specOr404(tx, ns, name) }
        return ok(request, Rep.spec(ns, spec))
    }

    func putSpec(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let body = try Self.object(try request.json(required: false))
        let given = body["data"].map { $0 != .null } ?? false
        let specData = given ? try Self.specData(body["data"]) : nil
        try await write { tx in
            let spec = try specOr404(tx, ns, name)
            if let specData { try tx.setWorkSpec(namespace: ns, data: specData, requireName: spec.name) }
        }
        return noContent()
    }

    func deleteSpec(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        try await write { tx in
            guard try tx.deleteWorkSpec(namespace: ns, named: name) else { throw RESTError.noSuchWorkSpec(name) }
        }
        return noContent()
    }

    func getMeta(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let withCounts = try request.query.first("counts").map(Self.bool) ?? false
        let (spec, counts) = try await read { tx -> (SpecRecord, UnitCounts?) in
            let spec = try specOr404(tx, ns, name)
            return (spec, withCounts ? try tx.countWorkUnits(namespace: ns, spec: name)?.counts : nil)
        }
        return ok(request, Rep.meta(spec, counts: counts))
    }

    func putMeta(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let body = try Self.object(try request.json(required: false))
        func integer(_ field: String) throws -> Int64? {
            guard let value = body[field], value != .null else { return nil }
            guard let number = value.intValue else { throw RESTError.badRequest("\(field) must be an integer") }
            return number
        }
        func flag(_ field: String) throws -> Bool? {
            guard let value = body[field], value != .null else { return nil }
            guard case .bool(let flag) = value else { throw RESTError.badRequest("\(field) must be a boolean") }
            return flag
        }
        var control = SpecControl()
        control.priority = try integer("priority")
        control.weight = try integer("weight")
        control.paused = try flag("paused")
        let continuous = try flag("continuous")
        if let interval = try integer("interval") {
            control.interval = .some(interval > 0 ? Double(interval) / 1e9 : nil)
        }
        if let next = try Self.time(body["next_continuous"], "next_continuous") { control.nextContinuous = .some(next) }
        if body["next_continuous"] == .null { control.nextContinuous = .some(nil) }
        if let value = try integer("max_running") { control.maxRunning = .some(value > 0 ? value : nil) }
        if let value = try integer("max_attempts_returned") { control.maxGetwork = .some(value > 0 ? value : nil) }
        if let value = try integer("max_retries") { control.maxRetries = .some(value > 0 ? value : nil) }
        let finalControl = control
        try await write { tx in
            let spec = try specOr404(tx, ns, name)
            var control = finalControl
            // `continuous` stays false without error when the spec cannot be continuous.
            if let continuous { control.continuous = continuous && spec.derived.canBeContinuous }
            _ = try tx.controlWorkSpec(namespace: ns, named: name, control)
        }
        return noContent()
    }

    func getCounts(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let counts = try await read { tx -> UnitCounts in
            guard let result = try tx.countWorkUnits(namespace: ns, spec: name) else {
                throw RESTError.noSuchWorkSpec(name)
            }
            return result.counts
        }
        return ok(request, Rep.counts(counts))
    }

    func specSummary(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let records = try await read { tx -> [SummaryRecord] in
            _ = try specOr404(tx, ns, name)
            return try tx.summary(namespace: ns, spec: name)
        }
        return ok(request, Rep.summary(records))
    }

    func changePriorities(_ request: RESTRequest, adjust: Bool) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let query = try unitQuery(request)
        let body = try Self.object(try request.json())
        guard let value = try Self.number(body["meta"]?["priority"], "meta.priority") else {
            throw RESTError.badRequest("meta.priority required")
        }
        try await write { tx in
            guard try tx.changePriorities(namespace: ns, spec: name, query, value: value, adjust: adjust) else {
                throw RESTError.noSuchWorkSpec(name)
            }
        }
        return noContent()
    }

    // MARK: - Units

    /// One add item from a JSON object (rest-api.md §3.1): its `meta` is checked by the engine's item rules in
    /// its CBOR form; `meta.not_before` is REST's own.
    static func unitItem(_ json: JSONValue) throws(EngineError) -> UnitItem {
        guard case .object = json else { throw .invalidUnitItem(.notAList) }
        let key: Identifier
        do {
            guard let name = try bodyName(json) else { throw EngineError.invalidUnitItem(.keyNotString) }
            key = name
        } catch {
            throw .invalidUnitItem(.keyNotString)
        }
        let meta = json["meta"]
        var item: UnitItem
        do {
            item = try UnitItemParser.item(
                key: key, data: .emptyMap, meta: meta.map(CoordinateJSON.cbor(from:)), priority: nil)
        } catch {
            throw .invalidUnitItem(error)
        }
        if let value = meta?["not_before"], value != .null, let text = value.stringValue,
            let instant = RFC3339.parse(text), instant != RFC3339.zeroTime
        {
            item.notBefore = instant
        }
        do {
            item.data = try Self.data(json["data"]) ?? .emptyMap
        } catch {
            throw .invalidUnitItem(.dataNotReadable("\(error)"))
        }
        return item
    }

    func bulkAdd(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let body = try Self.object(try request.json())
        guard let list = body["work_units"]?.elements else { throw RESTError.badRequest("work_units must be a list") }
        guard list.count <= Self.maxBatchItems else {
            throw RESTError.badRequest("too many work units: \(list.count) > \(Self.maxBatchItems)")
        }
        var batch = UnitItemBatch(items: [], count: list.count)
        for json in list {
            do {
                batch.items.append(try Self.unitItem(json))
            } catch {
                guard case .invalidUnitItem(let problem) = error else { throw error }
                batch.problem = problem
                break
            }
        }
        let items = batch
        let outcome = try await write { tx in try tx.addWorkUnits(namespace: ns, spec: name, items) }
        switch outcome {
        case .noSuchSpec: throw RESTError.noSuchWorkSpec(name)
        case .added(let created, let reset):
            return ok(request, ["added": .int(Int64(created)), "reset": .int(Int64(reset))])
        }
    }

    func bulkUpdate(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let body = try Self.object(try request.json())
        guard let list = body["updates"]?.elements else { throw RESTError.badRequest("updates must be a list") }
        guard list.count <= Self.maxBatchItems else {
            throw RESTError.badRequest("too many updates: \(list.count) > \(Self.maxBatchItems)")
        }
        var items: [UnitUpdateItem] = []
        for json in list {
            guard case .object = json, let key = try Self.bodyName(json) else {
                throw RESTError.badRequest("every update needs a name")
            }
            var update = UnitUpdate()
            if let status = json["status"], status != .null {
                let codes = ["available": Int64(1), "pending": 3, "finished": 4, "failed": 5]
                guard let text = status.stringValue, let code = codes[text] else {
                    throw RESTError.badRequest("unknown status \(status.serialized())")
                }
                update.status = code
            }
            update.leaseSeconds = try Self.number(json["lease_seconds"], "lease_seconds")
            update.data = try Self.data(json["data"])
            if let worker = json["worker"], worker != .null {
                guard let text = worker.stringValue else { throw RESTError.badRequest("worker must be a string") }
                update.worker = Identifier(text: text)
            }
            items.append(
                UnitUpdateItem(key: key, update: update, priority: try Self.number(json["priority"], "priority")))
        }
        let finalItems = items
        let results = try await write { tx -> [String?] in
            guard let results = try tx.updateWorkUnits(namespace: ns, spec: name, finalItems) else {
                throw RESTError.noSuchWorkSpec(name)
            }
            return results
        }
        let entries: [JSONValue] = zip(items, results).map { item, message in
            var members = Rep.name(item.key)
            members.append(("ok", .bool(message == nil)))
            if let message { members.append(("message", .string(message))) }
            return .object(members)
        }
        return ok(request, .object([("results", .array(entries))]))
    }

    func listUnits(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let query = try unitQuery(request)
        let units = try await read { tx -> [UnitRecord] in
            guard let units = try tx.queryUnits(namespace: ns, spec: name, query) else {
                throw RESTError.noSuchWorkSpec(name)
            }
            return units
        }
        return ok(request, .object([("work_units", .array(units.map { Rep.unitShort(ns, name, $0) }))]))
    }

    func deleteUnits(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let query = try unitQuery(request)
        let deleted = try await write { tx -> Int in
            guard let count = try tx.deleteUnits(namespace: ns, spec: name, query) else {
                throw RESTError.noSuchWorkSpec(name)
            }
            return count
        }
        return ok(request, .object([("Deleted", .int(Int64(deleted)))]))
    }

    func postUnit(_ request: RESTRequest) async throws -> Response {
        let (ns, name) = (try request.name("ns"), try request.name("spec"))
        let item = try Self.unitItem(try request.json())
        let unit = try await write { tx -> UnitRecord in
            guard try tx.addWorkUnit(namespace: ns, spec: name, item) != nil,
                let unit = try tx.workUnit(namespace: ns, spec: name, key: item.key)
            else { throw RESTError.noSuchWorkSpec(name) }
            return unit
        }
        return ok(request, Rep.unitShort(ns, name, unit), status: .created, location: Rep.unitURL(ns, name, unit.key))
    }

    func unitOr404(
        _ tx: EngineTransaction, _ ns: Identifier, _ spec: Identifier, _ key: Identifier
    ) throws
        -> UnitRecord
    {
        _ = try specOr404(tx, ns, spec)
        guard let unit = try tx.workUnit(namespace: ns, spec: spec, key: key) else {
            throw RESTError.noSuchWorkUnit(key)
        }
        return unit
    }

    func getUnit(_ request: RESTRequest) async throws -> Response {
        let (ns, spec, key) = (try request.name("ns"), try request.name("spec"), try request.name("unit"))
        let json = try await read { tx -> JSONValue in
            let unit = try unitOr404(tx, ns, spec, key)
            return Rep.unit(ns, spec, unit, latest: try tx.latestAttempt(ofUnit: unit), now: tx.now)
        }
        return ok(request, json)
    }

    func putUnit(_ request: RESTRequest) async throws -> Response {
        let (ns, spec, key) = (try request.name("ns"), try request.name("spec"), try request.name("unit"))
        let body = try Self.object(try request.json(required: false))
        var put = UnitChange()
        if let meta = body["meta"], meta != .null {
            guard case .object = meta else { throw RESTError.badRequest("meta must be an object") }
            put.priority = try Self.number(meta["priority"], "meta.priority")
            if let notBefore = try Self.time(meta["not_before"], "meta.not_before") { put.notBefore = .some(notBefore) }
        }
        if let url = body["active_attempt_url"], url != .null {
            guard url.stringValue == "-" else { throw RESTError.badRequest("active_attempt_url may only be \"-\"") }
            put.clearActiveAttempt = true
        }
        let finalPut = put
        try await write { tx in
            _ = try unitOr404(tx, ns, spec, key)
            _ = try tx.changeWorkUnit(namespace: ns, spec: spec, key: key, finalPut)
        }
        return noContent()
    }

    func deleteUnit(_ request: RESTRequest) async throws -> Response {
        let (ns, spec, key) = (try request.name("ns"), try request.name("spec"), try request.name("unit"))
        try await write { tx in
            _ = try unitOr404(tx, ns, spec, key)
            _ = try tx.deleteWorkUnit(namespace: ns, spec: spec, key: key)
        }
        return noContent()
    }

    func unitAttempts(_ request: RESTRequest) async throws -> Response {
        let (ns, spec, key) = (try request.name("ns"), try request.name("spec"), try request.name("unit"))
        let (unit, attempts) = try await read { tx -> (UnitRecord, [AttemptRecord]) in
            let unit = try unitOr404(tx, ns, spec, key)
            return (unit, try tx.attempts(of: unit))
        }
        return ok(
            request,
            .object([("attempts", .array(attempts.map { Rep.attemptShort(ns, $0, spec: spec, unit: unit.key) }))]))
    }

    func unitAttemptCount(_ request: RESTRequest) async throws -> Response {
        let (ns, spec, key) = (try request.name("ns"), try request.name("spec"), try request.name("unit"))
        let count = try await read { tx in try tx.attempts(of: try unitOr404(tx, ns, spec, key)).count }
        return ok(request, .int(Int64(count)))
    }

    // MARK: - Attempts

    /// The attempt a request names: by id, or through the alias route.
    func attemptID(_ request: RESTRequest, _ tx: EngineTransaction) throws -> Int64 {
        let ns = try request.name("ns")
        if let id = request.parameters["id"] {
            guard let value = Int64(id) else { throw RESTError.noSuchAttempt }
            return value
        }
        let (spec, key, worker) = (try request.name("spec"), try request.name("unit"), try request.name("worker"))
        guard let segment = request.parameters["start"], let octets = CoordinateJSON.name(fromPathSegment: segment),
            let instant = RFC3339.parse(String(decoding: octets, as: UTF8.self))
        else { throw RESTError.noSuchAttempt }
        _ = try unitOr404(tx, ns, spec, key)
        guard
            let attempt = try tx.attempt(
                namespace: ns, spec: spec, key: key, worker: worker,
                startSecond: EngineTransaction.floorSeconds(instant))
        else { throw RESTError.noSuchAttempt }
        return attempt.id
    }

    func getAttempt(_ request: RESTRequest, alias: Bool) async throws -> Response {
        let ns = try request.name("ns")
        let json = try await read { tx -> JSONValue in
            let id = try attemptID(request, tx)
            guard let (attempt, unit, spec) = try tx.attempt(namespace: ns, id: id) else {
                throw try tx.attemptIsGone(id: id) ? RESTError.gone : RESTError.noSuchAttempt
            }
            return Rep.attempt(ns, attempt, spec: spec.name, unit: unit.key)
        }
        return ok(request, json)
    }

    func attemptAction(_ request: RESTRequest, name: String) async throws -> Response {
        let ns = try request.name("ns")
        let body = try Self.object(try request.json(required: false))
        let data = try Self.data(body["data"])
        let action: AttemptAction
        switch name {
        case "renew":
            let extend = try Self.number(body["extend_duration"], "extend_duration").map { Int64($0 / 1000) }
            action = .renew(extend: extend)
        case "expire": action = .expire
        case "finish": action = .finish
        case "fail": action = .fail
        default: action = .retry(delay: try Self.number(body["delay"], "delay").map { $0 / 1e9 })
        }
        let outcome = try await write { tx -> AttemptActionOutcome in
            let id = try attemptID(request, tx)
            let outcome = try tx.attemptAction(namespace: ns, id: id, action, data: data)
            if outcome == .noSuchAttempt, try tx.attemptIsGone(id: id) { throw RESTError.gone }
            return outcome
        }
        switch outcome {
        case .applied: return noContent()
        case .noSuchAttempt: throw RESTError.noSuchAttempt
        case .notPending: throw RESTError.notPending
        case .lostLease: throw RESTError.lostLease
        }
    }

    // MARK: - Workers

    func listWorkers(_ request: RESTRequest) async throws -> Response {
        let ns = try request.name("ns")
        let active = request.query.first("active") ?? "any"
        guard ["true", "false", "any"].contains(active) else {
            throw RESTError.badRequest("active must be true, false or any")
        }
        let previous = try request.query.first("previous").map(Self.queryName)
        let limit = try request.query.first("limit").map { text -> Int in
            guard let value = Int(text) else { throw RESTError.badRequest("limit must be an integer") }
            return value
        }
        let workers = try await read { tx -> [WorkerRecord] in
            var workers = try tx.allWorkers(namespace: ns)
            if active != "any" { workers = workers.filter { $0.isLive(at: tx.now) == (active == "true") } }
            if let previous { workers = workers.filter { $0.id > previous } }
            if let limit, limit > 0 { workers = Array(workers.prefix(limit)) }
            return workers
        }
        return ok(request, .object([("workers", .array(workers.map { Rep.workerShort(ns, $0) }))]))
    }

    func workerJSON(_ tx: EngineTransaction, _ ns: Identifier, _ worker: WorkerRecord) throws -> JSONValue {
        // Every child, live or not, as go-coordinate lists them (its client's SetParent registers a child inactive).
        let children = try tx.allWorkers(namespace: ns).filter { $0.parent == worker.id }
        return Rep.worker(ns, worker, children: children, now: tx.now)
    }

    func getWorker(_ request: RESTRequest) async throws -> Response {
        let (ns, id) = (try request.name("ns"), try request.name("worker"))
        let create = request.request.method != .head
        let body: @Sendable (inout EngineTransaction) throws -> JSONValue = { tx in
            guard let worker = try tx.worker(namespace: ns, id: id, create: create) else { throw RESTError.notFound }
            return try workerJSON(tx, ns, worker)
        }
        let json = create ? try await write(body) : try await read(body)
        return ok(request, json)
    }

    func putWorker(_ request: RESTRequest) async throws -> Response {
        let (ns, id) = (try request.name("ns"), try request.name("worker"))
        let body = try Self.object(try request.json(required: false))
        var update = WorkerUpdate()
        if let parent = body["parent"], parent != .null {
            guard let text = parent.stringValue else { throw RESTError.badRequest("parent must be a string") }
            update.parent = .some(text.isEmpty ? nil : Identifier(text: text))
        }
        if let active = body["active"], active != .null {
            guard case .bool(let flag) = active else { throw RESTError.badRequest("active must be a boolean") }
            update.active = flag
        }
        if let mode = body["mode"], mode != .null {
            guard let text = mode.stringValue else { throw RESTError.badRequest("mode must be a string") }
            update.mode = StoredValue(encoding: .text(Array(text.utf8)))
        }
        update.data = try Self.data(body["data"])
        if let expiration = try Self.time(body["expiration"], "expiration") { update.expiration = expiration }
        let finalUpdate = update
        try await write { tx in try tx.updateWorker(namespace: ns, id: id, finalUpdate) }
        return noContent()
    }

    func deleteWorker(_ request: RESTRequest) async throws -> Response {
        let (ns, id) = (try request.name("ns"), try request.name("worker"))
        try await write { tx in
            guard try tx.deleteWorker(namespace: ns, id: id) else { throw RESTError.notFound }
        }
        return noContent()
    }

    /// A `lifetime` in nanoseconds as a lease (semantics.md §8.1): 0 or absent → 900 s, clamped to 1 s … 1 day.
    static func lease(_ json: JSONValue?) throws -> Int64 {
        guard let nanoseconds = try number(json, "lifetime"), nanoseconds != 0 else { return defaultAttemptLease }
        let micros = Int64(min(max(nanoseconds / 1000, 1e6), 86400e6))
        return micros
    }

    func requestAttempts(_ request: RESTRequest) async throws -> Response {
        let (ns, id) = (try request.name("ns"), try request.name("worker"))
        let body = try Self.object(try request.json(required: false))
        let count = Int(try Self.number(body["number_of_work_units"], "number_of_work_units") ?? 1)
        let lease = try Self.lease(body["lifetime"])
        var filter = Scheduler.Filter()
        if let specs = body["work_specs"]?.elements, !specs.isEmpty {
            filter.specNames = Set(
                try specs.map { value in
                    guard let text = value.stringValue else { throw RESTError.badRequest("work_specs must be strings") }
                    return Identifier(text: text)
                })
        }
        if let runtimes = body["runtimes"]?.elements, !runtimes.isEmpty {
            filter.runtimes = try runtimes.map { value in
                guard let text = value.stringValue else { throw RESTError.badRequest("runtimes must be strings") }
                return Array(text.utf8)
            }
        }
        let request_ = WorkRequest(worker: id, count: max(1, count), lease: lease, filter: filter)
        let result = try await write { tx -> [(AttemptRecord, GrantedUnit)] in
            _ = try tx.worker(namespace: ns, id: id, create: true)
            let granted = try tx.getWork(namespace: ns, request_)
            return try granted.compactMap { entry in
                try tx.latestAttempt(ofUnit: entry.unit).map { ($0, entry) }
            }
        }
        guard let first = result.first else { return ok(request, .object([("attempts", .array([]))])) }
        return ok(
            request,
            .object([
                ("work_spec_url", .string(Rep.specURL(ns, first.1.spec.name))),
                (
                    "attempts",
                    .array(result.map { Rep.attempt(ns, $0.0, spec: $0.1.spec.name, unit: $0.1.unit.key) })
                ),
            ]))
    }

    func makeAttempt(_ request: RESTRequest) async throws -> Response {
        let (ns, id) = (try request.name("ns"), try request.name("worker"))
        let body = try Self.object(try request.json())
        guard let specText = body["work_spec"]?.stringValue else { throw RESTError.badRequest("work_spec required") }
        let spec = Identifier(text: specText)
        guard let key = try Self.bodyName(body, field: "work_unit") else {
            throw RESTError.badRequest("work_unit required")
        }
        let lease = try Self.lease(body["lifetime"])
        let attempt = try await write { tx -> AttemptRecord in
            _ = try unitOr404(tx, ns, spec, key)
            guard let attempt = try tx.makeAttempt(namespace: ns, spec: spec, key: key, worker: id, lease: lease) else {
                throw RESTError.noSuchWorkUnit(key)
            }
            return attempt
        }
        return ok(request, Rep.attempt(ns, attempt, spec: spec, unit: key))
    }

    enum AttemptSet {
        case active, all, children
    }

    func workerAttempts(_ request: RESTRequest, which: AttemptSet) async throws -> Response {
        let (ns, id) = (try request.name("ns"), try request.name("worker"))
        let entries = try await read { tx -> [JSONValue] in
            let attempts: [AttemptRecord]
            switch which {
            case .active: attempts = try tx.attempts(namespace: ns, worker: id, statuses: [.pending])
            case .all: attempts = try tx.attempts(namespace: ns, worker: id, statuses: nil)
            case .children: attempts = try tx.childAttempts(namespace: ns, parent: id)
            }
            return try attempts.compactMap { attempt in
                guard let (unit, spec) = try tx.unitAndSpec(of: attempt) else { return nil }
                return Rep.attempt(ns, attempt, spec: spec.name, unit: unit.key)
            }
        }
        return ok(request, .object([("attempts", .array(entries))]))
    }

    // MARK: - Locks

    func listLocks(_ request: RESTRequest) async throws -> Response {
        let ns = try request.name("ns")
        let locks = try await read { tx in try tx.listLocks(namespace: ns, prefix: nil) }
        return ok(request, .object([("locks", .array(locks.map(Rep.lock)))]))
    }
}

extension RFC3339 {
    /// `0001-01-01T00:00:00Z`, which means "none" on input (rest-api.md §1.2).
    static let zeroTime: Int64 = -62_135_596_800_000_000
}
