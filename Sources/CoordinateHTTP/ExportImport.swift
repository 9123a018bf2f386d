import CBOR
import CoordinateEngine
import CoordinateJSON
import HTTPTypes
import Hummingbird
import NIOCore

/// The JSON-lines export format of rest-api.md §3.7 (format 1).
enum ExportFormat {
    static let version: Int64 = 1

    // MARK: - Writing

    /// A name's members plus `FIELD_kind: "bytes"` for byte-string identifiers.
    static func name(_ identifier: Identifier, field: String) -> [(String, JSONValue)] {
        var members = CoordinateJSON.nameMembers(identifier.octets, field: field)
        if !identifier.isText { members.append((field + "_kind", .string("bytes"))) }
        return members
    }

    static func cbor(_ value: StoredValue) -> JSONValue { .string(Base64.encode(value.bytes)) }
    static func time(_ instant: Timestamp?) -> JSONValue { CoordinateJSON.time(microseconds: instant) }

    static func header(namespace: Identifier, version: String, exportedAt: Timestamp) -> JSONValue {
        .object(
            [("type", .string("coordinate-export")), ("format", .int(Self.version))]
                + CoordinateJSON.nameMembers(namespace.octets, field: "namespace") + [
                    ("version", .string(version)), ("exported_at", time(exportedAt)),
                ])
    }

    static func overrides(_ spec: SpecRecord) -> JSONValue {
        let values = spec.overrideValues
        var members: [(String, JSONValue)] = []
        for field in OverridableField.allCases where spec.overridden.contains(field) {
            switch field {
            case .paused: members.append(("paused", .bool(values.paused)))
            case .continuous: members.append(("continuous", .bool(values.continuous)))
            case .weight: members.append(("weight", .int(values.weight)))
            case .interval: members.append(("interval", values.interval.map { .float(Time.seconds($0)) } ?? .null))
            case .maxRunning: members.append(("max_running", values.maxRunning.map(JSONValue.int) ?? .null))
            case .maxGetwork: members.append(("max_getwork", values.maxGetwork.map(JSONValue.int) ?? .null))
            case .maxRetries: members.append(("max_retries", values.maxRetries.map(JSONValue.int) ?? .null))
            case .priority: members.append(("priority", .int(values.priority)))
            }
        }
        return .object(members)
    }

    static func spec(_ spec: SpecRecord) -> JSONValue {
        .object(
            [("type", .string("work_spec"))] + name(spec.name, field: "name") + [
                ("data", cbor(spec.data)), ("overrides", overrides(spec)),
                ("next_continuous", time(spec.nextContinuous)),
                ("archived_finished", .int(spec.archivedFinished)), ("archived_failed", .int(spec.archivedFailed)),
            ])
    }

    static func stateName(_ state: UnitState) -> String {
        switch state {
        case .available: return "available"
        case .pending: return "pending"
        case .finished: return "finished"
        case .failed: return "failed"
        }
    }

    static func unit(_ entry: NamespaceSnapshot.Unit, spec: Identifier) -> JSONValue {
        let unit = entry.unit
        let attempts: [JSONValue] = entry.attempts.map { attempt in
            .object(
                name(attempt.worker, field: "worker") + [
                    ("start_time", time(attempt.startTime)), ("expiration_time", time(attempt.expirationTime)),
                    ("end_time", time(attempt.endTime)), ("status", .string(attempt.status.name)),
                    ("data", cbor(attempt.data)),
                ])
        }
        var members: [(String, JSONValue)] =
            [("type", .string("work_unit"))] + name(spec, field: "work_spec") + name(unit.key, field: "name") + [
                ("data", cbor(unit.data)), ("priority", .float(unit.priority)), ("not_before", time(unit.notBefore)),
                ("state", .string(stateName(unit.state))), ("lease_deadline", time(unit.leaseDeadline)),
                ("completion_time", time(unit.completionTime)), ("retry_count_base", .int(unit.retryCountBase)),
                ("attempts", .array(attempts)),
            ]
        // Only while an attempt's data stands in for the unit's own, so that exports of every other unit read as
        // they always did.
        if let original = unit.originalData { members.append(("original_data", cbor(original))) }
        return .object(members)
    }

    static func worker(_ worker: WorkerRecord) -> JSONValue {
        var members: [(String, JSONValue)] = [("type", .string("worker"))] + name(worker.id, field: "name")
        members += [("active", .bool(worker.active)), ("mode_cbor", cbor(worker.mode)), ("data", cbor(worker.data))]
        if let parent = worker.parent {
            members += name(parent, field: "parent")
        } else {
            members.append(("parent", .null))
        }
        members += [
            ("first_seen", time(worker.firstSeen)), ("last_heartbeat", time(worker.lastHeartbeat)),
            ("expiration", time(worker.expiration)),
        ]
        return .object(members)
    }

    static func lock(_ lock: LockRecord) -> JSONValue {
        .object(
            [("type", .string("lock")), ("path_cbor", cbor(lock.path))] + name(lock.owner, field: "owner") + [
                ("deadline", time(lock.deadline))
            ])
    }

    /// The lines of `records`, each ending in a newline.
    static func lines(_ records: [ExportRecord]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for record in records {
            let value: JSONValue
            switch record {
            case .spec(let record): value = spec(record)
            case .unit(let entry, let specName): value = unit(entry, spec: specName)
            case .worker(let record): value = worker(record)
            case .lock(let record): value = lock(record)
            }
            buffer.writeString(value.serialized())
            buffer.writeInteger(UInt8(ascii: "\n"))
        }
        return buffer
    }

    // MARK: - Reading

    struct LineError: Error {
        let line: Int
        let reason: String
    }

    static func readName(_ object: JSONValue, field: String, required: Bool = true) throws -> Identifier? {
        let octets: [UInt8]?
        do {
            octets = try CoordinateJSON.name(in: object, field: field)
        } catch {
            throw LineError(line: 0, reason: "\(error)")
        }
        guard let octets else {
            if required { throw LineError(line: 0, reason: "\(field) missing") }
            return nil
        }
        let kind = object[field + "_kind"]?.stringValue
        if let kind, kind != "bytes", kind != "text" {
            throw LineError(line: 0, reason: "\(field)_kind must be bytes or text")
        }
        return Identifier(octets: octets, isText: kind != "bytes")
    }

    static func readCBOR(_ object: JSONValue, _ field: String) throws -> StoredValue {
        guard let text = object[field]?.stringValue, let octets = Base64.decode(text) else {
            throw LineError(line: 0, reason: "\(field) must be base64 CBOR")
        }
        do {
            let value = try CBORDecoder.decode(octets, maxDepth: 10_000)
            return StoredValue(encoding: value)
        } catch {
            throw LineError(line: 0, reason: "\(field) is not valid CBOR")
        }
    }

    static func readTime(_ object: JSONValue, _ field: String, required: Bool = false) throws -> Timestamp? {
        guard let value = object[field], value != .null else {
            if required { throw LineError(line: 0, reason: "\(field) missing") }
            return nil
        }
        guard let text = value.stringValue, let instant = RFC3339.parse(text) else {
            throw LineError(line: 0, reason: "\(field) must be an RFC 3339 time")
        }
        return instant
    }

    static func readInt(_ object: JSONValue, _ field: String) throws -> Int64 {
        guard let value = object[field]?.intValue else {
            throw LineError(line: 0, reason: "\(field) must be an integer")
        }
        return value
    }

    /// Parses an export body into a snapshot. Throws a `LineError` naming the first invalid line.
    static func parse(_ body: ByteBuffer?, now: Timestamp) throws -> NamespaceSnapshot {
        var snapshot = NamespaceSnapshot()
        var specIndex: [Identifier: Int] = [:]
        var lineNumber = 0
        var sawHeader = false
        let bytes = body.map { Array($0.readableBytesView) } ?? []
        var start = 0
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: 0x0a) ?? bytes.count
            let line = Array(bytes[start..<end])
            start = end + 1
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d || $0 == 0x09 }) { continue }
            do {
                let object: JSONValue
                do {
                    object = try JSONValue.parse(line)
                } catch {
                    throw LineError(line: 0, reason: "\(error)")
                }
                guard case .object = object, let type = object["type"]?.stringValue else {
                    throw LineError(line: 0, reason: "expected an object with a type")
                }
                if !sawHeader {
                    guard type == "coordinate-export" else {
                        throw LineError(line: 0, reason: "the first line must be the header")
                    }
                    let format = try readInt(object, "format")
                    guard format <= version else {
                        throw LineError(line: 0, reason: "format \(format) is newer than supported (\(version))")
                    }
                    sawHeader = true
                    continue
                }
                switch type {
                case "work_spec":
                    let name = try readName(object, field: "name")!
                    let data = try readCBOR(object, "data")
                    guard case .map(let map) = data.decoded() else {
                        throw LineError(line: 0, reason: "data must be a map")
                    }
                    let derived: SpecFields
                    do {
                        derived = try SpecDerivation.fields(of: map, report: { _, _, _ in })
                    } catch {
                        throw LineError(line: 0, reason: "\(error)")
                    }
                    var record = SpecRecord(namespaceID: 0, name: name, data: data, derived: derived)
                    try readOverrides(object["overrides"], into: &record)
                    record.nextContinuous = try readTime(object, "next_continuous")
                    record.archivedFinished = try readInt(object, "archived_finished")
                    record.archivedFailed = try readInt(object, "archived_failed")
                    guard specIndex[name] == nil else { throw LineError(line: 0, reason: "work spec \(name) repeated") }
                    specIndex[name] = snapshot.specs.count
                    snapshot.specs.append(NamespaceSnapshot.Spec(spec: record, units: []))
                case "work_unit":
                    let specName = try readName(object, field: "work_spec")!
                    guard let index = specIndex[specName] else {
                        throw LineError(line: 0, reason: "work unit of unknown work spec \(specName)")
                    }
                    snapshot.specs[index].units.append(try readUnit(object))
                case "worker":
                    snapshot.workers.append(try readWorker(object))
                case "lock":
                    let path = try readCBOR(object, "path_cbor")
                    guard let labels = path.decoded().listElements, !labels.isEmpty else {
                        throw LineError(line: 0, reason: "path_cbor must be a non-empty list")
                    }
                    snapshot.locks.append(
                        LockRecord(
                            namespaceID: 0, pathKey: LockPath.key(for: labels), path: path,
                            owner: try readName(object, field: "owner")!,
                            deadline: try readTime(object, "deadline", required: true)!))
                default:
                    throw LineError(line: 0, reason: "unknown type \(type)")
                }
            } catch let error as LineError {
                throw LineError(line: lineNumber, reason: error.reason)
            }
        }
        guard sawHeader else { throw LineError(line: max(1, lineNumber), reason: "missing header") }
        return snapshot
    }

    static func readOverrides(_ json: JSONValue?, into spec: inout SpecRecord) throws {
        guard let json, json != .null else { return }
        guard let members = json.members else { throw LineError(line: 0, reason: "overrides must be an object") }
        for (key, value) in members {
            func int() throws -> Int64 {
                guard let number = value.intValue else {
                    throw LineError(line: 0, reason: "overrides.\(key) must be an integer")
                }
                return number
            }
            func optionalInt() throws -> Int64? { value == .null ? nil : try int() }
            func flag() throws -> Bool {
                guard case .bool(let flag) = value else {
                    throw LineError(line: 0, reason: "overrides.\(key) must be a boolean")
                }
                return flag
            }
            switch key {
            case "paused": spec.overrideValues.paused = try flag(); spec.overridden.insert(.paused)
            case "continuous": spec.overrideValues.continuous = try flag(); spec.overridden.insert(.continuous)
            case "weight": spec.overrideValues.weight = try int(); spec.overridden.insert(.weight)
            case "priority": spec.overrideValues.priority = try int(); spec.overridden.insert(.priority)
            case "interval":
                if value == .null {
                    spec.overrideValues.interval = nil
                } else {
                    guard let seconds = value.doubleValue else {
                        throw LineError(line: 0, reason: "overrides.interval must be a number")
                    }
                    spec.overrideValues.interval = Time.duration(seconds: seconds)
                }
                spec.overridden.insert(.interval)
            case "max_running": spec.overrideValues.maxRunning = try optionalInt(); spec.overridden.insert(.maxRunning)
            case "max_getwork": spec.overrideValues.maxGetwork = try optionalInt(); spec.overridden.insert(.maxGetwork)
            case "max_retries": spec.overrideValues.maxRetries = try optionalInt(); spec.overridden.insert(.maxRetries)
            default: throw LineError(line: 0, reason: "unknown override \(key)")
            }
        }
    }

    static func readUnit(_ object: JSONValue) throws -> NamespaceSnapshot.Unit {
        let states: [String: UnitState] = [
            "available": .available, "pending": .pending, "finished": .finished, "failed": .failed,
        ]
        guard let stateName = object["state"]?.stringValue, let state = states[stateName] else {
            throw LineError(line: 0, reason: "state must be available, pending, finished or failed")
        }
        guard let priority = object["priority"]?.doubleValue, priority.isFinite else {
            throw LineError(line: 0, reason: "priority must be a number")
        }
        var unit = UnitRecord(
            specID: 0, key: try readName(object, field: "name")!, data: try readCBOR(object, "data"),
            priority: priority,
            notBefore: try readTime(object, "not_before"), state: state,
            leaseDeadline: try readTime(object, "lease_deadline"),
            completionTime: try readTime(object, "completion_time"),
            retryCountBase: try readInt(object, "retry_count_base"))
        if let original = object["original_data"], original != .null {
            unit.originalData = try readCBOR(object, "original_data")
        }
        if state == .pending, unit.leaseDeadline == nil {
            throw LineError(line: 0, reason: "a pending unit needs a lease_deadline")
        }
        let statuses = Dictionary(uniqueKeysWithValues: AttemptStatus.allCases.map { ($0.name, $0) })
        guard let list = object["attempts"]?.elements else {
            throw LineError(line: 0, reason: "attempts must be a list")
        }
        let attempts = try list.map { attempt -> AttemptRecord in
            guard let statusName = attempt["status"]?.stringValue, let status = statuses[statusName] else {
                throw LineError(line: 0, reason: "attempt status is not valid")
            }
            return AttemptRecord(
                unitID: 0, specID: 0, namespaceID: 0, worker: try readName(attempt, field: "worker")!,
                startTime: try readTime(attempt, "start_time", required: true)!,
                expirationTime: try readTime(attempt, "expiration_time", required: true)!,
                endTime: try readTime(attempt, "end_time"), status: status, data: try readCBOR(attempt, "data"))
        }
        return NamespaceSnapshot.Unit(unit: unit, attempts: attempts)
    }

    static func readWorker(_ object: JSONValue) throws -> WorkerRecord {
        guard case .bool(let active) = object["active"] ?? .null else {
            throw LineError(line: 0, reason: "active must be a boolean")
        }
        return WorkerRecord(
            namespaceID: 0, id: try readName(object, field: "name")!, active: active,
            mode: try readCBOR(object, "mode_cbor"), data: try readCBOR(object, "data"),
            parent: try readName(object, field: "parent", required: false),
            firstSeen: try readTime(object, "first_seen", required: true)!,
            lastHeartbeat: try readTime(object, "last_heartbeat", required: true)!,
            expiration: try readTime(object, "expiration", required: true)!)
    }
}

extension RESTRoutes {
    /// Streams the export page by page from one storage snapshot (``NamespaceExport``): writers carry on, and
    /// what the daemon holds is one page plus what the connection has not sent yet, whatever the size of the
    /// namespace. The first page is read before the status line, so a storage failure there is a plain error
    /// response; a failure after it cuts the response short (no terminating chunk), which every HTTP client
    /// reports as an incomplete body rather than a complete export.
    func exportNamespace(_ request: RESTRequest) async throws -> Response {
        let ns = try request.name("ns")
        var export = try await engine.exportNamespace(ns)
        let first: [ExportRecord]
        do {
            first = try await export.next()
        } catch {
            export.close()
            throw error
        }
        var head = ByteBuffer(
            string: ExportFormat.header(namespace: ns, version: settings.version, exportedAt: export.exportedAt)
                .serialized() + "\n")
        head.writeImmutableBuffer(ExportFormat.lines(first))
        let opening = head
        let pending = export
        return Response(
            status: .ok, headers: [.contentType: MediaTypes.ndjson],
            body: ResponseBody { writer in
                var export = pending
                defer { export.close() }
                try await writer.write(opening)
                while true {
                    let records = try await export.next()
                    if records.isEmpty { break }
                    try await writer.write(ExportFormat.lines(records))
                }
                try await writer.finish(nil)
            })
    }

    func importNamespace(_ request: RESTRequest) async throws -> Response {
        let ns = try request.name("ns")
        let snapshot: NamespaceSnapshot
        do {
            snapshot = try ExportFormat.parse(request.body, now: 0)
        } catch let error as ExportFormat.LineError {
            throw RESTError.badRequest("line \(error.line): \(error.reason)")
        }
        let outcome = try await write { tx in try tx.importNamespace(ns, snapshot) }
        switch outcome {
        case .notEmpty:
            throw RESTError(.conflict, "ErrNotEmpty", "namespace \(ns) is not empty")
        case .imported(let counts):
            return ok(
                request,
                [
                    "work_specs": .int(Int64(counts.specs)), "work_units": .int(Int64(counts.units)),
                    "attempts": .int(Int64(counts.attempts)), "workers": .int(Int64(counts.workers)),
                    "locks": .int(Int64(counts.locks)),
                ])
        }
    }
}
