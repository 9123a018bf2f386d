import ArgumentParser
import CBOR
import CoordinateConfig
import CoordinateEngine
import CoordinateRPC
import CoordinateServer
import Foundation
import Logging
import NIOCore
import NIOPosix

/// `coordinate-bench`: throughput and latency measurements (BENCHMARKS.md records the results).
@main
struct CoordinateBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinate-bench",
        abstract: "Benchmarks for the Coordinate codec, request path and job queue.",
        subcommands: [
            CodecBench.self, RequestPathBench.self, JobQueueBench.self, EngineBench.self, PostgresRoundTripBench.self,
        ])
}

/// Machine facts printed with every report.
enum MachineInfo {
    static func describe() -> String {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        var model = "unknown CPU"
        if let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("model name") })
        {
            model =
                line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? model
        }
        return "\(cores) cores, \(model)"
    }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

struct CodecBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec", abstract: "Encode/decode throughput for typical messages.")

    @Option(help: "Seconds per measurement.")
    var duration: Double = 2

    func run() throws {
        print("# codec throughput (\(MachineInfo.describe()))")
        let getWorkResponse = RPCDispatcher.successResponse(
            id: 13, result: .tuple([.tuple(["ws1", "u0000001", .map(CBORMap([("x", 1)]))]), .null]))
        var units: [CBORValue] = []
        var size = 0
        var index = 0
        while size < 1 << 20 {
            let key = CBORValue.bytes(String(format: "u%07d", index))
            let data = CBORValue.map(
                CBORMap([("x", .int(index)), ("payload", .bytes([UInt8](repeating: 0x61, count: 100)))]))
            units.append(.tuple([key, data]))
            size += 130
            index += 1
        }
        let batch = CBORValue.map(
            CBORMap([("id", 1), ("method", "add_work_units"), ("params", ["ws1", .array(units)])]))
        for (name, value) in [("get_work response", getWorkResponse), ("1 MiB add_work_units batch", batch)] {
            let bytes = CBOREncoder.encodeEnvelope(value)
            let encode = measure {
                _ = CBOREncoder.encodeEnvelope(value)
            }
            let decode = measure {
                _ = bytes.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 256) }
            }
            var framer = CBORStreamFramer(maxMessageBytes: 64 << 20, maxDepth: 256)
            let frame = measure {
                framer.reset()
                _ = bytes.withUnsafeBytes { framer.next(in: $0) }
            }
            let mb = Double(bytes.count) / 1e6
            print(
                String(
                    format:
                        "%@ (%d bytes): encode %.0f msg/s (%.0f MB/s), decode %.0f msg/s (%.0f MB/s), frame %.0f msg/s",
                    name, bytes.count, encode, encode * mb, decode, decode * mb, frame))
        }
        // What the durable backends add to every unit write and read (StoredData): a CRC-32C of the data, and
        // on reading also the framer's well-formedness pass.
        for size in [16, 128, 1024, 1 << 20] {
            let data = CBOREncoder.encode(.map(CBORMap([("payload", .bytes([UInt8](repeating: 0x61, count: size)))])))
            let checksum = StoredData.checksum(data)
            let write = measure { _ = StoredData.checksum(data) }
            let read = measure { _ = StoredData.verified(data, checksum: checksum) }
            print(
                String(
                    format: "unit data of %d bytes: checksum %.0f ns (%.0f MB/s), verify on read %.0f ns",
                    data.count, 1e9 / write, write * Double(data.count) / 1e6, 1e9 / read))
        }
    }

    /// Runs `body` repeatedly for `duration` seconds and returns iterations per second.
    func measure(_ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        var iterations = 0
        while clock.now - start < .seconds(duration) {
            for _ in 0..<16 { body() }
            iterations += 16
        }
        return Double(iterations) / seconds(clock.now - start)
    }
}

/// A module with one method that does nothing: the cost of the request path itself.
struct PingModule: RPCModule {
    let name = "Bench"
    var methods: [RPCMethod] { [RPCMethod("ping") { _ in .value(.null) }] }
}

struct RequestPathBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc",
        abstract:
            "Round trips of a trivial method through the daemon versus a bare NIO echo server with the same framing.")

    @Option(help: "Connection counts to measure.")
    var connections: [Int] = [1, 8, 64]

    @Option(help: "Seconds of warm-up per case.")
    var warmup: Double = 1

    @Option(help: "Seconds measured per case.")
    var duration: Double = 5

    @Option(help: "Event-loop threads for each server.")
    var serverThreads: Int = 2

    func run() async throws {
        print("# request path: trivial method vs echo (\(MachineInfo.describe()))")
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var configuration = CoordinateConfiguration()
        configuration.server.port = 0
        configuration.server.httpPort = 0
        let daemon = try Daemon(
            configuration: configuration, modules: [PingModule()], logger: logger, eventLoopThreads: serverThreads)
        let daemonPort = try await daemon.start().cborRPC.port!
        let echoGroup = MultiThreadedEventLoopGroup(numberOfThreads: serverThreads)
        let request = CBOREncoder.encodeEnvelope(.map(CBORMap([("id", 1), ("method", "ping"), ("params", [])])))
        let reply = CBOREncoder.encodeEnvelope(RPCDispatcher.successResponse(id: 1, result: .null))
        let (echoChannel, echoPort) = try await EchoServer.start(reply: reply, group: echoGroup)
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        print("| connections | pipelined depth | daemon req/s | echo req/s | ratio |")
        print("|---:|---:|---:|---:|---:|")
        for count in connections {
            for depth in [1, 32] {
                let echo = try await LoadRunner.measure(
                    port: echoPort, request: request, connections: count, depth: depth, warmup: warmup,
                    duration: duration, group: clientGroup)
                let ours = try await LoadRunner.measure(
                    port: daemonPort, request: request, connections: count, depth: depth, warmup: warmup,
                    duration: duration, group: clientGroup)
                print(String(format: "| %d | %d | %.0f | %.0f | %.2f |", count, depth, ours, echo, ours / echo))
            }
        }
        try await echoChannel.close()
        await daemon.shutdown()
        try await echoGroup.shutdownGracefully()
        try await clientGroup.shutdownGracefully()
    }
}
