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
        guard (200..<300).contains(http.statusCode) else { throw failure(status: http.statusCode, body: data) }
        return data
    }

    /// The CLI error for an error response: its `message`, exit status 4 for 404, else 1.
    static func failure(status: Int, body: Data) -> CLIError {
        let message = (try? JSONValue.parse(Array(body)))?["message"]?.stringValue ?? "HTTP \(status)"
        return CLIError(status: status == 404 ? 4 : 1, description: message)
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
        var request = URLRequest(url: try http.url(namespace: namespace, "export"))
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        // The export streams: written to stdout as it arrives, never held whole.
        let download = StreamingDownload()
        let outcome = await download.run(request)
        switch outcome {
        case .unreachable(let reason):
            throw CLIError(status: 3, description: "cannot reach \(request.url?.absoluteString ?? "?"): \(reason)")
        case .refused(let status, let body):
            throw HTTPExchange.failure(status: status, body: body)
        case .cutShort(let lines, let reason):
            throw CLIError.failed("export incomplete after \(lines) lines: \(reason); the output is not a whole export")
        case .complete(let lines):
            printError("exported \(lines) lines from namespace \(namespace.isEmpty ? "\"\"" : namespace)")
        }
    }
}

/// A GET whose successful body goes to stdout as it arrives.
final class StreamingDownload: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    // @unchecked Sendable: the session calls the delegate methods one at a time on its delegate queue (a serial
    // OperationQueue); `run` reads the state only after the task completed.
    enum Outcome {
        case unreachable(String)
        case refused(status: Int, body: Data)
        case cutShort(lines: Int, reason: String)
        case complete(lines: Int)
    }

    private var status = 0
    private var errorBody = Data()
    private var lines = 0
    private var continuation: CheckedContinuation<Outcome, Never>?

    func run(_ request: URLRequest) async -> Outcome {
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let session = URLSession(configuration: .default, delegate: self, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        return await withCheckedContinuation { continuation in
            queue.addOperation {
                self.continuation = continuation
                session.dataTask(with: request).resume()
            }
        }
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        status = (response as? HTTPURLResponse)?.statusCode ?? 0
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard (200..<300).contains(status) else {
            errorBody.append(data)
            return
        }
        FileHandle.standardOutput.write(data)
        lines += data.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let outcome: Outcome
        if let error {
            outcome =
                status == 0
                ? .unreachable(error.localizedDescription)
                : .cutShort(lines: lines, reason: error.localizedDescription)
        } else if !(200..<300).contains(status) {
            outcome = .refused(status: status, body: errorBody)
        } else {
            outcome = .complete(lines: lines)
        }
        continuation?.resume(returning: outcome)
        continuation = nil
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
