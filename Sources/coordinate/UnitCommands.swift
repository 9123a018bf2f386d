import ArgumentParser
import CBOR
import CoordinateClient
import CoordinateJSON
import Foundation

struct Units: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add, list, inspect, retry, prioritize or delete work units.",
        subcommands: [Add.self, List.self, Status.self, Retry.self, Prioritize.self, Delete.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add work units from arguments, or from JSON lines on stdin or in a file.",
            discussion: """
                With keys as arguments, each becomes a unit with --data (a JSON object, default {}). Without keys, \
                units are read as JSON lines: either {"key": K, "data": D, "priority": P, "delay": S} (data, \
                priority and delay optional; "key_base64" for keys that are not UTF-8; data may also be the \
                base64 of its CBOR encoding) or {K: D} as the Python `coordinate load` writes. Units are sent in \
                batches; progress goes to stderr.
                """)
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var spec: String
        @Argument(help: "Unit keys (omit to read JSON lines).") var keys: [String] = []
        @Option(help: "Data for units given as arguments (JSON object).") var data: String?
        @Option(help: "Priority for units given as arguments.") var priority: Double?
        @Option(help: "Seconds before units given as arguments may run.") var delay: Double?
        @Option(name: [.short, .long], help: "Read JSON lines from this file instead of stdin.") var file: String?
        @Option(help: "Units per add_work_units call.") var batchSize = 10_000

        func run() async throws {
            let client = try options.client()
            if !keys.isEmpty {
                var unitData = CBORValue.map(CBORMap())
                if let data {
                    let json: JSONValue
                    do { json = try JSONValue.parse(data) } catch { throw CLIError.usage("--data: \(error)") }
                    unitData = try Self.data(json, line: 0)
                }
                let units = keys.map {
                    WorkUnitSubmission(key: .text($0), data: unitData, priority: priority, delay: delay)
                }
                try await client.addWorkUnits(spec, units)
                report(units.count, seconds: nil)
                return
            }
            guard batchSize > 0 else { throw CLIError.usage("--batch-size must be positive") }
            let descriptor: Int32
            if let file, file != "-" {
                descriptor = open(file, O_RDONLY)
                guard descriptor >= 0 else {
                    throw CLIError.usage("cannot read \(file): \(String(cString: strerror(errno)))")
                }
            } else {
                descriptor = 0
            }
            defer { if descriptor > 0 { close(descriptor) } }
            var lines = LineReader(descriptor: descriptor)
            let started = Date()
            var added = 0
            var batch: [WorkUnitSubmission] = []
            var lineNumber = 0
            var pending: Task<Void, any Error>?
            // One batch is sent while the next is parsed.
            while let line = try lines.next() {
                lineNumber += 1
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0d }) { continue }
                batch += try Self.units(fromLine: line, number: lineNumber)
                if batch.count >= batchSize {
                    try await pending?.value
                    let units = batch
                    batch = []
                    pending = Task { try await client.addWorkUnits(spec, units) }
                    added += units.count
                    let elapsed = Date().timeIntervalSince(started)
                    printError("added \(added) units (\(Int(Double(added) / max(elapsed, 0.001))) units/s)")
                }
            }
            try await pending?.value
            if !batch.isEmpty {
                try await client.addWorkUnits(spec, batch)
                added += batch.count
            }
            report(added, seconds: Date().timeIntervalSince(started))
        }

        private func report(_ count: Int, seconds: Double?) {
            if options.json {
                print(JSONValue.object([("added", .int(Int64(count))), ("work_spec", .string(spec))]).serialized())
            } else {
                print("added \(count) work units to \(spec)")
            }
        }

        static func units(fromLine line: [UInt8], number: Int) throws -> [WorkUnitSubmission] {
            let json: JSONValue
            do { json = try JSONValue.parse(line) } catch { throw CLIError.usage("line \(number): \(error)") }
            guard let members = json.members else { throw CLIError.usage("line \(number): expected a JSON object") }
            if json["key"] != nil || json["key_base64"] != nil {
                let key: [UInt8]
                do {
                    guard let octets = try CoordinateJSON.name(in: json, field: "key") else {
                        throw CLIError.usage("line \(number): key must not be null")
                    }
                    key = octets
                } catch let error as CoordinateJSON.MappingError {
                    throw CLIError.usage("line \(number): \(error)")
                }
                let keyValue: CBORValue = String(validating: key, as: UTF8.self) != nil ? .text(key) : .bytes(key)
                let data = try json["data"].map { try Self.data($0, line: number) } ?? .map(CBORMap())
                return [
                    WorkUnitSubmission(
                        key: keyValue, data: data,
                        priority: try Self.number(json["priority"], "priority", line: number),
                        delay: try Self.number(json["delay"], "delay", line: number))
                ]
            }
            // The Python `coordinate load` form: {key: data, ...}.
            return try members.map { key, value in
                WorkUnitSubmission(key: .text(key), data: try Self.data(value, line: number))
            }
        }

        static func data(_ json: JSONValue, line: Int) throws -> CBORValue {
            do {
                return try CoordinateJSON.data(from: json)
            } catch {
                throw CLIError.usage(line > 0 ? "line \(line): \(error)" : "--data: \(error)")
            }
        }

        static func number(_ json: JSONValue?, _ name: String, line: Int) throws -> Double? {
            guard let json, json != .null else { return nil }
            guard let value = json.doubleValue else { throw CLIError.usage("line \(line): \(name) must be a number") }
            return value
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a work spec's units: key order, or priority order with --status.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var spec: String
        @Option(name: .customLong("status"), help: "Only units in this status (repeatable).") var statuses: [String] =
            []
        @Option(help: "Start at this key.") var start: String?
        @Option(help: "Units per page (at most 10000).") var limit = 100
        @Flag(help: "Page through every unit.") var all = false

        func run() async throws {
            let client = try options.client()
            let states = try statuses.map(Parse.status)
            var rows: [(WorkUnitEntry, WorkUnitStatusReport?)] = []
            var next: CBORValue? = start.map { .text($0) }
            repeat {
                let page = try await client.workUnits(
                    spec, states: states.isEmpty ? nil : states, start: next, limit: limit)
                let reports = page.isEmpty ? [] : try await client.workUnitStatus(spec, keys: page.map(\.key))
                rows += zip(page, reports).map { ($0, $1) }
                // Key-ordered pages continue after the last key; a status listing is in priority order and can
                // only be paged by key from the start.
                if all, page.count == limit, states.isEmpty, let last = page.last?.key.stringOctets {
                    next = .bytes(last + [0])
                } else {
                    next = nil
                }
            } while next != nil
            if options.json {
                let items: [JSONValue] = rows.map { entry, report in
                    var members = CoordinateJSON.nameMembers(entry.key.stringOctets ?? [], field: "key")
                    members.append(("status", report.map { .string($0.status.description) } ?? .null))
                    members.append(("worker_id", report?.workerID.map { .string(Display.name($0)) } ?? .null))
                    members.append(("data", entry.data.map(CoordinateJSON.data) ?? .null))
                    return .object(members)
                }
                print(JSONValue.array(items).prettyPrinted())
                return
            }
            var table = Table(headers: ["KEY", "STATUS", "WORKER", "DATA"])
            for (entry, report) in rows {
                table.rows.append([
                    Display.name(entry.key), report?.status.description ?? "-",
                    report?.workerID.map(Display.name) ?? "", entry.data.map { Display.brief($0) } ?? "",
                ])
            }
            print(table.render(), terminator: "")
            if !all, rows.count == limit, states.isEmpty, let last = rows.last {
                printError(
                    "(more units follow; continue after \(Display.name(last.0.key)) with --all or a later --start)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show units' status, worker, lease or completion time and traceback.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var spec: String
        @Argument(help: "Unit keys.") var keys: [String]

        func run() async throws {
            guard !keys.isEmpty else { throw CLIError.usage("no keys given") }
            let reports = try await options.client().workUnitStatus(spec, keys: keys.map { .text($0) })
            if options.json {
                let items: [JSONValue] = zip(keys, reports).map { key, report in
                    guard let report else { return .object([("key", .string(key)), ("status", .null)]) }
                    return .object([
                        ("key", .string(key)), ("status", .string(report.status.description)),
                        ("worker_id", report.workerID.map { .string(Display.name($0)) } ?? .null),
                        ("expiration", report.expiration.map { .string(Display.time($0)) } ?? .null),
                        ("traceback", report.traceback.map { .string(Display.name($0)) } ?? .null),
                    ])
                }
                print(JSONValue.array(items).prettyPrinted())
            } else {
                var table = Table(headers: ["KEY", "STATUS", "WORKER", "EXPIRES/DONE", "TRACEBACK"])
                for (key, report) in zip(keys, reports) {
                    guard let report else {
                        table.rows.append([key, "not found", "", "", ""])
                        continue
                    }
                    let traceback = report.traceback.map(Display.name)?.split(separator: "\n").last.map(String.init)
                    table.rows.append([
                        key, report.status.description, report.workerID.map(Display.name) ?? "",
                        report.expiration.map { Display.time($0) } ?? "", traceback ?? "",
                    ])
                }
                print(table.render(), terminator: "")
            }
            let missing = zip(keys, reports).filter { $1 == nil }.map(\.0)
            if !missing.isEmpty { throw CLIError.notFound("no such work unit \(missing.joined(separator: ", "))") }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Return units to the queue.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var spec: String
        @Argument(help: "Unit keys.") var keys: [String] = []
        @Flag(help: "Retry every FAILED unit.") var failed = false

        func run() async throws {
            let client = try options.client()
            var targets = keys.map { CBORValue.text($0) }
            if failed {
                var start: CBORValue?
                while true {
                    let page = try await client.workUnits(spec, states: [.failed], start: start, limit: 10_000)
                    targets += page.map(\.key)
                    guard page.count == 10_000, let last = page.last?.key.stringOctets else { break }
                    start = .bytes(last + [0])
                }
            }
            guard failed || !targets.isEmpty else { throw CLIError.usage("give keys or --failed") }
            try await client.retry(spec, keys: targets)
            print(
                options.json
                    ? JSONValue.object([("retried", .int(Int64(targets.count)))]).serialized()
                    : "retried \(targets.count) work units")
        }
    }

    struct Prioritize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set or adjust units' priority.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var spec: String
        @Argument(help: "Unit keys.") var keys: [String]
        @Option(help: "New priority.") var priority: Double?
        @Option(help: "Amount added to the priority.") var adjust: Double?

        func run() async throws {
            guard !keys.isEmpty else { throw CLIError.usage("no keys given") }
            let client = try options.client()
            switch (priority, adjust) {
            case (let priority?, nil):
                try await client.prioritizeWorkUnits(spec, keys: keys.map { .text($0) }, priority: priority)
            case (nil, let adjust?): try await client.adjustPriority(spec, keys: keys.map { .text($0) }, by: adjust)
            default: throw CLIError.usage("give exactly one of --priority and --adjust")
            }
            print("prioritized \(keys.count) work units")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete units by key, by status, or all.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Work spec name.") var spec: String
        @Argument(help: "Unit keys.") var keys: [String] = []
        @Option(help: "Only units in this status (alone: every unit in it).") var status: String?
        @Flag(help: "Delete every unit of the spec.") var all = false
        @Flag(name: [.short, .long], help: "Do not ask before --all.") var yes = false

        func run() async throws {
            let client = try options.client()
            let state = try status.map(Parse.status)
            let deleted: Int
            if all {
                guard keys.isEmpty, state == nil else { throw CLIError.usage("--all takes no keys or --status") }
                if !yes {
                    printError("Delete every unit of \(spec)? [y/N] ", newline: false)
                    guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                        throw CLIError.failed("not confirmed; nothing deleted (use --yes)")
                    }
                }
                deleted = try await client.deleteAllWorkUnits(spec)
            } else {
                guard !keys.isEmpty || state != nil else { throw CLIError.usage("give keys, --status or --all") }
                deleted = try await client.deleteWorkUnits(
                    spec, keys: keys.isEmpty ? nil : keys.map { .text($0) }, state: state)
            }
            print(
                options.json
                    ? JSONValue.object([("deleted", .int(Int64(deleted)))]).serialized()
                    : "deleted \(deleted) work units")
        }
    }
}

/// Reads newline-separated lines from a file descriptor in large chunks.
struct LineReader {
    let descriptor: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var finished = false

    init(descriptor: Int32) { self.descriptor = descriptor }

    /// The next line without its newline, or nil at the end.
    mutating func next() throws -> [UInt8]? {
        while true {
            if let newline = buffer[start...].firstIndex(of: 0x0a) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                return line
            }
            if finished {
                guard start < buffer.count else { return nil }
                let line = Array(buffer[start...])
                start = buffer.count
                return line
            }
            buffer.removeFirst(start)
            start = 0
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw CLIError.failed("read failed: \(String(cString: strerror(errno)))")
            }
            if count == 0 { finished = true } else { buffer += chunk[..<count] }
        }
    }
}
