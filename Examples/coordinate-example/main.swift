// The README's Swift examples, as a program you can run:
//
//   swift run coordinate-example submit 127.0.0.1:5932     # creates the `thumbnails` spec and 100 units
//   swift run coordinate-example work 127.0.0.1:5932       # runs them with 8 concurrent tasks, then stops
import CBOR
import CoordinateClient
import CoordinateWorker
import Foundation
import Logging

let arguments = CommandLine.arguments
guard arguments.count == 3, ["submit", "work"].contains(arguments[1]) else {
    print("usage: coordinate-example submit|work HOST:PORT")
    exit(2)
}
let client = CoordinateClient(settings: ClientSettings(address: arguments[2]))

if arguments[1] == "submit" {
    // A work spec, then units: a key, data, and optionally a priority.
    try await client.setWorkSpec(["name": "thumbnails", "min_gb": 1])
    try await client.addWorkUnits(
        "thumbnails",
        (1...100).map { WorkUnitSubmission(key: .text("photo-\($0)"), data: ["width": .int(64 * $0)]) })
    try await printCounts()
} else {
    // A worker: handlers by spec name; a returned map becomes the unit's data; throwing fails the unit.
    var registry = TaskRegistry()
    registry.register(spec: "thumbnails") { task in
        let width = task.data.mapValue?["width"]?.int64Value ?? 0
        guard width > 0 else { throw ExampleError.badWidth }
        return ["width": .int(width), "thumbnail": .text("thumb-\(width).png")]
    }
    let runtime = WorkerRuntime(
        client: client, registry: registry, options: WorkerOptions(concurrency: 8),
        logger: Logger(label: "example"))
    // Stop once nothing is left; a long-running worker would stop on SIGTERM instead.
    Task {
        while try await client.countWorkUnits("thumbnails")[.available] ?? 0 > 0 {
            try await Task.sleep(for: .milliseconds(200))
        }
        runtime.stop()
    }
    try await runtime.run()
    try await printCounts()
}

func printCounts() async throws {
    let counts = try await client.countWorkUnits("thumbnails")
    print(counts.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
}

enum ExampleError: Error { case badWidth }
