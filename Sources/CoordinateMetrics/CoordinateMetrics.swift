import CoordinateEngine
import CoreMetrics
import Foundation
import Locking
import Prometheus
import Synchronization

/// The daemon's metrics (rest-api.md §6).
///
/// Event metrics (requests, durations, storage operations) are swift-metrics counters and timers backed by a
/// swift-prometheus registry owned by this object, not by the process-wide `MetricsSystem`, so several daemons
/// can share a process (tests). State metrics (unit counts, workers, locks, attempts, connections) are computed
/// at scrape time from the engine and the listener, so series for deleted specs, namespaces or workers simply
/// stop appearing.
public final class CoordinateMetrics: StorageObserver {
    /// The 14 request-duration buckets of rest-api.md §6.
    public static let requestBuckets: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]
    /// 2⁻⁵ … 2⁶ seconds.
    public static let summaryBuckets: [Double] = (-5...6).map { pow(2, Double($0)) }

    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let storageBackend: String
    private let version: String
    /// swift-metrics handles by label set, created on first use.
    private let counters = Locked<[String: CoreMetrics.Counter]>([:])
    private let timers = Locked<[String: CoreMetrics.Timer]>([:])
    private let summaryTimer: CoreMetrics.Timer
    private let storageTimers: (read: CoreMetrics.Timer, write: CoreMetrics.Timer, commit: CoreMetrics.Timer)
    private let storageErrors: CoreMetrics.Counter
    private let storageDamaged: CoreMetrics.Counter

    public init(storageBackend: String, version: String) {
        self.storageBackend = storageBackend
        self.version = version
        var factory = PrometheusMetricsFactory(registry: registry)
        let requestDurations = Self.requestBuckets.map { Duration.nanoseconds(Int64($0 * 1e9)) }
        factory.durationHistogramBuckets = [
            "coordinate_rpc_duration_seconds": requestDurations,
            "coordinate_http_request_duration_seconds": requestDurations,
            "coordinate_storage_operation_seconds": requestDurations,
            "coordinate_summary_seconds": Self.summaryBuckets.map { Duration.nanoseconds(Int64($0 * 1e9)) },
        ]
        self.factory = factory
        summaryTimer = CoreMetrics.Timer(label: "coordinate_summary_seconds", factory: factory)
        func storageTimer(_ op: String) -> CoreMetrics.Timer {
            CoreMetrics.Timer(
                label: "coordinate_storage_operation_seconds", dimensions: [("backend", storageBackend), ("op", op)],
                factory: factory)
        }
        storageTimers = (storageTimer("read"), storageTimer("write"), storageTimer("commit"))
        storageErrors = CoreMetrics.Counter(
            label: "coordinate_storage_errors_total", dimensions: [("backend", storageBackend)], factory: factory)
        storageDamaged = CoreMetrics.Counter(
            label: "coordinate_storage_damaged_values_total", dimensions: [("backend", storageBackend)],
            factory: factory)
    }

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Counter {
        let key = label + dimensions.map { "\u{1}\($0.0)=\($0.1)" }.joined()
        return counters.withLock { counters in
            if let existing = counters[key] { return existing }
            let created = CoreMetrics.Counter(label: label, dimensions: dimensions, factory: factory)
            counters[key] = created
            return created
        }
    }

    private func timer(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        let key = label + dimensions.map { "\u{1}\($0.0)=\($0.1)" }.joined()
        return timers.withLock { timers in
            if let existing = timers[key] { return existing }
            let created = CoreMetrics.Timer(label: label, dimensions: dimensions, factory: factory)
            timers[key] = created
            return created
        }
    }

    // MARK: - Events

    /// The instruments of one CBOR-RPC method: requests, errors and handling time.
    public struct RPCInstruments: Sendable {
        let requests: CoreMetrics.Counter
        let errors: CoreMetrics.Counter
        let duration: CoreMetrics.Timer

        /// Records one request (each batch element counts).
        public func record(failed: Bool, seconds: Double) {
            requests.increment()
            if failed { errors.increment() }
            duration.recordSeconds(seconds)
        }
    }

    /// Instruments for a method; requests that never reached a method use `module="none"`,
    /// `method="unknown"`. Look them up once per method, not per request.
    public func rpcInstruments(module: String?, method: String?) -> RPCInstruments {
        let dimensions = [("module", module ?? "none"), ("method", method ?? "unknown")]
        return RPCInstruments(
            requests: counter("coordinate_rpc_requests_total", dimensions),
            errors: counter("coordinate_rpc_errors_total", dimensions),
            duration: timer("coordinate_rpc_duration_seconds", dimensions))
    }

    /// One HTTP request, by route template.
    public func httpRequest(route: String, method: String, code: Int, seconds: Double) {
        counter("coordinate_http_requests_total", [("route", route), ("method", method), ("code", String(code))])
            .increment()
        timer("coordinate_http_request_duration_seconds", [("route", route), ("method", method)]).recordSeconds(seconds)
    }

    /// Time spent in the storage backend: `read`, `write` or `commit`.
    public func storageOperation(_ op: String, seconds: Double) {
        let timer: CoreMetrics.Timer
        switch op {
        case "read": timer = storageTimers.read
        case "write": timer = storageTimers.write
        default: timer = storageTimers.commit
        }
        timer.recordSeconds(seconds)
    }

    /// A failed storage operation.
    public func storageError() {
        storageErrors.increment()
    }

    /// Stored values found damaged on reading.
    public func storageDamage(count: Int) {
        storageDamaged.increment(by: Int64(count))
    }

    // MARK: - Scrape

    /// Counters of the CBOR-RPC listener at scrape time.
    public struct ListenerCounts: Sendable {
        public var open = 0
        public var accepted = 0
        public var rejectedForLimit = 0
        public var rejectedNotAllowed = 0
        public var malformed = 0

        public init(open: Int, accepted: Int, rejectedForLimit: Int, rejectedNotAllowed: Int, malformed: Int) {
            self.open = open
            self.accepted = accepted
            self.rejectedForLimit = rejectedForLimit
            self.rejectedNotAllowed = rejectedNotAllowed
            self.malformed = malformed
        }
    }

    /// The full exposition text (format 0.0.4).
    public func render(engine: Engine, listener: ListenerCounts) async -> String {
        let started = ContinuousClock.now
        let state = try? await engine.perform(.read) { tx in try MetricsState.collect(tx) }
        let elapsed = ContinuousClock.now - started
        summaryTimer.recordSeconds(
            Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)

        var text = ExpositionText()
        let health = engine.backend.health()
        text.family("coordinate_build_info", "gauge", "Build information; always 1.")
        text.sample("coordinate_build_info", [("version", version)], 1)
        text.family("coordinate_storage_up", "gauge", "1 when storage is available.")
        text.sample("coordinate_storage_up", [("backend", storageBackend)], health.isAvailable && state != nil ? 1 : 0)
        for counter in engine.backend.counters {
            let name = "coordinate_storage_\(counter.name)_total"
            text.family(name, "counter", counter.help)
            text.sample(name, [("backend", storageBackend)], Double(counter.value))
        }
        text.family("coordinate_cborrpc_connections", "gauge", "Open CBOR-RPC connections.")
        text.sample("coordinate_cborrpc_connections", [], Double(listener.open))
        text.family("coordinate_cborrpc_connections_total", "counter", "Accepted CBOR-RPC connections.")
        text.sample("coordinate_cborrpc_connections_total", [], Double(listener.accepted))
        text.family("coordinate_cborrpc_malformed_total", "counter", "Malformed CBOR-RPC messages.")
        text.sample("coordinate_cborrpc_malformed_total", [], Double(listener.malformed))
        text.family("coordinate_cborrpc_rejected_total", "counter", "CBOR-RPC connections closed on accept.")
        text.sample(
            "coordinate_cborrpc_rejected_total", [("reason", "max_connections")], Double(listener.rejectedForLimit))
        text.sample(
            "coordinate_cborrpc_rejected_total", [("reason", "not_allowed")], Double(listener.rejectedNotAllowed))

        if let state {
            let outcomes = engine.statistics.attemptOutcomes
            text.family("coordinate_work_units", "gauge", "Live work units by status.")
            for spec in state.specs {
                for bucket in [UnitBucket.ready, .delayed, .pending, .finished, .failed] {
                    text.sample(
                        "coordinate_work_units",
                        [("namespace", spec.namespace), ("work_spec", spec.name), ("status", bucket.name)],
                        Double(spec.counts[bucket]))
                }
            }
            text.family("coordinate_archived_work_units", "gauge", "Archived work units by status.")
            for spec in state.specs {
                text.sample(
                    "coordinate_archived_work_units",
                    [("namespace", spec.namespace), ("work_spec", spec.name), ("status", "finished")],
                    Double(spec.archivedFinished))
                text.sample(
                    "coordinate_archived_work_units",
                    [("namespace", spec.namespace), ("work_spec", spec.name), ("status", "failed")],
                    Double(spec.archivedFailed))
            }
            text.family("coordinate_attempts_total", "counter", "Attempt outcomes since process start.")
            for spec in state.specs {
                let counts = outcomes[spec.id]
                for outcome in AttemptOutcome.allCases {
                    text.sample(
                        "coordinate_attempts_total",
                        [("namespace", spec.namespace), ("work_spec", spec.name), ("outcome", outcome.name)],
                        Double(counts?[outcome] ?? 0))
                }
            }
            text.family("coordinate_workers", "gauge", "Worker records by state.")
            for namespace in state.namespaces {
                text.sample(
                    "coordinate_workers", [("namespace", namespace.name), ("state", "live")], Double(namespace.live))
                text.sample(
                    "coordinate_workers", [("namespace", namespace.name), ("state", "inactive")],
                    Double(namespace.inactive))
            }
            text.family("coordinate_locks_held", "gauge", "Held locks.")
            for namespace in state.namespaces {
                text.sample("coordinate_locks_held", [("namespace", namespace.name)], Double(namespace.locks))
            }
        }
        return registry.emitToString() + text.output
    }
}

/// Engine state read for one scrape, in one consistent read.
struct MetricsState: Sendable {
    struct Spec: Sendable {
        let id: Int64
        let namespace: String
        let name: String
        let counts: UnitCounts
        let archivedFinished: Int64
        let archivedFailed: Int64
    }

    struct Namespace: Sendable {
        let name: String
        let live: Int
        let inactive: Int
        let locks: Int
    }

    var specs: [Spec] = []
    var namespaces: [Namespace] = []

    static func collect(_ tx: EngineTransaction) throws -> MetricsState {
        var state = MetricsState()
        for namespace in try tx.namespaces() {
            let name = String(decoding: namespace.name.octets, as: UTF8.self)
            for spec in try tx.listWorkSpecs(namespace: namespace.name, start: nil, limit: nil).specs {
                guard let counts = try tx.countWorkUnits(namespace: namespace.name, spec: spec.name) else { continue }
                state.specs.append(
                    Spec(
                        id: spec.id, namespace: name, name: String(decoding: spec.name.octets, as: UTF8.self),
                        counts: counts.counts, archivedFinished: counts.archivedFinished,
                        archivedFailed: counts.archivedFailed))
            }
            let workers = try tx.allWorkers(namespace: namespace.name)
            let live = workers.filter { $0.isLive(at: tx.now) }.count
            let locks = try tx.listLocks(namespace: namespace.name, prefix: nil).count
            state.namespaces.append(Namespace(name: name, live: live, inactive: workers.count - live, locks: locks))
        }
        return state
    }
}

/// Prometheus text exposition lines.
struct ExpositionText {
    private(set) var output = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        output += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        output += name
        if !labels.isEmpty {
            output += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        output += " " + (value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)) + "\n"
    }

    /// Label values escape backslash, double quote and newline.
    static func escape(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
