import ArgumentParser
import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation

struct Summary: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Work specs with their unit counts by status.")

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let client = try options.client()
        let specs = try await client.allWorkSpecs()
        let names = specs.compactMap { $0["name"]?.stringValue }
        // One pipelined round of calls for all specs.
        let rows = try await withThrowingTaskGroup(of: (Int, [WorkUnitStatus: Int], WorkSpecMeta).self) { group in
            for (index, name) in names.enumerated() {
                group.addTask {
                    async let counts = client.countWorkUnits(name)
                    async let meta = client.workSpecMeta(name)
                    return (index, try await counts, try await meta)
                }
            }
            var rows = [([WorkUnitStatus: Int], WorkSpecMeta)?](repeating: nil, count: names.count)
            for try await (index, counts, meta) in group { rows[index] = (counts, meta) }
            return rows.compactMap { $0 }
        }
        let statuses: [WorkUnitStatus] = [.available, .pending, .finished, .failed]
        if options.json {
            let items: [JSONValue] = zip(names, rows).map { name, row in
                var members: [(String, JSONValue)] = [("name", .string(name))]
                for status in statuses {
                    members.append((status.description.lowercased(), .int(Int64(row.0[status] ?? 0))))
                }
                members.append(("total", .int(Int64(row.0.values.reduce(0, +)))))
                members.append(("paused", .bool(row.1.paused)))
                return .object(members)
            }
            print(JSONValue.array(items).prettyPrinted())
            return
        }
        var table = Table(
            headers: ["WORK SPEC"] + statuses.map(\.description) + ["TOTAL", ""], numeric: [1, 2, 3, 4, 5])
        var totals = [Int](repeating: 0, count: statuses.count + 1)
        for (name, row) in zip(names, rows) {
            let counts = statuses.map { row.0[$0] ?? 0 } + [row.0.values.reduce(0, +)]
            for (index, count) in counts.enumerated() { totals[index] += count }
            table.rows.append([name] + counts.map(String.init) + [row.1.paused ? "paused" : ""])
        }
        if names.count > 1 { table.rows.append(["(all)"] + totals.map(String.init) + [""]) }
        print(table.render(), terminator: "")
    }
}

struct Specs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List work spec names.")

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let names = try await options.client().allWorkSpecs().compactMap { $0["name"] }.map(Display.name)
        if options.json {
            print(JSONValue.array(names.map(JSONValue.string)).prettyPrinted())
        } else {
            for name in names { print(name) }
        }
    }
}

struct SpecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spec", abstract: "Show, load, delete, pause or resume work specs.",
        subcommands: [Show.self, Load.self, Delete.self, Pause.self, Resume.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a work spec's data (YAML, or JSON).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var name: String

        func run() async throws {
            let client = try options.client()
            guard let spec = try await client.workSpec(name) else {
                throw CLIError.notFound("no such work spec \(name)")
            }
            let meta = try await client.workSpecMeta(name)
            if options.json {
                let metaJSON: JSONValue = [
                    "paused": .bool(meta.paused), "continuous": .bool(meta.continuous),
                    "max_running": meta.maxRunning.map { .int(Int64($0)) } ?? .null, "weight": .int(Int64(meta.weight)),
                    "interval": meta.interval.map(JSONValue.float) ?? .null,
                ]
                print(JSONValue.object([("spec", Display.json(.map(spec))), ("meta", metaJSON)]).prettyPrinted())
            } else {
                print(Display.yaml(.map(spec)), terminator: "")
                if meta.paused { print("# paused") }
            }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or replace work specs from YAML or JSON files.",
            discussion: """
                A file holds one spec (a mapping with `name`), a list of specs, or a `flows:` mapping from names to \
                specs (the name is filled in when a spec lacks one). `-` reads stdin.
                """)
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Files to load.") var files: [String]

        func run() async throws {
            guard !files.isEmpty else { throw CLIError.usage("no files given") }
            var specs: [CBORMap] = []
            for file in files {
                specs += try Self.specs(in: try Parse.yaml(try Parse.contents(of: file), what: file), file: file)
            }
            let client = try options.client()
            for spec in specs {
                try await client.setWorkSpec(spec)
                if !options.json { print("loaded work spec \(Display.name(spec["name"] ?? .null))") }
            }
            if options.json {
                print(JSONValue.array(specs.map { .string(Display.name($0["name"] ?? .null)) }).prettyPrinted())
            }
        }

        static func specs(in document: CBORValue, file: String) throws -> [CBORMap] {
            if let list = document.listElements {
                return try list.map { item in
                    guard let map = item.mapValue else {
                        throw CLIError.usage("\(file): every list item must be a spec mapping")
                    }
                    return map
                }
            }
            guard let map = document.mapValue else {
                throw CLIError.usage("\(file): expected a spec mapping, a list or flows:")
            }
            guard let flows = map["flows"] else { return [map] }
            guard let named = flows.mapValue else { throw CLIError.usage("\(file): flows must be a mapping") }
            return try named.pairs.map { pair in
                guard var spec = pair.value.mapValue else {
                    throw CLIError.usage("\(file): flow \(Display.name(pair.key)) is not a mapping")
                }
                if spec["name"] == nil { spec.pairs.insert(CBORPair(key: .text("name"), value: pair.key), at: 0) }
                return spec
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a work spec and all its units.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var name: String

        func run() async throws {
            try await options.client().deleteWorkSpec(name)
            print("deleted work spec \(name)")
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop handing out a work spec's units.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var name: String

        func run() async throws {
            try await options.client().pauseWorkSpec(name)
            print("paused work spec \(name)")
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hand out a paused work spec's units again.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var name: String

        func run() async throws {
            try await options.client().resumeWorkSpec(name)
            print("resumed work spec \(name)")
        }
    }
}

struct Clear: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete every work spec and unit (workers and locks stay).")

    @OptionGroup var options: GlobalOptions
    @Flag(name: [.short, .long], help: "Do not ask for confirmation.") var yes = false

    func run() async throws {
        let client = try options.client()
        if !yes {
            let count = try await client.allWorkSpecs().count
            printError("Delete all \(count) work specs and their units? [y/N] ", newline: false)
            guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                throw CLIError.failed("not confirmed; nothing deleted (use --yes)")
            }
        }
        let deleted = try await client.clear()
        if options.json {
            print(JSONValue.object([("deleted_work_specs", .int(Int64(deleted)))]).prettyPrinted())
        } else {
            print("deleted \(deleted) work specs")
        }
    }
}

func printError(_ text: String, newline: Bool) {
    FileHandle.standardError.write(Data((newline ? text + "\n" : text).utf8))
}
