import CBOR
import CoordinateClient
import Foundation
import Locking
import Logging
import Synchronization

/// How a ``WorkerRuntime`` runs.
public struct WorkerOptions: Sendable {
    /// The parent worker's id; child slots are `<workerID>.<n>`.
    public var workerID: String
    /// Tasks run at once (one child worker each).
    public var concurrency: Int
    /// Seconds an idle slot waits before asking for work again.
    public var pollInterval: Double
    /// Seconds between heartbeats; workers are registered for four intervals.
    public var heartbeatInterval: Double
    /// Lease requested for each unit; `nil` uses the client's `default_lifetime` (900 s by default).
    public var leaseSeconds: Double?
    /// A task running longer is cancelled and its unit failed (`coordinate.worker.max_task_seconds`).
    public var maxTaskSeconds: Double?
    /// After ``WorkerRuntime/stop()``, running tasks get this long to finish before they are cancelled and
    /// their units released.
    public var drainSeconds: Double
    /// Only these work specs are considered (`nil`: every spec a handler matches).
    public var specNames: [String]?
    /// Seconds between refreshes of the list of work specs the registry can run.
    public var specRefreshInterval: Double

    public init(
        workerID: String = WorkerOptions.defaultWorkerID(), concurrency: Int = 4, pollInterval: Double = 1,
        heartbeatInterval: Double = 15, leaseSeconds: Double? = nil, maxTaskSeconds: Double? = nil,
        drainSeconds: Double = 60, specNames: [String]? = nil, specRefreshInterval: Double = 5
    ) {
        self.workerID = workerID
        self.concurrency = max(1, concurrency)
        self.pollInterval = pollInterval
        self.heartbeatInterval = heartbeatInterval
        self.leaseSeconds = leaseSeconds
        self.maxTaskSeconds = maxTaskSeconds
        self.drainSeconds = drainSeconds
        self.specNames = specNames
        self.specRefreshInterval = specRefreshInterval
    }

    /// `<hostname>-<pid>-<random>`: unique per process.
    public static func defaultWorkerID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "worker"
        return "\(host)-\(getpid())-\(UInt32.random(in: 0...UInt32.max) % 1_000_000)"
    }
}

/// Runs work units with registered task handlers (README "Worker runtime and CLI behaviour").
///
/// The runtime registers a parent worker and one child worker per slot (so `get_child_work_units` shows what
/// each slot holds), heartbeats them, asks for work for the specs its registry can run, renews each running
/// unit's lease whenever half of it has elapsed, finishes units whose task returns and fails those whose task
/// throws (the error's description becomes the traceback). A lost lease cancels the task and reports nothing.
/// ``stop()`` stops taking work; running tasks get ``WorkerOptions/drainSeconds`` to finish, then they are
/// cancelled and their units released. Finally the workers are unregistered.
public final class WorkerRuntime: Sendable {
    public let client: CoordinateClient
    public let registry: TaskRegistry
    public let options: WorkerOptions
    private let logger: Logger
    private let state = Locked(State())
    private let catalog: SpecCatalog

    private struct State {
        var stopping = false
        var drainExpired = false
    }

    /// The child worker ids, one per slot.
    public var childIDs: [String] { (0..<options.concurrency).map { "\(options.workerID).\($0)" } }

    private var lease: Double { options.leaseSeconds ?? client.settings.defaultLifetime }

    public init(client: CoordinateClient, registry: TaskRegistry, options: WorkerOptions, logger: Logger) {
        self.client = client
        self.registry = registry
        self.options = options
        self.logger = logger
        self.catalog = SpecCatalog(client: client, registry: registry, options: options)
    }

    /// Stops taking work and starts the drain. Safe to call more than once, from any thread.
    public func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first else { return }
        logger.info("stopping: no new work; running tasks have \(Int(options.drainSeconds)) s to finish")
        let drain = options.drainSeconds
        Task.detached {
            try? await Task.sleep(for: .seconds(drain))
            self.state.withLock { $0.drainExpired = true }
        }
    }

    private var stopping: Bool { state.withLock { $0.stopping } }
    private var drainExpired: Bool { state.withLock { $0.drainExpired } }

    /// Runs until ``stop()`` and the drain complete. Throws only if the workers cannot be registered at all.
    public func run() async throws {
        // A child process that exits before reading its stdin must not kill the worker. A no-op handler rather
        // than SIG_IGN: handlers reset to the default on exec, an ignored SIGPIPE would be inherited by commands.
        signal(SIGPIPE, { _ in })
        try await heartbeat(mode: "RUN")
        logger.info("worker \(options.workerID) running \(options.concurrency) slots")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.heartbeatLoop() }
            await withTaskGroup(of: Void.self) { slots in
                for (index, child) in childIDs.enumerated() {
                    slots.addTask { await self.slotLoop(index: index, workerID: child) }
                }
            }
            group.cancelAll()
        }
        for child in childIDs { _ = try? await client.workerUnregister(workerID: child) }
        _ = try? await client.workerUnregister(workerID: options.workerID)
        logger.info("worker \(options.workerID) stopped")
    }

    // MARK: - Heartbeats

    private func heartbeat(mode: String) async throws {
        let lifetime = options.heartbeatInterval * 4
        let environment: CBORValue = .map(
            CBORMap([
                (.text("hostname"), .text(ProcessInfo.processInfo.hostName)),
                (.text("pid"), .int(Int(getpid()))),
                (.text("concurrency"), .int(options.concurrency)),
            ]))
        try await client.workerHeartbeat(
            workerID: options.workerID, mode: .text(mode), lifetime: lifetime, environment: environment)
        for child in childIDs {
            try await client.workerHeartbeat(
                workerID: child, mode: .text(mode), lifetime: lifetime, environment: environment,
                parent: options.workerID)
        }
    }

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .seconds(options.heartbeatInterval))
            } catch {
                return
            }
            do {
                try await heartbeat(mode: stopping ? "TERMINATE" : "RUN")
            } catch {
                logger.warning("heartbeat failed: \(error)")
            }
        }
    }

    // MARK: - Slots

    private func slotLoop(index: Int, workerID: String) async {
        while !stopping {
            let eligible: [String]
            do {
                eligible = try await catalog.eligibleSpecNames()
            } catch {
                logger.warning("cannot list work specs: \(error)")
                await pause(options.pollInterval)
                continue
            }
            if eligible.isEmpty {
                await pause(options.pollInterval)
                continue
            }
            let unit: WorkUnit
            do {
                guard
                    let granted = try await client.getWork(workerID: workerID, specNames: eligible, leaseSeconds: lease)
                        .first
                else {
                    await pause(options.pollInterval)
                    continue
                }
                unit = granted
            } catch {
                logger.warning("get_work failed: \(error)")
                await pause(options.pollInterval)
                continue
            }
            await execute(unit)
        }
    }

    /// Sleeps up to `seconds`, waking early when the runtime stops.
    private func pause(_ seconds: Double) async {
        var remaining = seconds
        while remaining > 0, !stopping {
            let step = min(remaining, 0.1)
            try? await Task.sleep(for: .seconds(step))
            remaining -= step
        }
    }

    // MARK: - Running one unit

    private enum Outcome: Sendable {
        case finished(CBORValue?)
        case threw(String)
        case lostLease(String)
        case timedOut(Double)
        case drained
    }

    private func execute(_ unit: WorkUnit) async {
        let specName = unit.specNameString
        guard let spec = try? await catalog.spec(named: specName),
            let handler = registry.handler(specName: specName, spec: spec)
        else {
            logger.warning("no handler for work spec \(specName) any more; releasing \(describe(unit.key))")
            try? await unit.release()
            return
        }
        let lease = self.lease
        let lastRenewal = RenewalTime()
        let context = TaskContext(unit: unit, spec: spec)
        let outcome: Outcome = await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                do {
                    return .finished(try await handler(context))
                } catch {
                    if Task.isCancelled { return nil }
                    return .threw(Self.traceback(error, unit: unit))
                }
            }
            group.addTask { await self.renewLoop(unit, lease: lease, lastRenewal: lastRenewal) }
            if let limit = options.maxTaskSeconds {
                group.addTask {
                    try? await Task.sleep(for: .seconds(limit))
                    return Task.isCancelled ? nil : .timedOut(limit)
                }
            }
            group.addTask { await self.drainWatch() }
            var decided: Outcome?
            while decided == nil, let next = await group.next() { decided = next }
            group.cancelAll()
            return decided ?? .drained
        }
        await report(outcome, unit: unit, lease: lease, lastRenewal: lastRenewal.value)
    }

    private func report(
        _ outcome: Outcome, unit: WorkUnit, lease: Double, lastRenewal: ContinuousClock.Instant
    )
        async
    {
        let label = "\(unit.specNameString)/\(describe(unit.key))"
        do {
            switch outcome {
            case .finished(let data):
                if ContinuousClock.now - lastRenewal >= .seconds(lease) {
                    // The lease may have run out while the task finished: do not finish a unit another worker
                    // now holds.
                    try await unit.checkLease()
                }
                try await unit.finish(data: data)
                logger.debug("finished \(label)")
            case .threw(let traceback):
                try await unit.fail(traceback: traceback)
                logger.info("failed \(label): \(traceback.split(separator: "\n").first ?? "")")
            case .timedOut(let limit):
                try await unit.fail(traceback: "task exceeded \(Self.seconds(limit)) s")
                logger.info("failed \(label): task exceeded \(Self.seconds(limit)) s")
            case .lostLease(let detail):
                logger.warning("lost the lease on \(label): \(detail); task cancelled")
            case .drained:
                try await unit.release()
                logger.info("released \(label): drain time ran out")
            }
        } catch CoordinateClientError.lostLease(let detail) {
            logger.warning("lost the lease on \(label): \(detail); result not reported")
        } catch {
            logger.error("cannot report \(label): \(error)")
        }
    }

    /// Renews the lease whenever half of it has elapsed; returns `.lostLease` when the server says the unit is
    /// no longer pending, `nil` when cancelled.
    private func renewLoop(
        _ unit: WorkUnit, lease: Double, lastRenewal: RenewalTime
    ) async
        -> Outcome?
    {
        while true {
            do {
                try await Task.sleep(for: .seconds(lease / 2))
            } catch {
                return nil
            }
            do {
                try await unit.renew(leaseSeconds: lease)
                lastRenewal.value = .now
            } catch CoordinateClientError.lostLease(let detail) {
                return .lostLease(detail)
            } catch {
                logger.warning("lease renewal failed: \(error)")
            }
        }
    }

    /// Returns `.drained` once a drain has run out of time; `nil` when cancelled.
    private func drainWatch() async -> Outcome? {
        while !Task.isCancelled {
            if drainExpired { return .drained }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    static func traceback(_ error: any Error, unit: WorkUnit) -> String {
        if let failed = error as? ShellCommandTask.CommandFailed { return failed.description }
        return
            "\(type(of: error)): \(error)\n  while running work unit \(String(decoding: PythonRepr.render(unit.key), as: UTF8.self))"
            + " of work spec \(unit.specNameString) on worker \(unit.workerID)\n"
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }

    private func describe(_ key: CBORValue) -> String { PythonRepr.renderString(key) }
}

/// When a running unit's lease was last renewed (or granted), shared by its renewal loop and its reporting.
private final class RenewalTime: Sendable {
    private let instant = Locked(ContinuousClock.now)
    var value: ContinuousClock.Instant {
        get { instant.withLock { $0 } }
        set { instant.withLock { $0 = newValue } }
    }
}

/// The work specs the registry can run, refreshed periodically.
actor SpecCatalog {
    private let client: CoordinateClient
    private let registry: TaskRegistry
    private let options: WorkerOptions
    private var specs: [String: CBORMap] = [:]
    private var eligible: [String] = []
    private var fetched: ContinuousClock.Instant?

    init(client: CoordinateClient, registry: TaskRegistry, options: WorkerOptions) {
        self.client = client
        self.registry = registry
        self.options = options
    }

    func eligibleSpecNames() async throws -> [String] {
        if let fetched, ContinuousClock.now - fetched < .seconds(options.specRefreshInterval) { return eligible }
        try await refresh()
        return eligible
    }

    func spec(named name: String) async throws -> CBORMap? {
        if specs[name] == nil { try await refresh() }
        return specs[name]
    }

    private func refresh() async throws {
        let all = try await client.allWorkSpecs()
        var byName: [String: CBORMap] = [:]
        for spec in all {
            if let name = spec["name"]?.stringValue { byName[name] = spec }
        }
        specs = byName
        eligible = byName.keys.sorted().filter { name in
            if let only = options.specNames, !only.contains(name) { return false }
            return registry.handler(specName: name, spec: byName[name]!) != nil
        }
        fetched = .now
    }
}
