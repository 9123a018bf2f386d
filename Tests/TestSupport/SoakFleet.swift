import CBOR
import Foundation
import Locking

/// The soak workload of storage.md §7.3 SOAK-1: a fleet of workers takes units with short leases and finishes
/// them while something keeps disrupting the daemon; the ledger then judges the outcome by the spec's accounting
/// rules. Workers are tasks with their own connections (they reconnect after every failure); every wait
/// suspends, so the disruptions never stall the cooperative pool.
public final class SoakFleet: Sendable {
    public struct Grant: Sendable {
        public var worker: String
        /// When the worker sent `get_work` and when the grant arrived (seconds, the clock daemons and
        /// PostgreSQL share on this machine): the lease began in between.
        public var sent: Double
        public var received: Double
        /// Lease deadline read with get_work_unit_status right after the grant; nil when that call failed or
        /// ended a lease period or more after the grant was asked for (a slow call during an outage may read a
        /// later holder's lease).
        public var deadline: Double?

        /// Whether `later` (asked for after this grant was) certainly obtained the unit while this grant's lease
        /// was live: it arrived before this lease's deadline — the one the daemon reported, or, without it, the
        /// earliest it can be (asked + lease).
        ///
        /// The later grant is judged by when it arrived, not by the start of its own lease (its deadline minus
        /// the lease): on PostgreSQL an operation's `now` is its transaction's start (storage.md §4.4), and under
        /// READ COMMITTED a transaction may take a unit that another one, started later, expired after this start,
        /// so a lease can be recorded as starting a few milliseconds before the previous one's deadline although
        /// it was granted after it (docs/decisions.md).
        func isOverlapped(by later: Grant, lease: Double) -> Bool {
            later.received < (deadline ?? sent + lease) - 0.001
        }
    }

    public let spec: String
    public let leaseSeconds: Double
    /// How long a soak disrupts the daemon at least: 30 s, or `COORDINATE_SOAK_SECONDS` (docs/testing.md).
    public static var seconds: Double {
        ProcessInfo.processInfo.environment["COORDINATE_SOAK_SECONDS"].flatMap(Double.init) ?? 30
    }
    /// Disruptions and acknowledged finishes a run reaches before it stops disrupting, however long that takes
    /// on a loaded machine (up to ``maximumSeconds``): the accounting must judge a fleet that did real work
    /// through several disruptions, not whatever fitted in a window.
    public static let minimumDisruptions = 3
    public static let minimumFinishes = 200
    public static let maximumSeconds: Double = 300

    private struct Ledger {
        var grants: [String: [Grant]] = [:]
        var acknowledgedFinishes: [String: [String]] = [:]
        var stopping = false
    }
    private let ledger = Locked(Ledger())

    public init(spec: String = "soak", leaseSeconds: Double = 10) {
        self.spec = spec
        self.leaseSeconds = leaseSeconds
    }

    /// Adds `count` units named `u00000`… through the daemon on `port` (once its storage is ready: a daemon
    /// answers `storage unavailable: initialising` until then).
    func addUnits(_ count: Int, port: Int) async throws {
        let connection = try await RawConnection(port: port)
        _ = try await retrying {
            try await connection.result("set_work_spec", [.map(CBORMap([("name", .bytes(self.spec))]))])
        }
        for start in stride(from: 0, to: count, by: 1000) {
            let items = (start..<min(count, start + 1000)).map { index -> CBORValue in
                .array([.bytes(Self.key(index)), .map(CBORMap())])
            }
            _ = try await connection.result("add_work_units", [.bytes(spec), .array(items)])
        }
    }

    static func key(_ index: Int) -> String { String(format: "u%05d", index) }

    private var isStopping: Bool { ledger.withLock { $0.stopping } }

    private var finishCount: Int { ledger.withLock { $0.acknowledgedFinishes.values.reduce(0) { $0 + $1.count } } }

    /// One worker: takes, reports and finishes units against the daemon `port()` names (it may move when the
    /// daemon restarts), reconnecting whenever the daemon goes away, until the fleet stops.
    private func work(name: String, port: @Sendable () -> Int) async {
        while !isStopping {
            guard let connection = try? await RawConnection(port: port(), receiveTimeout: 5) else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            while !isStopping {
                do {
                    let sent = Date().timeIntervalSince1970
                    guard let key = try await grant(connection, worker: name) else {
                        try await Task.sleep(for: .milliseconds(20))
                        continue
                    }
                    var grant = Grant(worker: name, sent: sent, received: Date().timeIntervalSince1970, deadline: nil)
                    defer { ledger.withLock { $0.grants[key, default: []].append(grant) } }
                    let status = try await connection.result("get_work_unit_status", [.bytes(spec), [.bytes(key)]])
                    if Date().timeIntervalSince1970 - sent < leaseSeconds, case .tuple(let parts) = status,
                        case .array(let reports)? = parts.first, case .map(let report)? = reports.first
                    {
                        grant.deadline = report["expiration"]?.numberLike
                    }
                    try await Task.sleep(for: .milliseconds(2))
                    let outcome = try await connection.result(
                        "update_work_unit", [.bytes(spec), .bytes(key), .map(CBORMap([("status", 4)]))])
                    if case .tuple(let answer) = outcome, answer.first == .bool(true) {
                        ledger.withLock { $0.acknowledgedFinishes[key, default: []].append(name) }
                    }
                } catch {
                    // The daemon went away mid-call: whatever the call did is judged at the end.
                    break
                }
            }
            await connection.close()
        }
    }

    private func grant(_ connection: RawConnection, worker: String) async throws -> String? {
        let result = try await connection.result(
            "get_work", [.bytes(worker), .map(CBORMap([("lease_time", .float(leaseSeconds)), ("available_gb", 1)]))])
        guard case .tuple(let parts) = result, case .tuple(let triple)? = parts.first, triple.count == 3,
            let octets = triple[1].stringOctets
        else { return nil }
        return String(decoding: octets, as: UTF8.self)
    }

    /// The whole SOAK-1 run: adds `units` through the daemon, runs `workers` workers while `disrupt` (given its
    /// ordinal) runs every 2-5 s — for ``seconds``, and on until ``minimumDisruptions`` and ``minimumFinishes``
    /// are reached — stops the workers, waits one lease period for cut-short leases to run out, and judges.
    /// `port` names the daemon's current CBOR-RPC port (a restart may move it). Returns the number of
    /// disruptions and the report.
    public func run(
        units: Int, workers: Int = 6, port: @escaping @Sendable () -> Int, disrupt: (Int) async throws -> Void
    ) async throws -> (disruptions: Int, report: Report) {
        try await addUnits(units, port: port())
        let start = ContinuousClock.now
        let disruptions = try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<workers {
                group.addTask { await self.work(name: "soak-worker-\(index)", port: port) }
            }
            defer { ledger.withLock { $0.stopping = true } }
            var disruptions = 0
            while ContinuousClock.now - start < .seconds(Self.seconds) || disruptions < Self.minimumDisruptions
                || finishCount < Self.minimumFinishes
            {
                guard ContinuousClock.now - start < .seconds(Self.maximumSeconds) else {
                    throw RawConnection.ConnectionError(
                        description: "SOAK-1: \(disruptions) disruptions and \(finishCount) finishes in "
                            + "\(Self.maximumSeconds) s: the fleet did not run")
                }
                try await Task.sleep(for: .milliseconds(Int.random(in: 2_000...5_000)))
                try await disrupt(disruptions)
                disruptions += 1
            }
            ledger.withLock { $0.stopping = true }
            try await group.waitForAll()
            return disruptions
        }
        try await Task.sleep(for: .seconds(leaseSeconds + 1))
        let report = try await retrying { try await self.report(units: units, port: port()) }
        return (disruptions, report)
    }

    /// The accounting of SOAK-1, run after the disruptions ended and one lease period passed.
    public struct Report: Sendable, CustomStringConvertible {
        public var unitsGranted = 0
        public var grants = 0
        public var grantsWithoutDeadline = 0
        public var acknowledgedFinishes = 0
        /// Units granted again after an earlier lease of theirs ran out (expiry during an outage).
        public var expiryReruns = 0
        /// Units granted to two workers whose leases overlapped in time: must be empty.
        public var overlapping: [String] = []
        /// The grants of each overlapping unit, for the failure message.
        public var overlapDetails: [String] = []
        /// Acknowledged finishes whose unit is not FINISHED: must be empty.
        public var lostFinishes: [String] = []
        /// Units neither FINISHED nor AVAILABLE: must be empty.
        public var stuck: [String] = []

        /// What breaks the accounting rules (empty when the run passed), or that the fleet did no real work.
        public var problems: [String] {
            var problems: [String] = []
            if acknowledgedFinishes < SoakFleet.minimumFinishes {
                problems.append("only \(acknowledgedFinishes) finishes: the fleet did not run")
            }
            if !overlapping.isEmpty {
                problems.append("held by two workers at once: \(overlapDetails.prefix(10).joined(separator: "; "))")
            }
            if !lostFinishes.isEmpty { problems.append("acknowledged finishes lost: \(lostFinishes.prefix(10))") }
            if !stuck.isEmpty { problems.append("neither finished nor available: \(stuck.prefix(10))") }
            return problems
        }

        public var description: String {
            "\(unitsGranted) units in \(grants) grants (\(grantsWithoutDeadline) without a deadline read in time), "
                + "\(acknowledgedFinishes) acknowledged finishes, \(expiryReruns) re-runs after expiry, "
                + "\(overlapping.count) overlapping, \(lostFinishes.count) lost finishes, \(stuck.count) stuck"
        }
    }

    func report(units: Int, port: Int) async throws -> Report {
        let (grants, finishes) = ledger.withLock { ($0.grants, $0.acknowledgedFinishes) }
        var report = Report()
        report.unitsGranted = grants.count
        report.grants = grants.values.reduce(0) { $0 + $1.count }
        report.grantsWithoutDeadline = grants.values.reduce(0) { $0 + $1.filter { $0.deadline == nil }.count }
        report.acknowledgedFinishes = finishes.values.reduce(0) { $0 + $1.count }
        for (key, list) in grants where list.count > 1 {
            let ordered = list.sorted { $0.sent < $1.sent }
            let overlapped = ordered.indices.contains { first in
                ordered[(first + 1)...].contains { ordered[first].isOverlapped(by: $0, lease: leaseSeconds) }
            }
            if overlapped {
                report.overlapping.append(key)
                report.overlapDetails.append(
                    "\(key): "
                        + ordered.map {
                            "\($0.worker) asked \($0.sent), got \($0.received), until \($0.deadline.map { "\($0)" } ?? "?")"
                        }.joined(separator: ", "))
            } else {
                report.expiryReruns += 1
            }
        }
        let connection = try await RawConnection(port: port)
        for start in stride(from: 0, to: units, by: 500) {
            let keys = (start..<min(units, start + 500)).map(Self.key)
            let result = try await connection.result(
                "get_work_unit_status", [.bytes(self.spec), .array(keys.map { .bytes($0) })])
            guard case .tuple(let parts) = result, case .array(let statuses)? = parts.first,
                statuses.count == keys.count
            else { throw RawConnection.ConnectionError(description: "bad get_work_unit_status answer") }
            for (key, entry) in zip(keys, statuses) {
                let status = entry.mapValue?["status"]?.int64Value
                if status != 1 && status != 4 { report.stuck.append(key) }
                if finishes[key] != nil && status != 4 { report.lostFinishes.append(key) }
            }
        }
        return report
    }
}
