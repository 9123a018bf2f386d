import ArgumentParser
import CoordinateClient
import CoordinateConfig
import CoordinateWorker
import Dispatch
import Foundation
import Logging

@main
/// `coordinate-worker`: runs the units of every work spec that names a shell `command` (see ShellCommandTask).
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinate-worker",
        abstract: "Run Coordinate work units whose work spec names a shell command.",
        discussion: """
            A work spec is run by this worker when its data has a `command` key: a list of strings (run directly) \
            or a string (run with /bin/sh -c). Each unit's key and data arrive on the command's stdin as one JSON \
            object {"work_spec", "key", "key_base64"?, "data"}; COORDINATE_WORK_SPEC and \
            COORDINATE_UNIT_KEY_BASE64 are set in its environment. Exit status 0 finishes the unit; anything else \
            fails it with the end of stderr as the traceback. SIGTERM or SIGINT stops taking work and lets \
            running commands finish (see --drain-seconds).
            """)

    @Option(name: [.short, .customLong("config")], help: "YAML configuration file (the `coordinate:` block).")
    var config: String?

    @Option(help: "CBOR-RPC address of coordinated (host:port); overrides the configuration.")
    var address: String?

    @Flag(help: "Speak TLS to coordinated (started with tls_cert_file), trusting the system's root certificates.")
    var tls = false

    @Option(help: "Speak TLS to coordinated, trusting only the certificates in this PEM file (implies --tls).")
    var tlsCaFile: String?

    @Option(name: [.customShort("n"), .long], help: "Units run at once.")
    var concurrency: Int = 4

    @Option(help: "Parent worker id (default: <host>-<pid>-<random>).")
    var workerID: String?

    @Option(name: .customLong("spec"), help: "Only run this work spec (repeatable).")
    var specs: [String] = []

    @Option(help: "Seconds an idle slot waits before asking for work again.")
    var pollInterval: Double = 1

    @Option(help: "Seconds between worker heartbeats.")
    var heartbeatInterval: Double = 15

    @Option(help: "Lease in seconds (default: coordinate.default_lifetime).")
    var lease: Double?

    @Option(help: "Seconds running commands get to finish after SIGTERM before they are stopped and released.")
    var drainSeconds: Double = 60

    @Flag(name: .shortAndLong, help: "Log debug messages.")
    var verbose = false

    @Flag(help: "Print the version and exit.")
    var version = false

    func run() async throws {
        if version {
            print("coordinate-worker \(CoordinateVersion.current)")
            return
        }
        var warnings: [String] = []
        var configuration = CoordinateConfiguration()
        do {
            if let config { configuration = try CoordinateConfiguration.load(path: config, warnings: &warnings) }
        } catch {
            throw ValidationError("configuration error: \(error)")
        }
        if let address { configuration.address = address }
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "coordinate-worker")
        for warning in warnings { logger.warning("\(warning)") }

        var settings = ClientSettings(configuration: configuration)
        settings.tls = tlsCaFile.map { ClientTLS(trustRootsFile: $0) } ?? (tls ? ClientTLS() : nil)
        let client = CoordinateClient(settings: settings)
        let options = WorkerOptions(
            workerID: workerID ?? WorkerOptions.defaultWorkerID(), concurrency: concurrency, pollInterval: pollInterval,
            heartbeatInterval: heartbeatInterval, leaseSeconds: lease,
            maxTaskSeconds: configuration.worker.maxTaskSeconds?.doubleValue, drainSeconds: drainSeconds,
            specNames: specs.isEmpty ? nil : specs)
        let runtime = WorkerRuntime(
            client: client, registry: TaskRegistry(runsShellCommands: true), options: options, logger: logger)
        let signals = StopSignals { runtime.stop() }
        defer { signals.cancel() }
        do {
            try await runtime.run()
        } catch {
            logger.error("cannot start: \(error)")
            throw ExitCode(3)
        }
    }
}

/// Turns SIGTERM and SIGINT into a graceful stop.
final class StopSignals {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable () -> Void) {
        sources = [SIGTERM, SIGINT].map { number in
            #if canImport(Darwin)
            // Darwin delivers signal sources through kqueue alongside the default action, which must be off.
            // On Linux Dispatch installs a handler of its own; an ignored disposition there would be inherited by
            // every command the worker runs, making them deaf to the SIGTERM that stops them.
            signal(number, SIG_IGN)
            #endif
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
