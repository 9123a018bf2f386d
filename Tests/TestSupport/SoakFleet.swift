import CBOR
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The soak workload of storage.md §7.3 SOAK-1: a fleet of workers takes units with short leases and finishes
/// them while something keeps disrupting the daemon; the ledger then judges the outcome by the spec's accounting
/// rules. Workers are plain threads with blocking connections (they reconnect after every failure), so the
/// disruptions cannot stall the test's cooperative pool.
public final class SoakFleet: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is accessed only while holding `lock`.
    public struct Grant: Sendable {
        public var worker: String
        /// Lease deadline (daemon clock, seconds) read with get_work_unit_status right after the grant.
        public var deadline: Double
    }

    public let spec: String
    public let leaseSeconds: Double
    /// How long a soak disrupts the daemon: 30 s, or `COORDINATE_SOAK_SECONDS` (docs/testing.md).
    public static var seconds: Double {
        ProcessInfo.processInfo.environment["COORDINATE_SOAK_SECONDS"].flatMap(Double.init) ?? 30
    }
    private let lock = NSLock()
    private var grants: [String: [Grant]] = [:]
    private var acknowledgedFinishes: [String: [String]] = [:]
    private var grantedWithoutDeadline = 0
    private var stopping = false

    public init(spec: String = "soak", leaseSeconds: Double = 10) {
        self.spec = spec
        self.leaseSeconds = leaseSeconds
    }

    /// Adds `count` units named `u00000`… through the daemon on `port` (once its storage is ready: a daemon
    /// answers `storage unavailable: initialising` until then).
    func addUnits(_ count: Int, port: Int) throws {
        let connection = try RawConnection(port: port)
        _ = try Self.retrying {
            try connection.result("set_work_spec", [.map(CBORMap([("name", .bytes(self.spec))]))])
        }
        for start in stride(from: 0, to: count, by: 1000) {
            let items = (start..<min(count, start + 1000)).map { index -> CBORValue in
                .array([.bytes(Self.key(index)), .map(CBORMap())])
            }
            _ = try connection.result("add_work_units", [.bytes(spec), .array(items)])
        }
    }

    static func key(_ index: Int) -> String { String(format: "u%05d", index) }

    /// Runs `workers` workers against the daemon on `port` (reconnecting whenever it goes away) until ``join()``.
    func start(workers: Int, port: Int) {
        let started = (0..<workers).map { index in
            let thread = Thread { [self] in work(name: "soak-worker-\(index)", port: port) }
            thread.start()
            return thread
        }
        lock.withLock { threads += started }
    }

    private var threads: [Thread] = []

    private var isStopping: Bool { lock.withLock { stopping } }

    private func work(name: String, port: Int) {
        while !isStopping {
            guard let connection = try? RawConnection(port: port, receiveTimeout: 5) else {
                usleep(50_000)
                continue
            }
            while !isStopping {
                do {
                    guard let key = try grant(connection, worker: name) else {
                        usleep(20_000)
                        continue
                    }
                    let status = try connection.result("get_work_unit_status", [.bytes(spec), [.bytes(key)]])
                    guard case .tuple(let parts) = status, case .array(let reports)? = parts.first,
                        case .map(let report)? = reports.first, let deadline = report["expiration"]?.numberLike
                    else {
                        lock.withLock { grantedWithoutDeadline += 1 }
                        continue
                    }
                    lock.withLock { grants[key, default: []].append(Grant(worker: name, deadline: deadline)) }
                    usleep(2_000)
                    let outcome = try connection.result(
                        "update_work_unit", [.bytes(spec), .bytes(key), .map(CBORMap([("status", 4)]))])
                    if case .tuple(let answer) = outcome, answer.first == .bool(true) {
                        lock.withLock { acknowledgedFinishes[key, default: []].append(name) }
                    }
                } catch {
                    // The daemon went away mid-call: whatever the call did is judged at the end.
                    break
                }
            }
        }
    }

    private func grant(_ connection: RawConnection, worker: String) throws -> String? {
        let result = try connection.result(
            "get_work", [.bytes(worker), .map(CBORMap([("lease_time", .float(leaseSeconds)), ("available_gb", 1)]))])
        guard case .tuple(let parts) = result, case .tuple(let triple)? = parts.first, triple.count == 3,
            let octets = triple[1].stringOctets
        else { return nil }
        return String(decoding: octets, as: UTF8.self)
    }

    /// Stops the workers and waits until each has finished its current call.
    func join() {
        lock.withLock { stopping = true }
        for thread in lock.withLock({ threads }) { while thread.isExecuting { usleep(10_000) } }
    }

    /// The whole SOAK-1 run: adds `units` through the daemon on `port`, runs `workers` workers while `disrupt`
    /// (given its ordinal) runs every 2-5 s for ``seconds``, stops the workers, waits one lease period for cut-short
    /// leases to run out, and judges. Returns the number of disruptions and the report.
    public func run(
        units: Int, workers: Int = 6, port: Int, disrupt: (Int) async throws -> Void
    ) async throws -> (disruptions: Int, report: Report) {
        try addUnits(units, port: port)
        start(workers: workers, port: port)
        let deadline = Date().addingTimeInterval(Self.seconds)
        var disruptions = 0
        while Date() < deadline {
            try await Task.sleep(for: .milliseconds(Int.random(in: 2_000...5_000)))
            try await disrupt(disruptions)
            disruptions += 1
        }
        try await offCooperativePool { self.join() }
        try await Task.sleep(for: .seconds(leaseSeconds + 1))
        let report = try await offCooperativePool { try self.report(units: units, port: port) }
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
        /// Acknowledged finishes whose unit is not FINISHED: must be empty.
        public var lostFinishes: [String] = []
        /// Units neither FINISHED nor AVAILABLE: must be empty.
        public var stuck: [String] = []

        /// What breaks the accounting rules (empty when the run passed), or that the fleet did no real work.
        public var problems: [String] {
            var problems: [String] = []
            if acknowledgedFinishes <= 100 {
                problems.append("only \(acknowledgedFinishes) finishes: the fleet did not run")
            }
            if !overlapping.isEmpty { problems.append("held by two workers at once: \(overlapping.prefix(10))") }
            if !lostFinishes.isEmpty { problems.append("acknowledged finishes lost: \(lostFinishes.prefix(10))") }
            if !stuck.isEmpty { problems.append("neither finished nor available: \(stuck.prefix(10))") }
            return problems
        }

        public var description: String {
            "\(unitsGranted) units in \(grants) grants (\(grantsWithoutDeadline) more whose status call failed), "
                + "\(acknowledgedFinishes) acknowledged finishes, \(expiryReruns) re-runs after expiry, "
                + "\(overlapping.count) overlapping, \(lostFinishes.count) lost finishes, \(stuck.count) stuck"
        }
    }

    func report(units: Int, port: Int) throws -> Report {
        let (grants, finishes, withoutDeadline) = lock.withLock {
            (self.grants, acknowledgedFinishes, grantedWithoutDeadline)
        }
        var report = Report()
        report.unitsGranted = grants.count
        report.grants = grants.values.reduce(0) { $0 + $1.count }
        report.grantsWithoutDeadline = withoutDeadline
        report.acknowledgedFinishes = finishes.values.reduce(0) { $0 + $1.count }
        for (key, list) in grants where list.count > 1 {
            let ordered = list.sorted { $0.deadline < $1.deadline }
            var overlapped = false
            for (earlier, later) in zip(ordered, ordered.dropFirst())
            where later.deadline - earlier.deadline < leaseSeconds - 0.001 {
                overlapped = true
            }
            if overlapped { report.overlapping.append(key) } else { report.expiryReruns += 1 }
        }
        let connection = try Self.retrying { try RawConnection(port: port) }
        for start in stride(from: 0, to: units, by: 500) {
            let keys = (start..<min(units, start + 500)).map(Self.key)
            let result = try Self.retrying {
                try connection.result("get_work_unit_status", [.bytes(self.spec), .array(keys.map { .bytes($0) })])
            }
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

    /// `body`'s answer once it succeeds, trying for up to a minute: after the last disruption the daemon may
    /// still be starting, or reconnecting to its database with backoff.
    static func retrying<T>(_ body: () throws -> T) throws -> T {
        let deadline = Date().addingTimeInterval(60)
        while true {
            do { return try body() } catch  where Date() < deadline { usleep(200_000) }
        }
    }
}
