import ArgumentParser
import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation

struct Workers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live workers: mode, parent's children and heartbeat data.")

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let client = try options.client()
        let modes = try await client.workerModes()
        let stats = try await client.workerStats()
        // Children and the units they hold, from every worker's point of view as a parent.
        var parentOf: [CBORValue: CBORValue] = [:]
        var holding: [CBORValue: Int] = [:]
        for (worker, _) in modes {
            guard let id = worker.stringValue else { continue }
            for child in try await client.childWorkUnits(parent: id) {
                parentOf[child.workerID] = worker
                holding[child.workerID] = child.units.count
            }
        }
        var infos: [CBORValue?] = []
        for (worker, _) in modes {
            infos.append(try await worker.stringValue.asyncMap { try await client.workerInfo(workerID: $0) } ?? nil)
        }
        if options.json {
            let items: [JSONValue] = zip(modes, infos).map { entry, info in
                .object([
                    ("worker_id", .string(Display.name(entry.workerID))), ("mode", Display.json(entry.mode)),
                    ("parent", parentOf[entry.workerID].map { .string(Display.name($0)) } ?? .null),
                    ("units", holding[entry.workerID].map { .int(Int64($0)) } ?? .null),
                    ("info", info.map(Display.json) ?? .null),
                ])
            }
            print(
                JSONValue.object([
                    ("workers", .array(items)), ("num_workers", .int(Int64(stats.workers))),
                    ("num_children", .int(Int64(stats.parents))),
                ]).prettyPrinted())
            return
        }
        var table = Table(headers: ["WORKER", "MODE", "PARENT", "UNITS", "INFO"], numeric: [3])
        for (entry, info) in zip(modes, infos) {
            table.rows.append([
                Display.name(entry.workerID), entry.mode.isNull ? "-" : Display.name(entry.mode),
                parentOf[entry.workerID].map(Display.name) ?? "", holding[entry.workerID].map(String.init) ?? "",
                info.map { Display.brief($0) } ?? "",
            ])
        }
        print(table.render(), terminator: "")
        print("\(stats.workers) live workers, \(stats.parents) with children")
    }
}

extension Optional {
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}

struct Locks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Held locks (list_locks), sorted by path.")

    @OptionGroup var options: GlobalOptions
    @Argument(help: "Only locks whose path starts with this label.") var prefix: String?

    func run() async throws {
        let locks = try await options.client().listLocks(prefix: prefix.map { .text($0) })
        if options.json {
            let items: [JSONValue] = locks.map { lock in
                .object([
                    ("path", .array(lock.path.map(Display.json))), ("owner", Display.json(lock.owner)),
                    ("expires", .string(Display.time(lock.deadline))),
                ])
            }
            print(JSONValue.array(items).prettyPrinted())
            return
        }
        var table = Table(headers: ["PATH", "OWNER", "EXPIRES"])
        for lock in locks {
            table.rows.append([
                lock.path.map(Display.name).joined(separator: "/"), Display.name(lock.owner),
                Display.time(lock.deadline),
            ])
        }
        print(table.render(), terminator: "")
    }
}

struct RawRPC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc", abstract: "Call any CBOR-RPC method; arguments are YAML values.",
        discussion: """
            Each argument is parsed as YAML (so 3 is an integer, '{limit: 2}' a mapping and 'abc' a string) and \
            passed positionally. The result prints as YAML, or JSON with --json: strings of either kind as \
            strings, tuples as lists. An error response prints its message and exits 1.
            """)

    @OptionGroup var options: GlobalOptions
    @Argument(help: "Method name.") var method: String
    @Argument(help: "Positional parameters (YAML).") var arguments: [String] = []

    func run() async throws {
        let params = try arguments.enumerated().map { index, text in
            try Parse.yaml(text, what: "argument \(index + 1)")
        }
        let result: CBORValue
        do {
            result = try await options.client().call(method, params)
        } catch CoordinateClientError.server(let message) {
            throw CLIError.failed(message)
        }
        if options.json {
            print(Display.json(result).prettyPrinted())
        } else {
            print(Display.yaml(result), terminator: "")
        }
    }
}
