import ArgumentParser
import CBOR
import CoordinateConfig
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// Shared counters of one measurement.
final class CycleStats: Sendable {
    let measuring = Atomic<Bool>(false)
    let units = Atomic<Int>(0)
    let latencies = NIOLockedValueBox<(getWork: [Int64], update: [Int64])>(([], []))
}

/// Runs the reference cycle (storage.md §1.5) on one connection as a state machine on its event loop: one
/// `get_work` (max_jobs = batch, lease 900), then `update_work_unit(status 4)` for each granted unit, one request
/// at a time, exactly as the Python client sends them.
final class CycleHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let worker: CBORValue
    private let batch: Int
    private let stats: CycleStats
    private var framer = CBORStreamFramer(maxMessageBytes: 1 << 30, maxDepth: 1 << 16)
    private var buffer: ByteBuffer?
    private var nextID: UInt64 = 1
    /// Granted units not finished yet, as (spec, key): with several specs the scheduler picks the spec.
    private var pendingKeys: [(CBORValue, CBORValue)] = []
    private var sentAt = NIODeadline.now()
    private var awaitingGetWork = true
    private var getWorkSamples: [Int64] = []
    private var updateSamples: [Int64] = []
    private var finishedLocally = 0

    init(worker: String, batch: Int, stats: CycleStats) {
        self.worker = .bytes(worker)
        self.batch = batch
        self.stats = stats
    }

    func channelActive(context: ChannelHandlerContext) { sendGetWork(context: context) }

    private func send(_ method: String, _ params: [CBORValue], context: ChannelHandlerContext) {
        let bytes = PythonStyle.request(method, params, id: nextID)
        nextID += 1
        sentAt = .now()
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
    }

    private func sendGetWork(context: ChannelHandlerContext) {
        awaitingGetWork = true
        send(
            "get_work", [worker, .map(CBORMap([("max_jobs", .int(batch)), ("lease_time", 900)]))], context: context)
    }

    private func sendUpdate(_ unit: (spec: CBORValue, key: CBORValue), context: ChannelHandlerContext) {
        awaitingGetWork = false
        send("update_work_unit", [unit.spec, unit.key, .map(CBORMap([("status", 4)]))], context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        while var current = buffer, current.readableBytes > 0 {
            let event = current.withUnsafeReadableBytes { framer.next(in: $0) }
            guard case .message(let length) = event else { break }
            let message = current.readSlice(length: length)!
            buffer = current.readableBytes > 0 ? current : nil
            framer.reset()
            handle(message, context: context)
        }
    }

    private func handle(_ message: ByteBuffer, context: ChannelHandlerContext) {
        let elapsed = NIODeadline.now() - sentAt
        let measuring = stats.measuring.load(ordering: .relaxed)
        if awaitingGetWork {
            if measuring { getWorkSamples.append(elapsed.nanoseconds) }
            let decoded = message.withUnsafeReadableBytes { CBORMessage.decode($0, maxDepth: 1 << 16) }
            guard case .value(.map(let response), _) = decoded, case .tuple(let parts)? = response["result"],
                let first = parts.first
            else { return }
            switch first {
            case .tuple(let triple) where triple.count == 3 && !triple[1].isNull:
                pendingKeys = [(triple[0], triple[1])]
            case .array(let triples):
                pendingKeys = triples.compactMap { triple in triple.listElements.map { ($0[0], $0[1]) } }
            default:
                pendingKeys = []
            }
            if pendingKeys.isEmpty {
                // The queue is momentarily empty (the refiller tops it up): try again shortly.
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(2)) { [self] in
                    sendGetWork(context: context)
                }
                return
            }
            sendUpdate(pendingKeys.removeFirst(), context: context)
        } else {
            if measuring {
                updateSamples.append(elapsed.nanoseconds)
                finishedLocally += 1
                if finishedLocally >= 16 {
                    stats.units.add(finishedLocally, ordering: .relaxed)
                    finishedLocally = 0
                }
            }
            if let next = pendingKeys.first {
                pendingKeys.removeFirst()
                sendUpdate(next, context: context)
            } else {
                sendGetWork(context: context)
            }
        }
        if !measuring, !getWorkSamples.isEmpty || !updateSamples.isEmpty || finishedLocally > 0 {
            flushSamples()
        }
    }

    func flushSamples() {
        let gets = getWorkSamples
        let updates = updateSamples
        stats.units.add(finishedLocally, ordering: .relaxed)
        finishedLocally = 0
        getWorkSamples.removeAll()
        updateSamples.removeAll()
        stats.latencies.withLockedValue {
            $0.getWork += gets
            $0.update += updates
        }
    }

    func channelInactive(context: ChannelHandlerContext) { flushSamples() }
}

struct JobQueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobqueue",
        abstract: "The get+finish cycle workload of storage.md §1.5, bulk add, and memory per queued unit.")

    @Option(help: "Target an existing server (host:port) instead of spawning coordinated.")
    var address: String?

    @Option(help: "Path of the coordinated executable to spawn (default: next to this benchmark).")
    var daemon: String?

    @Option(help: "Storage backend of the spawned daemon.")
    var storage: String = "memory"

    @Option(parsing: .upToNextOption, help: "Queued-unit counts N.")
    var units: [Int] = [10_000, 100_000]

    @Option(parsing: .upToNextOption, help: "Concurrent connections W.")
    var workers: [Int] = [1, 8, 64]

    @Option(parsing: .upToNextOption, help: "Units per get_work (max_jobs).")
    var batches: [Int] = [1]

    @Option(help: "Seconds of warm-up per case.")
    var warmup: Double = 2

    @Option(help: "Seconds measured per case.")
    var duration: Double = 5

    @Option(help: "Runs per case; the median is reported.")
    var repeats: Int = 1

    @Flag(help: "The full matrix: N = 10^4, 10^5, 10^6; W = 1, 8, 64; batches 1, 10, 100; 5 s + 30 s; median of 3.")
    var full = false

    @Flag(help: "Skip the bulk-add and memory measurements.")
    var skipLoad = false

    @Option(help: "Units added by the bulk-add measurement.")
    var loadUnits = 1_000_000

    @Flag(
        help:
            "Also measure the socket ceiling: the same cycle against a bare NIO server that answers without doing any work."
    )
    var ceiling = false

    @Option(help: "Extra arguments for the spawned daemon (space separated).")
    var daemonArguments: String = ""

    @Option(help: "Daemons to spawn over the same database (postgres only); worker connections are spread over them.")
    var daemons = 1

    @Option(help: "Work specs sharing the queued units (the scheduler chooses among them on each get_work).")
    var specs = 1

    @Flag(help: "With --storage sqlite: measure restart time (exec until the first get_work succeeds) with 10^6 units.")
    var restart = false

    func run() async throws {
        var units = self.units
        var workers = self.workers
        var batches = self.batches
        var warmup = self.warmup
        var duration = self.duration
        var repeats = self.repeats
        if full {
            units = [10_000, 100_000, 1_000_000]
            workers = [1, 8, 64]
            batches = [1, 10, 100]
            warmup = 5
            duration = 30
            repeats = 3
        }
        if daemons > 1 && storage != "postgres" {
            throw BenchError("--daemons above 1 needs --storage postgres (the daemons share its database)")
        }
        print(
            "# job-queue workload (\(MachineInfo.describe()), storage \(address == nil ? storage : "external"), "
                + "\(daemons) daemon(s), \(specs) spec(s))")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

        if !skipLoad {
            try await measureLoad(group: group)
        }
        if storage == "sqlite", address == nil {
            try measureSync()
            if restart { try await measureRestart(group: group) }
        }

        if ceiling {
            let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let (channel, port) = try await CeilingServer.start(group: serverGroup)
            print("socket ceiling (bare NIO server answering the cycle with fixed replies, batch 1):")
            for w in workers {
                let result = try await measureCycles(
                    servers: [DaemonUnderTest(host: "127.0.0.1", port: port, process: nil)], queued: 0, workers: w,
                    batch: 1,
                    warmup: warmup, duration: duration, group: group, setUp: false)
                print(String(format: "  W = %d: %.0f cycles/s", w, result.rate))
            }
            try await channel.close()
            try await serverGroup.shutdownGracefully()
        }

        print("| N queued | W | batch | units/s (median) | get_work p50 / p99 ms | update p50 / p99 ms |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n in units {
            for w in workers {
                for batch in batches {
                    var rates: [Double] = []
                    var gets: [Int64] = []
                    var updates: [Int64] = []
                    for _ in 0..<repeats {
                        var servers: [DaemonUnderTest] = []
                        for _ in 0..<max(1, daemons) {
                            servers.append(
                                try await DaemonUnderTest.start(
                                    address: address, executable: daemon, storage: storage, extra: daemonArguments))
                        }
                        let result = try await measureCycles(
                            servers: servers, queued: n, workers: w, batch: batch, warmup: warmup,
                            duration: duration, group: group)
                        for server in servers { await server.stop() }
                        rates.append(result.rate)
                        gets = result.getWork
                        updates = result.update
                    }
                    let median = rates.sorted()[rates.count / 2]
                    print(
                        String(
                            format: "| %d | %d | %d | %.0f | %.3f / %.3f | %.3f / %.3f |", n, w, batch, median,
                            LatencyRecorder.percentile(gets, 0.5), LatencyRecorder.percentile(gets, 0.99),
                            LatencyRecorder.percentile(updates, 0.5), LatencyRecorder.percentile(updates, 0.99)))
                }
            }
        }
        try await group.shutdownGracefully()
    }

    /// p50/p99 of writing 4 KiB and `fdatasync` on the filesystem the daemon's data directory is on.
    func measureSync() throws {
        let path = NSTemporaryDirectory() + "coordinate-bench-fsync-\(UUID().uuidString)"
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw BenchError("cannot create \(path)") }
        defer {
            close(descriptor)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x5a, count: 4096)
        var samples: [Int64] = []
        for index in 0..<500 {
            let start = ContinuousClock.now
            _ = block.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(index % 64) * 4096) }
            fdatasync(descriptor)
            let elapsed = ContinuousClock.now - start
            samples.append(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
        }
        print(
            String(
                format: "fdatasync (4 KiB write + fdatasync, 500 samples, %@): p50 %.3f ms, p99 %.3f ms",
                NSTemporaryDirectory(), LatencyRecorder.percentile(samples, 0.5),
                LatencyRecorder.percentile(samples, 0.99)))
    }

    /// Loads 10^6 units, stops the daemon (SIGTERM), starts it again on the same file and measures the time from
    /// exec until a `get_work` succeeds.
    func measureRestart(group: any EventLoopGroup) async throws {
        let directory = NSTemporaryDirectory() + "coordinate-bench-restart-\(UUID().uuidString)"
        let first = try await DaemonUnderTest.start(
            address: nil, executable: daemon, storage: storage, extra: daemonArguments, dataDirectory: directory)
        let connection = try await BenchConnection.connect(host: first.host, port: first.port, group: group)
        _ = try await connection.call("set_work_spec", [.map(CBORMap([("name", "restart")]))])
        for chunk in stride(from: 0, to: 1_000_000, by: 10_000) {
            let items = (chunk..<chunk + 10_000).map { index -> CBORValue in
                .tuple([.bytes(ReferenceKeys.key(index)), .map(CBORMap([("x", 1)]))])
            }
            _ = try await connection.call("add_work_units", ["restart", .array(items)])
        }
        await connection.close()
        await first.stop()
        let start = ContinuousClock.now
        let second = try await DaemonUnderTest.start(
            address: nil, executable: daemon, storage: storage, extra: daemonArguments, dataDirectory: directory)
        let probe = try await BenchConnection.connect(host: second.host, port: second.port, group: group)
        var granted = false
        while !granted {
            let result = try await probe.call("get_work", [.bytes("probe"), .map(CBORMap([("lease_time", 900)]))])
            if case .tuple(let parts) = result, case .tuple(let triple)? = parts.first, triple.count == 3,
                !triple[1].isNull
            {
                granted = true
            }
        }
        let elapsed = seconds(ContinuousClock.now - start)
        await probe.close()
        await second.stop()
        print(String(format: "restart with 10^6 units: %.2f s from exec until the first get_work succeeded", elapsed))
    }

    /// Bulk add of `loadUnits` units in calls of 10 000, one connection per daemon sending concurrently (call i
    /// through daemon i mod D into spec i mod S), and, with one daemon, VmRSS per queued unit.
    func measureLoad(group: any EventLoopGroup) async throws {
        var servers: [DaemonUnderTest] = []
        for _ in 0..<max(1, daemons) {
            servers.append(
                try await DaemonUnderTest.start(
                    address: address, executable: daemon, storage: storage, extra: daemonArguments))
        }
        var connections: [BenchConnection] = []
        for server in servers {
            connections.append(try await BenchConnection.connect(host: server.host, port: server.port, group: group))
        }
        let names = specs <= 1 ? ["bench-load"] : (0..<specs).map { "bench-load-\($0)" }
        // A database shared across runs (postgres) starts empty.
        _ = try await connections[0].call("clear", [])
        for name in names {
            _ = try await connections[0].call("set_work_spec", [.map(CBORMap([("name", .bytes(name))]))])
        }
        let before = servers.count == 1 ? servers[0].residentBytes() : nil
        let total = loadUnits
        let callSize = 10_000
        let calls = (total + callSize - 1) / callSize
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (index, connection) in connections.enumerated() {
                let stride = connections.count
                tasks.addTask {
                    for call in Swift.stride(from: index, to: calls, by: stride) {
                        let items = (call * callSize..<min((call + 1) * callSize, total)).map { key -> CBORValue in
                            .tuple([.bytes(ReferenceKeys.key(key)), .map(CBORMap([("x", 1)]))])
                        }
                        _ = try await connection.call(
                            "add_work_units", [.bytes(names[call % names.count]), .array(items)])
                    }
                }
            }
            try await tasks.waitForAll()
        }
        let elapsed = seconds(ContinuousClock.now - start)
        let after = servers.count == 1 ? servers[0].residentBytes() : nil
        for connection in connections { await connection.close() }
        for server in servers { await server.stop() }
        print(
            String(
                format:
                    "bulk add: %d units in calls of 10 000 through %d daemon(s) into %d spec(s): %.2f s, %.0f units/s",
                total, servers.count, names.count, elapsed, Double(total) / elapsed))
        if let before, let after {
            print(
                String(
                    format: "memory: VmRSS %.1f MiB before, %.1f MiB after %d units: %.0f bytes per queued unit",
                    Double(before) / 1_048_576, Double(after) / 1_048_576, total,
                    Double(after - before) / Double(total)))
        }
    }

    func measureCycles(
        servers: [DaemonUnderTest], queued: Int, workers: Int, batch: Int, warmup: Double, duration: Double,
        group: any EventLoopGroup, setUp: Bool = true
    ) async throws -> (rate: Double, getWork: [Int64], update: [Int64]) {
        let names = specs <= 1 ? ["bench"] : (0..<specs).map { "bench-\($0)" }
        var setup: BenchConnection?
        var refills: [Refiller] = []
        if setUp {
            let first = servers[0]
            let connection = try await BenchConnection.connect(host: first.host, port: first.port, group: group)
            // A database shared across runs (postgres) starts each case empty.
            _ = try await connection.call("clear", [])
            for name in names {
                _ = try await connection.call("set_work_spec", [.map(CBORMap([("name", .bytes(name))]))])
                let filler = Refiller(connection: connection, spec: name, target: max(1, queued / names.count))
                try await filler.fill()
                refills.append(filler)
            }
            setup = connection
        }
        let stats = CycleStats()
        var channels: [any Channel] = []
        for index in 0..<workers {
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            CycleHandler(worker: "worker-\(index)", batch: batch, stats: stats))
                    }
                }
                .connect(host: servers[index % servers.count].host, port: servers[index % servers.count].port).get()
            channels.append(channel)
        }
        let refillers = refills
        let refillTask = Task {
            while !Task.isCancelled {
                for refill in refillers { try await refill.topUp() }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await Task.sleep(for: .seconds(warmup))
        stats.measuring.store(true, ordering: .relaxed)
        let start = ContinuousClock.now
        try await Task.sleep(for: .seconds(duration))
        stats.measuring.store(false, ordering: .relaxed)
        let elapsed = seconds(ContinuousClock.now - start)
        refillTask.cancel()
        for channel in channels { try? await channel.close() }
        _ = try? await refillTask.value
        await setup?.close()
        let latencies = stats.latencies.withLockedValue { $0 }
        return (Double(stats.units.load(ordering: .relaxed)) / elapsed, latencies.getWork, latencies.update)
    }
}

/// Keeps N units available in the benchmark spec by adding fresh reference units (keys `u%07d`, data `{x: 1}`)
/// in calls of at most 10 000 whenever the available count drops.
final class Refiller: @unchecked Sendable {
    // @unchecked Sendable: used by one task at a time (fill, then keepFilled).
    let connection: BenchConnection
    let spec: String
    let target: Int
    private var nextKey = 0

    init(connection: BenchConnection, spec: String, target: Int) {
        self.connection = connection
        self.spec = spec
        self.target = target
    }

    func available() async throws -> Int {
        let result = try await connection.call("count_work_units", [.bytes(spec)])
        guard case .tuple(let parts) = result, case .map(let counts) = parts.first else { return 0 }
        return Int(counts.pairs.first { $0.key == .int(1) }?.value.int64Value ?? 0)
    }

    func add(_ count: Int) async throws {
        var remaining = count
        while remaining > 0 {
            let chunk = min(10_000, remaining)
            let items = (nextKey..<nextKey + chunk).map { index -> CBORValue in
                .tuple([.bytes(ReferenceKeys.key(index)), .map(CBORMap([("x", 1)]))])
            }
            nextKey += chunk
            remaining -= chunk
            _ = try await connection.call("add_work_units", [.bytes(spec), .array(items)])
        }
    }

    func fill() async throws { try await add(target) }

    /// Adds units once the available count has dropped by a tenth of the target (or 10 000).
    func topUp() async throws {
        let missing = target - (try await available())
        if missing >= max(1, target / 10) || missing >= 10_000 { try await add(missing) }
    }
}

/// The server being measured: a spawned `coordinated` or an external address.
final class DaemonUnderTest: @unchecked Sendable {
    // @unchecked Sendable: the process handle is only used by the benchmark's main task; dataDirectory is set
    // once, right after creation, before the object is shared.
    let host: String
    let port: Int
    let process: Process?

    init(host: String, port: Int, process: Process?) {
        self.host = host
        self.port = port
        self.process = process
    }

    static func executablePath(_ explicit: String?) -> String {
        if let explicit { return explicit }
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("coordinated").path
    }

    /// The data directory of the spawned daemon (a fresh temporary directory per start unless given).
    var dataDirectory: String?

    static func start(
        address: String?, executable: String?, storage: String, extra: String, dataDirectory: String? = nil
    ) async throws -> DaemonUnderTest {
        if let address {
            guard let (host, port) = CoordinateConfiguration.splitAddress(address) else {
                throw BenchError("bad address \(address)")
            }
            return DaemonUnderTest(host: host, port: port, process: nil)
        }
        let port = Int.random(in: 20000...40000)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executablePath(executable))
        let directory = dataDirectory ?? NSTemporaryDirectory() + "coordinate-bench-\(UUID().uuidString)"
        var arguments = [
            "--port", String(port), "--http-port", "0", "--storage", storage, "--data-dir", directory, "-q",
        ]
        arguments += extra.split(separator: " ").map(String.init)
        process.arguments = arguments
        try process.run()
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
            {
                try? await channel.close()
                let server = DaemonUnderTest(host: "127.0.0.1", port: port, process: process)
                server.dataDirectory = directory
                try await server.waitForStorage()
                return server
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.terminate()
        throw BenchError("coordinated did not start")
    }

    /// Waits until storage-backed requests succeed (durable backends initialise after the listener opens).
    func waitForStorage() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let connection = try await BenchConnection.connect(host: host, port: port, group: group)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if (try? await connection.call("list_work_specs", [.map(CBORMap())])) != nil {
                await connection.close()
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        await connection.close()
        throw BenchError("storage did not become available")
    }

    /// VmRSS of the spawned daemon, from /proc/PID/status.
    func residentBytes() -> Int? {
        guard let process,
            let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        let digits = line.filter(\.isNumber)
        return Int(digits).map { $0 * 1024 }
    }

    func stop() async {
        guard let process, process.isRunning else { return }
        process.terminate()
        for _ in 0..<200 where process.isRunning { try? await Task.sleep(for: .milliseconds(25)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
