import ArgumentParser
import CoordinatePostgres
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// What one PostgreSQL round trip costs the daemon, by how the waiting side is driven: the measure behind the
/// choice of how the PostgreSQL backend waits for its statements (BENCHMARKS.md, issue 16).
///
/// * `blocking`: a thread of its own sends each statement and blocks on its future, as the backend's storage
///   threads do today (each round trip hands off to postgres-nio's event loop and back).
/// * `loop`: each statement is started from the previous one's completion on the connection's event loop: no
///   thread but the loop is involved.
/// * `actor`: an actor whose executor is the connection's event loop awaits each statement (`async`/`await`
///   without a hop to the cooperative pool).
/// * `task`: a plain task on the cooperative pool awaits each statement (a hop to the loop and back each time).
struct PostgresRoundTripBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg-roundtrip",
        abstract: "Sequential `SELECT 1` round trips to PostgreSQL, driven four ways; time and thread switches each.")

    @Option(help: "postgres:// URL of the server.")
    var url: String

    @Option(help: "Round trips per mode.")
    var count: Int = 5000

    func run() async throws {
        var logger = Logger(label: "pg-roundtrip")
        logger.logLevel = .warning
        let configuration = try PostgresURL(url).configuration()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let connection = try await PostgresConnection.connect(
            on: loop, configuration: configuration, id: 1, logger: logger)
        let count = self.count
        // Warm up the connection (and prepare nothing: `SELECT 1` is the cheapest statement there is).
        for _ in 0..<200 { _ = try await connection.query("SELECT 1", logger: logger).collect() }

        try await measure("blocking") {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                Thread.detachNewThread {
                    do {
                        for _ in 0..<count { _ = try connection.query("SELECT 1").wait() }
                        continuation.resume()
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        }
        try await measure("loop") {
            let done = loop.makePromise(of: Void.self)
            @Sendable func step(_ remaining: Int) {
                guard remaining > 0 else { return done.succeed() }
                connection.query("SELECT 1").whenComplete { result in
                    switch result {
                    case .success: step(remaining - 1)
                    case .failure(let error): done.fail(error)
                    }
                }
            }
            loop.execute { step(count) }
            try await done.futureResult.get()
        }
        let driver = LoopDriver(loop: loop, connection: connection)
        try await measure("actor") { try await driver.run(count) }
        try await measure("task") {
            for _ in 0..<count { _ = try await connection.query("SELECT 1").get() }
        }
        try await connection.close()
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

/// Awaits statements on the connection's own event loop: the actor's executor is that loop, so a resumed
/// `await` continues there without a hop.
actor LoopDriver {
    let loop: any EventLoop
    let connection: PostgresConnection

    init(loop: any EventLoop, connection: PostgresConnection) {
        self.loop = loop
        self.connection = connection
    }

    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.executor.asUnownedSerialExecutor() }

    func run(_ count: Int) async throws {
        for _ in 0..<count { _ = try await connection.query("SELECT 1").get() }
    }
}
