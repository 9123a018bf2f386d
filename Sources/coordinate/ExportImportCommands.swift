import ArgumentParser
import CoordinateJSON
import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Options for the commands that use the daemon's HTTP listener.
struct HTTPOptions: ParsableArguments {
    @Option(help: "Base URL of coordinated's HTTP listener.")
    var httpURL = "http://127.0.0.1:5980/"

    /// `…/namespace/NAME/what` with the name encoded as rest-api.md §1.3 requires.
    func url(namespace: String, _ what: String) throws -> URL {
        var base = httpURL
        if !base.hasSuffix("/") { base += "/" }
        guard
            let url = URL(string: base + "namespace/" + CoordinateJSON.pathSegment(Array(namespace.utf8)) + "/" + what)
        else { throw CLIError.usage("invalid --http-url \(httpURL)") }
        return url
    }
}

/// One HTTP exchange with the daemon, mapped to the CLI's exit statuses.
enum HTTPExchange {
    static func perform(_ request: URLRequest, token: String?) async throws -> Data {
        var request = request
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw CLIError(
                status: 3,
                description: "cannot reach \(request.url?.absoluteString ?? "?"): \(error.localizedDescription)")
        }
        guard let http = response as? HTTPURLResponse else { throw CLIError.failed("not an HTTP response") }
        guard (200..<300).contains(http.statusCode) else {
            let message = (try? JSONValue.parse(Array(data)))?["message"]?.stringValue ?? "HTTP \(http.statusCode)"
            throw CLIError(status: http.statusCode == 404 ? 4 : 1, description: message)
        }
        return data
    }
}

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a whole namespace (specs, units with attempts, workers, locks) as JSON lines to stdout.",
        discussion:
            "Uses the HTTP listener; `coordinate import` restores the output into an empty namespace of any backend.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var http: HTTPOptions
    @Argument(help: "Namespace (\"\" is the default CBOR-RPC namespace).") var namespace: String

    func run() async throws {
        let token = try options.configuration().server.httpToken
        let data = try await HTTPExchange.perform(
            URLRequest(url: try http.url(namespace: namespace, "export")), token: token)
        FileHandle.standardOutput.write(data)
        let lines = data.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
        printError("exported \(lines) lines from namespace \(namespace.isEmpty ? "\"\"" : namespace)")
    }
}

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a `coordinate export` (JSON lines on stdin, or --file) into an empty namespace.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var http: HTTPOptions
    @Argument(help: "Target namespace; it must hold no specs, workers or locks.") var namespace: String
    @Option(name: [.short, .long], help: "Read from this file instead of stdin.") var file: String?

    func run() async throws {
        let token = try options.configuration().server.httpToken
        let body: Data
        if let file, file != "-" {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw CLIError.usage("cannot read \(file)")
            }
            body = contents
        } else {
            body = FileHandle.standardInput.readDataToEndOfFile()
        }
        var request = URLRequest(url: try http.url(namespace: namespace, "import"))
        request.httpMethod = "POST"
        request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.httpBody = body
        let data = try await HTTPExchange.perform(request, token: token)
        let counts = try JSONValue.parse(Array(data))
        if options.json {
            print(counts.prettyPrinted())
        } else {
            let order = ["work_specs", "work_units", "attempts", "workers", "locks"]
            print(
                "imported "
                    + order.map { "\(counts[$0]?.intValue ?? 0) \($0.replacingOccurrences(of: "_", with: " "))" }
                    .joined(separator: ", "))
        }
    }
}
