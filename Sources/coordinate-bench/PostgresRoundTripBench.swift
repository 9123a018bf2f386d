import ArgumentParser
import CoordinatePostgres
import Foundation
import NIOCore
import NIOPosix
import PostgresWire

/// What one PostgreSQL statement costs the daemon, by how the waiting side is driven and whether statements
/// share round trips: the measure behind the PostgreSQL backend's wire client (BENCHMARKS.md, issue 16).
///
/// * `blocking`: a thread of its own sends each statement and waits for its answer, as the backend's storage
///   threads do (each round trip hands off to the connection's event loop and back).
/// * `loop`: each statement is sent from the previous one's completion on the connection's event loop: no
///   thread but the loop is involved.
/// * `pipelined`: a thread sends statements eight at a time and waits for the last answer, as the backend does
///   with statements that do not depend on each other (one write, one round trip, one hand-off per eight).
struct PostgresRoundTripBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg-roundtrip",
        abstract: "Sequential `SELECT 1` statements to PostgreSQL, driven three ways; time and thread switches each.")

    @Option(help: "postgres:// URL of the server.")
    var url: String

    @Option(help: "Statements per mode.")
    var count: Int = 5000

    func run() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let connection = try await WireConnection.connect(to: try PostgresURL(url).configuration(), on: loop).get()
        let count = self.count
        @Sendable func select(_ done: @escaping @Sendable (Result<[WireRow], any Error>) -> Void) -> WireRequest {
            WireRequest(sql: "SELECT 1", completion: done)
        }
        @Sendable func blockingRun(batch: Int) throws {
            for _ in 0..<(count / batch) {
                let answered = loop.makePromise(of: Void.self)
                var requests = (1..<batch).map { _ in select { _ in } }
                requests.append(select { answered.completeWith($0.map { _ in () }) })
                connection.submit(requests)
                try answered.futureResult.wait()
            }
        }
        // Warm up the connection (and the prepared statement).
        try blockingRun(batch: 1)

        for (mode, batch) in [("blocking", 1), ("pipelined", 8)] {
            try await measure(mode) {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    Thread.detachNewThread {
                        continuation.resume(with: Result { try blockingRun(batch: batch) })
                    }
                }
            }
            if mode == "blocking" {
                try await measure("loop") {
                    let done = loop.makePromise(of: Void.self)
                    @Sendable func step(_ remaining: Int) {
                        guard remaining > 0 else { return done.succeed() }
                        connection.submit([
                            select { result in
                                switch result {
                                case .success: step(remaining - 1)
                                case .failure(let error): done.fail(error)
                                }
                            }
                        ])
                    }
                    loop.execute { step(count) }
                    try await done.futureResult.get()
                }
            }
        }
        try await connection.close().get()
    }

    private func measure(_ mode: String, _ body: () async throws -> Void) async throws {
        let switchesBefore = Self.contextSwitches()
        let cpuBefore = Self.processCPU()
        let start = ContinuousClock.now
        try await body()
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let switches = Self.contextSwitches() - switchesBefore
        let cpu = Self.processCPU() - cpuBefore
        print(
            String(
                format: "%-9@ %7.1f µs per round trip, %5.2f thread switches, %6.1f µs CPU (this process)",
                mode as NSString, seconds / Double(count) * 1e6, Double(switches) / Double(count),
                cpu / Double(count) * 1e6))
    }

    /// Voluntary and involuntary context switches summed over this process's threads.
    static func contextSwitches() -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        var total = 0
        for task in tasks {
            guard let status = try? String(contentsOfFile: "/proc/self/task/\(task)/status", encoding: .utf8) else {
                continue
            }
            for line in status.split(separator: "\n") where line.contains("ctxt_switches:") {
                if let value = line.split(separator: "\t").last.flatMap({ Int($0) }) { total += value }
            }
        }
        return total
    }

    /// User and system CPU seconds of this process.
    static func processCPU() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
