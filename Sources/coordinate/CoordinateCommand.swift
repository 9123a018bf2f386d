import ArgumentParser
import CBOR
import CoordinateClient
import CoordinateConfig
import Foundation

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: [.short, .customLong("config")], help: "YAML configuration file (the `coordinate:` block).")
    var config: String?

    @Option(help: "CBOR-RPC address of coordinated (host:port); overrides the configuration.")
    var address: String?

    @Flag(help: "Print machine-readable JSON instead of tables.")
    var json = false

    @Flag(help: "Speak TLS to coordinated (started with tls_cert_file), trusting the system's root certificates.")
    var tls = false

    @Option(help: "Speak TLS to coordinated, trusting only the certificates in this PEM file (implies --tls).")
    var tlsCaFile: String?

    /// The effective configuration: the file (if any) with `--address` applied.
    func configuration() throws -> CoordinateConfiguration {
        var warnings: [String] = []
        var configuration = CoordinateConfiguration()
        if let config { configuration = try CoordinateConfiguration.load(path: config, warnings: &warnings) }
        for warning in warnings { printError("coordinate: warning: \(warning)") }
        if let address {
            guard CoordinateConfiguration.splitAddress(address) != nil else {
                throw CLIError.usage("invalid --address \(address) (expected host:port)")
            }
            configuration.address = address
        }
        return configuration
    }

    func client() throws -> CoordinateClient {
        var settings = ClientSettings(configuration: try configuration())
        settings.tls = tlsCaFile.map { ClientTLS(trustRootsFile: $0) } ?? (tls ? ClientTLS() : nil)
        return CoordinateClient(settings: settings)
    }
}

@main
struct CoordinateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinate",
        abstract: "Administer a Coordinate job queue over CBOR-RPC.",
        discussion: """
            Exit status: 0 success; 1 the server reported a failure; 2 usage or configuration error; \
            3 cannot connect; 4 not found.
            """,
        version: "coordinate \(CoordinateVersion.current)",
        subcommands: [
            Summary.self, Specs.self, SpecCommand.self, Units.self, Workers.self, Locks.self, Clear.self,
            RawRPC.self, Export.self, Import.self,
        ])

    /// Like the Python CLI, `coordinate -c FILE summary` takes global options before the subcommand; the parser
    /// reads them in each subcommand, so they are moved after it (before a `--`, if any).
    static func movingLeadingGlobalOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if ["-c", "--config", "--address", "--http-url", "--tls-ca-file"].contains(argument),
                index + 1 < arguments.count
            {
                leading += arguments[index...index + 1]
                index += 2
            } else if argument.hasPrefix("--config=") || argument.hasPrefix("--address=")
                || argument.hasPrefix("--http-url=") || argument.hasPrefix("--tls-ca-file=")
                || argument == "--json" || argument == "--tls"
            {
                leading.append(argument)
                index += 1
            } else {
                break
            }
        }
        guard !leading.isEmpty, index < arguments.count else { return arguments }
        var rest = Array(arguments[index...])
        let insertAt = rest.firstIndex(of: "--") ?? rest.count
        rest.insert(contentsOf: leading, at: insertAt)
        return rest
    }

    /// Runs the command line with the documented exit statuses.
    static func main() async {
        do {
            var command = try parseAsRoot(Self.movingLeadingGlobalOptions(Array(CommandLine.arguments.dropFirst())))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            printError("coordinate: \(error.description)")
            Foundation.exit(error.status)
        } catch let error as CoordinateClientError {
            let failure = CLIError.from(error)
            printError("coordinate: \(failure.description)")
            Foundation.exit(failure.status)
        } catch let error as ConfigurationError {
            printError("coordinate: configuration error: \(error)")
            Foundation.exit(2)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            if let exit = error as? ExitCode { Foundation.exit(exit.rawValue) }
            // Everything else ArgumentParser reports is a usage error.
            printError(fullMessage(for: error))
            Foundation.exit(2)
        }
    }
}
