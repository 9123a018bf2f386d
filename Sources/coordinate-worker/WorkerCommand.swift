import ArgumentParser
import CoordinateClient
import CoordinateConfig
import CoordinateWorker
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
///
/// A plain signal handler that writes to a pipe, read by a thread of its own, rather than a Dispatch signal
/// source: on Linux those receive signals through `signalfd`, which sees a signal only when it is blocked in the
/// thread the kernel delivers it to, and a SIGTERM delivered to another thread was missed (a CI run saw a worker
/// keep taking work for ten seconds after SIGTERM). Handlers, unlike ignored dispositions and blocked signal
/// masks, are reset on exec, so the commands the worker runs still stop on SIGTERM.
final class StopSignals {
    private let readDescriptor: Int32

    init(_ handler: @escaping @Sendable () -> Void) {
        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else {
            fatalError("coordinate-worker: cannot create the signal pipe: \(String(cString: strerror(errno)))")
        }
        for descriptor in descriptors { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        readDescriptor = descriptors[0]
        stopSignalWriteDescriptor = descriptors[1]
        for number in [SIGTERM, SIGINT] { signal(number, stopSignalHandler) }
        let reader = readDescriptor
        Thread.detachNewThread {
            var byte: UInt8 = 0
            while true {
                let count = read(reader, &byte, 1)
                if count == 1 {
                    handler()
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    close(reader)  // the write end was closed by cancel()
                    return
                }
            }
        }
    }

    /// Restores the default dispositions and ends the reader thread.
    func cancel() {
        for number in [SIGTERM, SIGINT] { signal(number, SIG_DFL) }
        let writer = stopSignalWriteDescriptor
        stopSignalWriteDescriptor = -1
        close(writer)
    }
}

/// The pipe ``stopSignalHandler`` writes to; -1 when no ``StopSignals`` is active.
// nonisolated(unsafe): set by StopSignals before the handler is installed and reset after it is removed; the
// handler only reads it (a signal handler cannot take a lock).
nonisolated(unsafe) private var stopSignalWriteDescriptor: Int32 = -1

/// Async-signal-safe: one `write` of one byte, with `errno` preserved for the interrupted code.
private let stopSignalHandler: @convention(c) (Int32) -> Void = { number in
    let saved = errno
    var byte = UInt8(truncatingIfNeeded: number)
    _ = write(stopSignalWriteDescriptor, &byte, 1)
    errno = saved
}
