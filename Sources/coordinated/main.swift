import ArgumentParser
import CoordinateConfig
import CoordinateEngine
import CoordinateServer
import Foundation
import Logging
import ServiceLifecycle

/// `coordinated`: the Coordinate daemon (spec README, "coordinated command line").
struct CoordinatedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinated",
        abstract: "Coordinate job-coordination daemon (CBOR-RPC on port 5932).")

    @Option(name: [.customShort("c"), .long], help: "YAML configuration file.")
    var config: String?

    @Option(help: "CBOR-RPC bind address (coordinate.server.host).")
    var host: String?

    @Option(name: [.customShort("p"), .long], help: "CBOR-RPC port (coordinate.server.port).")
    var port: String?

    @Option(
        name: .customLong("http-port"),
        help: "HTTP port; 0 disables the HTTP listener, auto binds a free port (see --ports-file).")
    var httpPort: String?

    @Option(help: "Storage backend: memory, sqlite or postgres.")
    var storage: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (coordinate.server.data_dir).")
    var dataDir: String?

    @Option(help: "Write the process id to this file once the listeners are open.")
    var pid: String?

    @Option(
        name: .customLong("ports-file"),
        help: ArgumentHelp(
            "Write the bound ports as JSON to this file once the listeners are open.",
            discussion: #"For example {"cborrpc": 5932, "http": 5980}; "http" is null when HTTP is disabled. "#
                + "With --port 0 and --http-port auto the kernel chooses the ports."))
    var portsFile: String?

    @Flag(name: [.customShort("v"), .long], help: "Debug logging.")
    var verbose = false

    @Flag(name: [.customShort("q"), .long], help: "Warnings and errors only.")
    var quiet = false

    @Flag(name: .customLong("dump-config"), help: "Print the effective configuration as YAML and exit.")
    var dumpConfig = false

    @Flag(help: "Print the version and exit.")
    var version = false

    @Option(
        name: .customLong("debug-local-clock-offset"),
        help: ArgumentHelp(
            "Test only: shift the daemon's local clock by this many seconds (needs COORDINATE_TESTING=1).",
            visibility: .hidden))
    var debugLocalClockOffset: Double?

    /// Applies the file and the command-line overrides; errors name their source as the spec requires.
    func effectiveConfiguration(warnings: inout [String]) throws(ConfigurationError) -> CoordinateConfiguration {
        var configuration = CoordinateConfiguration()
        if let config {
            configuration = try CoordinateConfiguration.load(path: config, warnings: &warnings)
        }
        let source = "command line"
        if let host { configuration.server.host = host }
        if let port {
            guard let value = Int(port), (0...65535).contains(value) else {
                throw ConfigurationError(
                    source: source, key: "coordinate.server.port", reason: "expected an integer port")
            }
            configuration.server.port = value
        }
        if let httpPort {
            if httpPort == "auto" {
                configuration.server.httpPort = CoordinateConfiguration.Server.automaticPort
            } else {
                guard let value = Int(httpPort), (0...65535).contains(value) else {
                    throw ConfigurationError(
                        source: source, key: "coordinate.server.http_port", reason: "expected an integer port or auto")
                }
                configuration.server.httpPort = value
            }
        }
        if let storage {
            guard let kind = StorageKind(rawValue: storage) else {
                throw ConfigurationError(
                    source: source, key: "coordinate.server.storage", reason: "unknown storage backend \(storage)")
            }
            configuration.server.storage = kind
        }
        if let dataDir { configuration.server.dataDir = dataDir }
        try configuration.validate(source: config ?? source)
        return configuration
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("coordinated: \(message)\n".utf8))
    exit(2)
}

let command: CoordinatedCommand
do {
    command = try CoordinatedCommand.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    let exitCode = CoordinatedCommand.exitCode(for: error)
    if exitCode == .success {
        // --help
        print(CoordinatedCommand.fullMessage(for: error))
        exit(0)
    }
    fail(CoordinatedCommand.message(for: error))
}

if command.version {
    print("coordinated \(CoordinateVersion.current)")
    exit(0)
}

var warnings: [String] = []
let configuration: CoordinateConfiguration
do {
    configuration = try command.effectiveConfiguration(warnings: &warnings)
} catch {
    fail("configuration error: \(error)")
}

if command.dumpConfig {
    print(configuration.effectiveTree().yaml(), terminator: "")
    exit(0)
}

let level: Logger.Level = command.verbose ? .debug : (command.quiet ? .warning : .info)
let logFormat = configuration.server.logFormat
LoggingSystem.bootstrap { label in StderrLogHandler(label: label, format: logFormat, level: level) }
let logger = Logger(label: "coordinated")
for warning in warnings { logger.warning("\(warning)") }

var clock = SystemClock()
if let offset = command.debugLocalClockOffset {
    // Lets tests run daemons whose local clocks disagree without touching the system clock (storage.md §7.3).
    guard ProcessInfo.processInfo.environment["COORDINATE_TESTING"] == "1" else {
        fail("--debug-local-clock-offset is for tests only (set COORDINATE_TESTING=1)")
    }
    clock = SystemClock(offsetMicroseconds: Int64(offset * 1_000_000))
}

let daemon: Daemon
do {
    daemon = try Daemon(
        configuration: configuration, configurationSource: command.config ?? "configuration", logger: logger,
        clock: clock)
} catch {
    fail(error.description)
}

// Storage initialises in the background while the listeners already answer (storage.md §5.2).
Task {
    do {
        try await daemon.initializeStorage()
    } catch {
        FileHandle.standardError.write(Data("coordinated: \(error)\n".utf8))
        exit(2)
    }
}

let serviceGroup = ServiceGroup(
    configuration: ServiceGroupConfiguration(
        services: [.init(service: DaemonService(daemon: daemon, pidFile: command.pid, portsFile: command.portsFile))],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
do {
    try await serviceGroup.run()
} catch let error as DaemonStartError {
    fail(error.description)
} catch {
    logger.error("service group failed: \(error)")
}
exit(0)
