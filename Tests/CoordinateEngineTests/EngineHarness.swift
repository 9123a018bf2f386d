import CBOR
import CoordinateEngine
import CoordinatePostgres
import CoordinateSQLite
import Foundation
import Logging
import TestSupport

/// The storage backends the behaviour suite runs against. Every engine case takes one of these as its argument,
/// so adding a backend here runs the whole suite against it.
enum BackendKind: String, CaseIterable, CustomStringConvertible, Sendable {
    case memory
    case sqlite
    case postgres

    var description: String { rawValue }

    /// Memory and SQLite always; PostgreSQL when the test script provides a server (with `CI=true` always, so
    /// a missing server fails instead of being skipped); `COORDINATE_TEST_BACKENDS` narrows the list.
    static var allCases: [BackendKind] { [.memory, .sqlite, .postgres].filter { TestBackends.enabled($0.rawValue) } }

    func make(clock: ManualClock) async throws -> any StorageBackend {
        var logger = Logger(label: "test-\(rawValue)")
        logger.logLevel = .critical
        switch self {
        case .memory: return MemoryBackend()
        case .sqlite:
            let directory = NSTemporaryDirectory() + "coordinate-engine-\(UUID().uuidString)"
            let backend = SQLiteBackend(path: directory + "/coordinate.sqlite3", logger: logger)
            let now = clock.now()
            try await offCooperativePool { try backend.initialize(now: now) }
            return backend
        case .postgres:
            // A fresh schema per case; the engine's manual clock decides time (storage.md §7).
            let backend = PostgresBackend(
                url: try PostgresURL(try TestPostgres.url()), schema: TestPostgres.freshSchema(), poolSize: 4,
                logger: logger, useDatabaseClock: false)
            let now = clock.now()
            try await backend.initialize(now: { now })
            return backend
        }
    }
}

/// An engine on a manual clock, with terse helpers for the behaviour suite.
struct EngineHarness {
    let engine: Engine
    let clock: ManualClock
    let namespace = Identifier(text: "")

    init(_ kind: BackendKind, configuration: EngineConfiguration = EngineConfiguration()) async throws {
        clock = ManualClock()
        engine = Engine(backend: try await kind.make(clock: clock), clock: clock, configuration: configuration)
    }

    var now: Timestamp { clock.now() }

    func run<T: Sendable>(_ body: @escaping @Sendable (inout EngineTransaction) throws -> T) async throws -> T {
        try await engine.perform(.write, body)
    }

    /// Creates or replaces a spec from `name` and extra data pairs.
    func spec(_ name: String, _ extra: [(String, CBORValue)] = []) async throws {
        var map = CBORMap([(.bytes("name"), .bytes(name))])
        for (key, value) in extra { map.append(.bytes(key), value) }
        let data = map
        let namespace = self.namespace
        try await run { tx in _ = try tx.setWorkSpec(namespace: namespace, data: data) }
    }

    /// Adds units with empty data (`{x: 1}` when `data` is nil).
    func add(
        _ spec: String, _ keys: [String], priority: Double? = nil, delay: Double? = nil, data: CBORValue? = nil
    )
        async throws
    {
        let items = keys.map {
            UnitItem(
                key: Identifier(bytes: $0), data: StoredValue(encoding: data ?? .map(CBORMap([("x", 1)]))),
                priority: priority, delay: delay)
        }
        let namespace = self.namespace
        let outcome = try await run { tx in
            try tx.addWorkUnits(
                namespace: namespace, spec: Identifier(bytes: spec), UnitItemBatch(items: items, count: items.count))
        }
        precondition(outcome != .noSuchSpec, "no spec \(spec)")
    }

    /// Adds `count` units named `prefix000`… to a spec.
    func addMany(_ spec: String, count: Int, prefix: String = "u", priority: Double? = nil) async throws {
        try await add(spec, (0..<count).map { String(format: "%@%04d", prefix, $0) }, priority: priority)
    }

    /// One `get_work` with the CBOR-RPC defaults (runtime filter `[""]`).
    func getWork(
        _ worker: String = "w", count: Int = 1, lease: Double = 300, names: [String]? = nil, runtimes: [String]? = [""]
    ) async throws -> [GrantedUnit] {
        let request = WorkRequest(
            worker: Identifier(bytes: worker), count: count, lease: Time.duration(seconds: lease),
            filter: Scheduler.Filter(
                specNames: names.map { Set($0.map { Identifier(bytes: $0) }) },
                runtimes: runtimes.map { $0.map { Array($0.utf8) } }))
        let namespace = self.namespace
        return try await run { tx in try tx.getWork(namespace: namespace, request) }
    }

    /// The spec name of the next single grant, or nil.
    func pick(_ worker: String = "w") async throws -> String? {
        try await getWork(worker).first.map { $0.spec.name.description }
    }

    @discardableResult
    func update(
        _ spec: String, _ key: String, status: Int64? = nil, lease: Double? = nil, data: CBORValue? = nil,
        worker: String? = nil
    ) async throws -> UnitUpdateOutcome {
        let update = UnitUpdate(
            leaseSeconds: lease, status: status, data: data.map { StoredValue(encoding: $0) },
            worker: worker.map { Identifier(bytes: $0) })
        let namespace = self.namespace
        return try await run { tx in
            try tx.updateWorkUnit(
                namespace: namespace, spec: Identifier(bytes: spec), key: Identifier(bytes: key), update)
        }
    }

    func finish(_ spec: String, _ key: String, data: CBORValue? = nil) async throws {
        try await update(spec, key, status: 4, data: data)
    }

    func counts(_ spec: String) async throws -> UnitCounts {
        let namespace = self.namespace
        return try await run { tx in try tx.countWorkUnits(namespace: namespace, spec: Identifier(bytes: spec))!.counts
        }
    }

    func unit(_ spec: String, _ key: String) async throws -> UnitRecord? {
        let namespace = self.namespace
        return try await run { tx in
            try tx.workUnit(namespace: namespace, spec: Identifier(bytes: spec), key: Identifier(bytes: key))
        }
    }

    func attempts(_ spec: String, _ key: String) async throws -> [AttemptRecord] {
        let namespace = self.namespace
        return try await run { tx in
            guard
                let unit = try tx.workUnit(
                    namespace: namespace, spec: Identifier(bytes: spec), key: Identifier(bytes: key))
            else { return [] }
            return try tx.attempts(of: unit)
        }
    }

    func control(
        _ spec: String, _ change: @escaping @Sendable (inout SpecControl) -> Void
    ) async throws -> SpecControlOutcome {
        var control = SpecControl()
        change(&control)
        let namespace = self.namespace
        let requested = control
        return try await run { tx in
            try tx.controlWorkSpec(namespace: namespace, named: Identifier(bytes: spec), requested)
        }
    }
}
