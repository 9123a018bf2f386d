import CBOR
import CoordinateConfig
import NIOCore
import NIOPosix

/// A client of `coordinated` over CBOR-RPC, mirroring the Python `TaskMaster` API.
///
/// One client holds one connection, opened by the first call. Calls from concurrent tasks are pipelined on it
/// and answered in order; a connection failure is retried with backoff by resending the identical requests
/// (wire-protocol.md §12), so every call is at-least-once.
///
/// ```swift
/// let client = CoordinateClient(settings: ClientSettings(address: "127.0.0.1:5932"))
/// try await client.setWorkSpec(["name": "resize", "min_gb": 1])
/// try await client.addWorkUnits("resize", [WorkUnitSubmission(key: "photo-1", data: ["w": 640])])
/// if let unit = try await client.getWork(workerID: "w1").first {
///     try await unit.finish()
/// }
/// ```
public final class CoordinateClient: Sendable {
    /// The settings the client was created with.
    public let settings: ClientSettings
    private let connection: PipelinedConnection

    /// A client for the daemon(s) named in `settings`, on an event loop of `eventLoopGroup`.
    public init(
        settings: ClientSettings = ClientSettings(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.settings = settings
        self.connection = PipelinedConnection(settings: settings, eventLoop: eventLoopGroup.next())
    }

    /// A client configured from a YAML configuration file (`coordinate:` block, client-side keys).
    public convenience init(configFile: String) throws(ConfigurationError) {
        var warnings: [String] = []
        self.init(settings: try ClientSettings(configFile: configFile, warnings: &warnings))
    }

    /// Calls any method with positional parameters and returns its raw `result`. Error responses throw
    /// ``CoordinateClientError/server(message:)``.
    public func call(_ method: String, _ params: [CBORValue] = []) async throws -> CBORValue {
        try await connection.call(method: method, params: .array(params))
    }

    /// Closes the connection. Outstanding calls fail; the next call reconnects.
    public func close() async {
        await connection.close()
    }

    // MARK: - Work specs

    /// Creates or replaces a work spec. The map must have a string `name`.
    public func setWorkSpec(_ spec: CBORMap) async throws {
        try expectSuccess("set_work_spec", try await call("set_work_spec", [.map(spec)]))
    }

    /// The stored data of a work spec, or `nil` if there is none.
    public func workSpec(_ name: String) async throws -> CBORMap? {
        let result = try await call("get_work_spec", [.text(name)])
        if result.isNull { return nil }
        guard let map = result.mapValue else { throw unexpected("get_work_spec", result) }
        return map
    }

    /// One page of work specs in name order, starting at `start`.
    public func workSpecs(start: CBORValue? = nil, limit: Int? = nil) async throws -> WorkSpecPage {
        var options = CBORMap()
        if let start { options.append(.text("start"), start) }
        if let limit { options.append(.text("limit"), .int(limit)) }
        let (specs, next) = try pair("list_work_specs", try await call("list_work_specs", [.map(options)]))
        guard let list = specs.listElements else { throw unexpected("list_work_specs", specs) }
        return WorkSpecPage(specs: list.compactMap(\.mapValue), next: next.nonNull)
    }

    /// Every work spec, fetched page by page.
    public func allWorkSpecs(pageSize: Int = 1000) async throws -> [CBORMap] {
        var all: [CBORMap] = []
        var start: CBORValue?
        repeat {
            let page = try await workSpecs(start: start, limit: pageSize)
            all += page.specs
            start = page.next
        } while start != nil
        return all
    }

    /// Deletes a work spec with all its units.
    public func deleteWorkSpec(_ name: String) async throws {
        try expectSuccess("del_work_spec", try await call("del_work_spec", [.text(name)]), spec: name)
    }

    /// Applies control overrides (`status`, `weight`, `continuous`, `interval`, `max_running`, `priority`,
    /// `max_getwork`, `max_retries`) until the spec is next set.
    public func controlWorkSpec(_ name: String, _ options: CBORMap) async throws {
        try expectSuccess(
            "control_work_spec", try await call("control_work_spec", [.text(name), .map(options)]), spec: name)
    }

    /// Stops handing out the spec's units.
    public func pauseWorkSpec(_ name: String) async throws {
        try await controlWorkSpec(name, CBORMap([(.text("status"), .int(2))]))
    }

    /// Hands out the spec's units again.
    public func resumeWorkSpec(_ name: String) async throws {
        try await controlWorkSpec(name, CBORMap([(.text("status"), .int(1))]))
    }

    /// The spec's effective control fields.
    public func workSpecMeta(_ name: String) async throws -> WorkSpecMeta {
        let (meta, message) = try pair("get_work_spec_meta", try await call("get_work_spec_meta", [.text(name)]))
        guard let map = meta.mapValue else {
            throw failure(message, spec: name, method: "get_work_spec_meta")
        }
        return WorkSpecMeta(
            paused: map["status"]?.int64Value == 2, continuous: map["continuous"]?.isTruthy ?? false,
            maxRunning: map["max_running"]?.int64Value.map(Int.init), weight: Int(map["weight"]?.int64Value ?? 0),
            interval: map["interval"]?.doubleValue)
    }

    /// Deletes every work spec of the namespace; returns how many there were.
    @discardableResult
    public func clear() async throws -> Int {
        let result = try await call("clear")
        guard let count = result.int64Value else { throw unexpected("clear", result) }
        return Int(count)
    }

    // MARK: - Work units

    /// Adds units (or resets existing ones with the same keys), atomically.
    public func addWorkUnits(_ spec: String, _ units: [WorkUnitSubmission]) async throws {
        try expectSuccess(
            "add_work_units", try await call("add_work_units", [.text(spec), .array(units.map(\.item))]), spec: spec)
    }

    /// Lists units: exactly `keys` when given; otherwise those in `states` (priority order) or all (key order),
    /// from `start`, at most `limit` (server default 1000, at most 10 000).
    public func workUnits(
        _ spec: String, keys: [CBORValue]? = nil, states: [WorkUnitStatus]? = nil, start: CBORValue? = nil,
        limit: Int? = nil
    ) async throws -> [WorkUnitEntry] {
        var options = CBORMap()
        if let keys { options.append(.text("work_unit_keys"), .array(keys)) }
        if let states { options.append(.text("state"), .array(states.map { .int($0.rawValue) })) }
        if let start { options.append(.text("start"), start) }
        if let limit { options.append(.text("limit"), .int(limit)) }
        let (list, message) = try pair(
            "get_work_units", try await call("get_work_units", [.text(spec), .map(options)]))
        guard let items = list.listElements else { throw failure(message, spec: spec, method: "get_work_units") }
        return try items.map { item in
            guard let parts = item.listElements, parts.count == 2 else { throw unexpected("get_work_units", item) }
            return WorkUnitEntry(key: parts[0], data: parts[1].nonNull)
        }
    }

    /// Unit counts by status (archived units included); statuses with no units are absent.
    public func countWorkUnits(_ spec: String) async throws -> [WorkUnitStatus: Int] {
        let (counts, message) = try pair(
            "count_work_units", try await call("count_work_units", [.text(spec)]))
        guard let map = counts.mapValue else { throw failure(message, spec: spec, method: "count_work_units") }
        var result: [WorkUnitStatus: Int] = [:]
        for pair in map.pairs {
            if let code = pair.key.int64Value, let status = WorkUnitStatus(rawValue: Int(code)),
                let count = pair.value.int64Value
            {
                result[status] = Int(count)
            }
        }
        return result
    }

    /// Status of each requested unit, in order; `nil` for keys that do not exist.
    public func workUnitStatus(_ spec: String, keys: [CBORValue]) async throws -> [WorkUnitStatusReport?] {
        try await workUnitStatus(.text(spec), keys: keys)
    }

    /// Status of each requested unit of a spec named by its stored value (which may be a byte string).
    public func workUnitStatus(_ spec: CBORValue, keys: [CBORValue]) async throws -> [WorkUnitStatusReport?] {
        let (list, message) = try pair(
            "get_work_unit_status", try await call("get_work_unit_status", [spec, .array(keys)]))
        guard let items = list.listElements else {
            throw failure(message, spec: spec.stringValue, method: "get_work_unit_status")
        }
        return try items.map { item in
            if item.isNull { return nil }
            guard let map = item.mapValue, let code = map["status"]?.int64Value,
                let status = WorkUnitStatus(rawValue: Int(code))
            else { throw unexpected("get_work_unit_status", item) }
            return WorkUnitStatusReport(
                status: status, workerID: map["worker_id"], expiration: map["expiration"]?.doubleValue,
                traceback: map["traceback"])
        }
    }

    /// Sets the priority of the listed units (any state; unknown keys ignored).
    public func prioritizeWorkUnits(_ spec: String, keys: [CBORValue], priority: Double) async throws {
        let options = CBORMap([
            (.text("work_unit_keys"), .array(keys)), (.text("priority"), WorkUnitSubmission.number(priority)),
        ])
        try expectSuccess(
            "prioritize_work_units", try await call("prioritize_work_units", [.text(spec), .map(options)]), spec: spec)
    }

    /// Adds `adjustment` to the priority of the listed units.
    public func adjustPriority(_ spec: String, keys: [CBORValue], by adjustment: Double) async throws {
        let options = CBORMap([
            (.text("work_unit_keys"), .array(keys)), (.text("adjustment"), WorkUnitSubmission.number(adjustment)),
        ])
        try expectSuccess(
            "prioritize_work_units", try await call("prioritize_work_units", [.text(spec), .map(options)]), spec: spec)
    }

    /// Deletes the listed units (only those in `state`, when given), or every unit in `state` when `keys` is
    /// `nil`. Returns how many were deleted.
    @discardableResult
    public func deleteWorkUnits(
        _ spec: String, keys: [CBORValue]? = nil, state: WorkUnitStatus? = nil
    ) async throws
        -> Int
    {
        var options = CBORMap()
        if let keys { options.append(.text("work_unit_keys"), .array(keys)) }
        if let state { options.append(.text("state"), .int(state.rawValue)) }
        return try await deleteWorkUnits(spec, options: options)
    }

    /// Deletes every unit of the spec (and forgets archived counts). Returns how many there were.
    @discardableResult
    public func deleteAllWorkUnits(_ spec: String) async throws -> Int {
        try await deleteWorkUnits(spec, options: CBORMap([(.text("all"), .bool(true))]))
    }

    private func deleteWorkUnits(_ spec: String, options: CBORMap) async throws -> Int {
        let (count, message) = try pair(
            "del_work_units", try await call("del_work_units", [.text(spec), .map(options)]))
        if let message = message.stringValue { throw classify(message, spec: spec) }
        guard let deleted = count.int64Value else { throw unexpected("del_work_units", count) }
        return Int(deleted)
    }

    /// Returns the units to the queue whatever their state (as the Python client's `retry` does).
    public func retry(_ spec: String, keys: [CBORValue]) async throws {
        for key in keys {
            try await updateWorkUnit(spec, key: key, status: .available, leaseSeconds: 0)
        }
    }

    /// The general unit update (`update_work_unit`): a status change, a lease renewal, new data.
    ///
    /// Throws ``CoordinateClientError/lostLease(_:)`` when a renewal finds the unit no longer pending.
    public func updateWorkUnit(
        _ spec: CBORValue, key: CBORValue, status: WorkUnitStatus? = nil, leaseSeconds: Double? = nil,
        data: CBORValue? = nil, workerID: String? = nil
    ) async throws {
        var options = CBORMap()
        if let leaseSeconds { options.append(.text("lease_time"), WorkUnitSubmission.number(leaseSeconds)) }
        if let status { options.append(.text("status"), .int(status.rawValue)) }
        if let data { options.append(.text("data"), data) }
        if let workerID { options.append(.text("worker_id"), .text(workerID)) }
        let result = try await call("update_work_unit", [spec, key, .map(options)])
        try expectSuccess("update_work_unit", result, spec: spec.stringValue ?? "")
    }

    /// Convenience for a spec named by a Swift string.
    public func updateWorkUnit(
        _ spec: String, key: CBORValue, status: WorkUnitStatus? = nil, leaseSeconds: Double? = nil,
        data: CBORValue? = nil, workerID: String? = nil
    ) async throws {
        try await updateWorkUnit(
            .text(spec), key: key, status: status, leaseSeconds: leaseSeconds, data: data, workerID: workerID)
    }

    // MARK: - Getting work

    /// Asks for up to `maxJobs` units (all from one spec, chosen by the scheduler) and leases them to
    /// `workerID` for `leaseSeconds` (default `default_lifetime`). Empty when there is no work.
    public func getWork(
        workerID: String, specNames: [String]? = nil, maxJobs: Int = 1, leaseSeconds: Double? = nil
    ) async throws -> [WorkUnit] {
        let lease = leaseSeconds ?? settings.defaultLifetime
        var options = CBORMap([(.text("lease_time"), WorkUnitSubmission.number(lease))])
        if maxJobs != 1 { options.append(.text("max_jobs"), .int(maxJobs)) }
        if let specNames { options.append(.text("work_spec_names"), .array(specNames.map { .text($0) })) }
        let (work, _) = try pair("get_work", try await call("get_work", [.text(workerID), .map(options)]))
        guard let elements = work.listElements else { throw unexpected("get_work", work) }
        let triples: [[CBORValue]]
        if maxJobs == 1 {
            guard elements.count == 3 else { throw unexpected("get_work", work) }
            triples = elements[0].isNull ? [] : [elements]
        } else {
            triples = try elements.map { element in
                guard let triple = element.listElements, triple.count == 3 else { throw unexpected("get_work", work) }
                return triple
            }
        }
        return triples.map {
            WorkUnit(client: self, specName: $0[0], key: $0[1], data: $0[2], workerID: workerID, leaseSeconds: lease)
        }
    }

    // MARK: - Workers

    /// Registers or refreshes a worker for `lifetime` seconds. Returns the server's message, if any.
    @discardableResult
    public func workerHeartbeat(
        workerID: String, mode: CBORValue = .null, lifetime: Double, environment: CBORValue = .map(CBORMap()),
        parent: String? = nil
    ) async throws -> String? {
        let (_, message) = try pair(
            "worker_heartbeat",
            try await call(
                "worker_heartbeat",
                [
                    .text(workerID), mode, WorkUnitSubmission.number(lifetime), environment,
                    parent.map { .text($0) } ?? .null,
                ]))
        return message.stringValue
    }

    /// Marks a worker inactive. Returns whether a live worker with that id existed.
    @discardableResult
    public func workerUnregister(workerID: String) async throws -> Bool {
        let (ok, _) = try pair("worker_unregister", try await call("worker_unregister", [.text(workerID)]))
        return ok.isTruthy
    }

    /// The live children of `parent` with the units each holds, in id order.
    public func childWorkUnits(parent: String) async throws -> [ChildWorker] {
        let (children, _) = try pair(
            "get_child_work_units", try await call("get_child_work_units", [.text(parent)]))
        guard let map = children.mapValue else { throw unexpected("get_child_work_units", children) }
        return map.pairs.map { pair in
            let units = (pair.value.listElements ?? []).compactMap { item -> ChildWorkUnit? in
                guard let unit = item.mapValue else { return nil }
                return ChildWorkUnit(
                    specName: unit["work_spec_name"] ?? .null, key: unit["work_unit_key"] ?? .null,
                    data: unit["work_unit_data"] ?? .null,
                    workerID: unit["worker_id"]?.nonNull,
                    expires: unit["expires"]?.doubleValue)
            }
            return ChildWorker(workerID: pair.key, units: units)
        }
    }

    /// Live workers and their modes, in id order.
    public func workerModes() async throws -> [(workerID: CBORValue, mode: CBORValue)] {
        let (modes, _) = try pair("list_worker_modes", try await call("list_worker_modes"))
        guard let map = modes.mapValue else { throw unexpected("list_worker_modes", modes) }
        return map.pairs.map { ($0.key, $0.value) }
    }

    /// Number of live workers in each mode.
    public func modeCounts() async throws -> [(mode: CBORValue, count: Int)] {
        let (counts, _) = try pair("mode_counts", try await call("mode_counts"))
        guard let map = counts.mapValue else { throw unexpected("mode_counts", counts) }
        return map.pairs.map { ($0.key, Int($0.value.int64Value ?? 0)) }
    }

    /// The data of a live worker's latest heartbeat, or `nil` if no live worker has this id.
    public func workerInfo(workerID: String) async throws -> CBORValue? {
        let (info, _) = try pair("get_worker_info", try await call("get_worker_info", [.text(workerID)]))
        return info.nonNull
    }

    /// Counts of live workers.
    public func workerStats() async throws -> WorkerStats {
        let result = try await call("worker_stats")
        guard let map = result.mapValue else { throw unexpected("worker_stats", result) }
        return WorkerStats(
            workers: Int(map["num_workers"]?.int64Value ?? 0), expirable: Int(map["num_expirable"]?.int64Value ?? 0),
            parents: Int(map["num_children"]?.int64Value ?? 0))
    }

    // MARK: - Daemon

    /// The daemon's effective configuration (`{coordinate: {...}}`), secrets redacted.
    public func configuration() async throws -> CBORValue {
        try pair("get_config", try await call("get_config")).0
    }

    /// The daemon's clock, whole seconds since the epoch.
    public func now() async throws -> Int64 {
        let result = try await call("now")
        guard let seconds = result.int64Value else { throw unexpected("now", result) }
        return seconds
    }

    // MARK: - Locks

    /// Locks every path for `lockerID`, or none (all or nothing). `timeout` seconds, default 60.
    public func lock(lockerID: String, paths: [[CBORValue]], timeout: Int? = nil) async throws -> LockOutcome {
        try outcome("lock", try await call("lock", [.text(lockerID), timeout.map { .int($0) } ?? .null, paths.cbor]))
    }

    /// Locks each lockable path; returns the locked paths, `nil` where a path was not lockable.
    public func lockSome(lockerID: String, paths: [[CBORValue]], timeout: Int? = nil) async throws -> [[CBORValue]?] {
        let (locked, _) = try pair(
            "locksome", try await call("locksome", [.text(lockerID), timeout.map { .int($0) } ?? .null, paths.cbor]))
        guard let items = locked.listElements else { throw unexpected("locksome", locked) }
        return items.map { $0.nonNull?.listElements }
    }

    /// Extends every path's lock held by `lockerID` (all or nothing).
    public func renewLocks(lockerID: String, paths: [[CBORValue]], timeout: Int? = nil) async throws -> LockOutcome {
        try outcome("renew", try await call("renew", [.text(lockerID), timeout.map { .int($0) } ?? .null, paths.cbor]))
    }

    /// Releases every path's lock held by `lockerID` (all or nothing).
    public func unlock(lockerID: String, paths: [[CBORValue]]) async throws -> LockOutcome {
        try outcome("unlock", try await call("unlock", [.text(lockerID), paths.cbor]))
    }

    /// The owner of a lock held on exactly each path, or `nil`.
    public func lockOwners(paths: [[CBORValue]]) async throws -> [CBORValue?] {
        let result = try await call("readlock", [paths.cbor])
        guard let items = result.listElements else { throw unexpected("readlock", result) }
        return items.map(\.nonNull)
    }

    /// Releases every lock whose path starts with `prefix`; returns how many.
    @discardableResult
    public func deleteLockNamespace(_ prefix: CBORValue) async throws -> Int {
        let result = try await call("delete_namespace", [prefix])
        guard let count = result.int64Value else { throw unexpected("delete_namespace", result) }
        return Int(count)
    }

    /// Held locks sorted by path, optionally only those whose first label equals `prefix`.
    public func listLocks(prefix: CBORValue? = nil) async throws -> [HeldLock] {
        let result = try await call("list_locks", [prefix ?? .null])
        guard let items = result.listElements else { throw unexpected("list_locks", result) }
        return try items.map { item in
            guard let parts = item.listElements, parts.count == 3, let path = parts[0].listElements,
                let deadline = parts[2].doubleValue
            else { throw unexpected("list_locks", item) }
            return HeldLock(path: path, owner: parts[1], deadline: deadline)
        }
    }

    // MARK: - Result shapes

    private func pair(_ method: String, _ result: CBORValue) throws -> (CBORValue, CBORValue) {
        guard let parts = result.listElements, parts.count == 2 else { throw unexpected(method, result) }
        return (parts[0], parts[1])
    }

    private func expectSuccess(_ method: String, _ result: CBORValue, spec: String? = nil) throws {
        let (ok, message) = try pair(method, result)
        guard case .bool(true) = ok else { throw failure(message, spec: spec, method: method) }
    }

    private func outcome(_ method: String, _ result: CBORValue) throws -> LockOutcome {
        let (ok, message) = try pair(method, result)
        return LockOutcome(succeeded: ok.isTruthy, message: message.stringValue)
    }

    private func failure(_ message: CBORValue, spec: String?, method: String) -> CoordinateClientError {
        guard let text = message.stringValue else { return unexpected(method, message) }
        return classify(text, spec: spec)
    }

    private func classify(_ message: String, spec: String?) -> CoordinateClientError {
        if message.hasPrefix("no such work_spec ") || message.hasPrefix("no such work spec ") {
            return .noSuchWorkSpec(spec ?? message)
        }
        if message == "work unit is not pending" { return .lostLease(message) }
        return .failed(message: message)
    }

    private func unexpected(_ method: String, _ value: CBORValue) -> CoordinateClientError {
        .unexpectedResult(method: method, detail: String(decoding: PythonRepr.render(value), as: UTF8.self))
    }
}

extension [[CBORValue]] {
    fileprivate var cbor: CBORValue { .array(map { .array($0) }) }
}
