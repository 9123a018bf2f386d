import CBOR
import CoordinateEngine
import CoordinateRPC

/// The JobQueue RPC module: every method of rpc-methods.md §2, with the Python client's exact parameters,
/// defaults, result shapes and message texts.
public struct JobQueueModule: RPCModule {
    public let name = "JobQueue"
    let engine: Engine
    let bridge: EngineBridge
    /// The CBOR-RPC namespace (`coordinate.namespace`).
    let namespace: Identifier
    /// `get_config`'s map: the effective configuration with secrets redacted.
    let configuration: CBORValue

    public init(engine: Engine, namespace: Identifier, configuration: CBORValue) {
        self.engine = engine
        self.bridge = EngineBridge(engine: engine)
        self.namespace = namespace
        self.configuration = configuration
    }

    public var methods: [RPCMethod] {
        [
            RPCMethod("set_work_spec", parameters: ["work_spec"], handler: setWorkSpec),
            RPCMethod("get_work_spec", parameters: ["work_spec_name"], handler: getWorkSpec),
            RPCMethod("control_work_spec", parameters: ["work_spec_name", "options"], handler: controlWorkSpec),
            RPCMethod("get_work_spec_meta", parameters: ["work_spec_name"], handler: getWorkSpecMeta),
            RPCMethod("list_work_specs", parameters: ["options"], handler: listWorkSpecs),
            RPCMethod("del_work_spec", parameters: ["work_spec_name"], handler: delWorkSpec),
            RPCMethod("clear", handler: clear),
            RPCMethod("add_work_units", parameters: ["work_spec_name", "work_unit_key_vals"], handler: addWorkUnits),
            RPCMethod("count_work_units", parameters: ["work_spec_name"], handler: countWorkUnits),
            RPCMethod("get_work_units", parameters: ["work_spec_name", "options"], handler: getWorkUnits),
            RPCMethod(
                "prioritize_work_units", parameters: ["work_spec_name", "options"], handler: prioritizeWorkUnits),
            RPCMethod("del_work_units", parameters: ["work_spec_name", "options"], handler: delWorkUnits),
            RPCMethod(
                "get_work_unit_status", parameters: ["work_spec_name", "work_unit_keys"], handler: getWorkUnitStatus),
            RPCMethod(
                "update_work_unit", parameters: ["work_spec_name", "work_unit_key", "options"], handler: updateWorkUnit),
            RPCMethod("get_work", parameters: ["worker_id", "options"], handler: getWork),
            RPCMethod("get_child_work_units", parameters: ["worker_id"], handler: getChildWorkUnits),
            RPCMethod(
                "worker_heartbeat", parameters: ["worker_id", "mode", "expire_seconds", "data", "parent"],
                handler: workerHeartbeat),
            RPCMethod("worker_unregister", parameters: ["worker_id"], handler: workerUnregister),
            RPCMethod("list_worker_modes", handler: listWorkerModes),
            RPCMethod("get_worker_info", parameters: ["worker_id"], handler: getWorkerInfo),
            RPCMethod("mode_counts", handler: modeCounts),
            RPCMethod("worker_stats", handler: workerStats),
            RPCMethod("get_config") { [configuration] _ in .value(tuple(configuration, .null)) },
            RPCMethod("archive", parameters: ["options"], required: 0, handler: archive),
            RPCMethod("now", handler: now),
        ]
    }

    // MARK: - Specs

    func setWorkSpec(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let data = try call.map(0)
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.setWorkSpec(namespace: namespace, data: data) }) { _ in
            tuple(true, .null)
        }
    }

    func getWorkSpec(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.spec(namespace: namespace, named: name)?.data }) { data in
            data.map { .encoded($0) } ?? .null
        }
    }

    func controlWorkSpec(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let options = try Options(
            try call.map(1), call: call, optionsIndex: 1,
            schema: [
                "continuous": .any, "status": .integer, "weight": .integer, "interval": .numberOrNull,
                "max_running": .integerOrNull, "priority": .integer, "max_getwork": .integerOrNull,
                "max_retries": .integerOrNull,
            ])
        var control = SpecControl()
        if let continuous = options.value("continuous") { control.continuous = continuous.isTruthy }
        control.status = options.value("status")
        control.weight = options.int("weight")
        control.priority = options.int("priority")
        if options.contains("interval") { control.interval = .some(options.number("interval")) }
        if options.contains("max_running") { control.maxRunning = .some(options.int("max_running")) }
        if options.contains("max_getwork") { control.maxGetwork = .some(options.int("max_getwork")) }
        if options.contains("max_retries") { control.maxRetries = .some(options.int("max_retries")) }
        let namespace = self.namespace
        let requested = control
        return try bridge.run(
            call, .write, { tx in try tx.controlWorkSpec(namespace: namespace, named: name, requested) }
        ) {
            outcome in
            switch outcome {
            case .applied: return tuple(true, .null)
            case .noSuchSpec: return tuple(false, Messages.noSpecRaw(name))
            case .cannotBeContinuous(let specName):
                return tuple(
                    false,
                    .bytes(
                        Array("cannot make non-continuous work spec ".utf8) + specName.octets
                            + Array(" continuous".utf8)))
            case .invalidStatus(let value):
                return tuple(false, .bytes(Array("invalid work spec status ".utf8) + PythonRepr.render(value)))
            }
        }
    }

    func getWorkSpecMeta(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.spec(namespace: namespace, named: name) }) { spec in
            guard let spec else { return tuple(.null, Messages.noSpecRaw(name)) }
            let fields = spec.effective
            let meta = CBORMap([
                (.bytes("status"), .int(fields.paused ? 2 : 1)),
                (.bytes("continuous"), .bool(fields.continuous)),
                (.bytes("max_running"), fields.maxRunning.map { .int($0) } ?? .null),
                (.bytes("weight"), .int(fields.weight)),
                (.bytes("interval"), fields.interval.map { .float(Time.seconds($0)) } ?? .null),
            ])
            return tuple(.map(meta), .null)
        }
    }

    func listWorkSpecs(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let options = try Options(
            try call.map(0), call: call, optionsIndex: 0, schema: ["limit": .integerOrNull, "start": .stringOrNull])
        let limit = options.int("limit").map { Int(clamping: $0) }
        let start = options.value("start").flatMap(Identifier.init)
        let namespace = self.namespace
        return try bridge.run(
            call, .read, { tx in try tx.listWorkSpecs(namespace: namespace, start: start, limit: limit) }
        ) {
            listing in
            tuple(.array(listing.specs.map { .encoded($0.data) }), listing.next?.value ?? .null)
        }
    }

    func delWorkSpec(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.deleteWorkSpec(namespace: namespace, named: name) }) {
            deleted in
            deleted ? tuple(true, .null) : tuple(false, Messages.noSpec(name))
        }
    }

    func clear(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.clear(namespace: namespace) }) { count in .int(count) }
    }

    // MARK: - Units

    func addWorkUnits(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        guard let value = call[1], let elements = UnitItemParser.elements(of: value) else {
            throw call.fail(1, "list or map")
        }
        let batch = UnitItemParser.parse(elements)
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.addWorkUnits(namespace: namespace, spec: name, batch) }) {
            outcome in
            switch outcome {
            case .noSuchSpec: return tuple(false, Messages.noSpec(name))
            case .added: return tuple(true, .null)
            }
        }
    }

    func countWorkUnits(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.countWorkUnits(namespace: namespace, spec: name) }) {
            result in
            guard let (counts, archivedFinished, archivedFailed) = result else {
                return tuple(false, Messages.noSpec(name))
            }
            var map = CBORMap()
            let entries: [(Int, Int64)] = [
                (1, Int64(counts.ready + counts.delayed)), (3, Int64(counts.pending)),
                (4, Int64(counts.finished) + archivedFinished), (5, Int64(counts.failed) + archivedFailed),
            ]
            for (status, count) in entries where count > 0 { map.append(.int(status), .int(count)) }
            return tuple(.map(map), .null)
        }
    }

    func getWorkUnits(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let options = try Options(
            try call.map(1), call: call, optionsIndex: 1,
            schema: [
                "work_unit_keys": .listOrNull, "state": .integerListOrNull, "start": .stringOrNull,
                "limit": .integerOrNull,
            ])
        let namespace = self.namespace
        if let requested = options.value("work_unit_keys")?.listElements, !requested.isEmpty {
            // Keys given: one element per requested key, echoing the key exactly as sent; a key that is not a
            // string names no unit.
            let keys = requested.compactMap(Identifier.init)
            return try bridge.run(call, .read, { tx in try tx.workUnits(namespace: namespace, spec: name, keys: keys) })
            {
                units in
                guard let units else { return tuple(.null, Messages.noSpec(name)) }
                var found = units.makeIterator()
                let list = requested.map { requestedKey -> CBORValue in
                    let unit = Identifier(requestedKey) != nil ? found.next() ?? nil : nil
                    return .tuple([requestedKey, unit.map { .encoded($0.data) } ?? .null])
                }
                return tuple(.array(list), .null)
            }
        }
        var buckets: Set<UnitBucket>?
        if let state = options.value("state") {
            var selected = Set<UnitBucket>()
            if let list = state.listElements {
                for element in list {
                    if let code = element.intLike {
                        selected.formUnion(CoordinateEngine.buckets(forStatusCode: code))
                    }
                }
            } else if let code = state.intLike {
                selected = CoordinateEngine.buckets(forStatusCode: code)
            }
            buckets = selected
        }
        let start = options.value("start").flatMap(Identifier.init)
        var limit = Int(clamping: options.int("limit") ?? 1000)
        if limit <= 0 { limit = 1000 }
        let cappedLimit = min(limit, 10000)
        let selectedBuckets = buckets
        return try bridge.run(
            call, .read,
            { tx in
                try tx.workUnits(
                    namespace: namespace, spec: name, buckets: selectedBuckets, start: start, limit: cappedLimit)
            }
        ) { units in
            guard let units else { return tuple(.null, Messages.noSpec(name)) }
            return tuple(.array(units.map { .tuple([$0.key.value, .encoded($0.data)]) }), .null)
        }
    }

    func prioritizeWorkUnits(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let options = try Options(
            try call.map(1), call: call, optionsIndex: 1,
            schema: ["work_unit_keys": .listOrNull, "priority": .numberOrNull, "adjustment": .numberOrNull])
        let hasKeys = options.contains("work_unit_keys")
        let keys = (options.value("work_unit_keys")?.listElements ?? []).compactMap(Identifier.init)
        let priority = options.number("priority")
        let adjustment = options.number("adjustment")
        let namespace = self.namespace
        return try bridge.run(
            call, .write,
            { tx -> Bool? in
                guard try tx.spec(namespace: namespace, named: name) != nil else { return nil }
                guard hasKeys else { return false }
                return try tx.prioritizeWorkUnits(
                    namespace: namespace, spec: name, keys: keys, priority: priority, adjustment: adjustment)
            }
        ) { outcome in
            switch outcome {
            case nil: return tuple(false, Messages.noSpec(name))
            case false?: return tuple(false, .bytes("missing work_unit_keys"))
            case true?: return tuple(true, .null)
            }
        }
    }

    func delWorkUnits(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let options = try Options(
            try call.map(1), call: call, optionsIndex: 1,
            schema: ["all": .any, "work_unit_keys": .listOrNull, "state": .integerOrNull])
        let all = options.value("all")?.isTruthy ?? false
        let keys = options.value("work_unit_keys")?.listElements?.compactMap(Identifier.init)
        let state = options.int("state")
        let namespace = self.namespace
        return try bridge.run(
            call, .write,
            { tx in try tx.deleteWorkUnits(namespace: namespace, spec: name, all: all, keys: keys, state: state) }
        ) { outcome in
            switch outcome {
            case .noSuchSpec: return tuple(.int(0), Messages.noSpec(name))
            case .noUsableOptions: return tuple(.int(0), .bytes("no usable options to del_work_units"))
            case .deleted(let count): return tuple(.int(count), .null)
            }
        }
    }

    func getWorkUnitStatus(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let requested: [CBORValue]
        if let value = call[1], value.isString {
            requested = [value]
        } else {
            requested = try call.list(1)
        }
        let keys = requested.compactMap(Identifier.init)
        let namespace = self.namespace
        return try bridge.run(
            call, .read, { tx in try tx.workUnitStatus(namespace: namespace, spec: name, keys: keys) }
        ) {
            entries in
            guard let entries else { return tuple(.null, Messages.noSpec(name)) }
            var found = entries.makeIterator()
            let list = requested.map { requestedKey -> CBORValue in
                guard Identifier(requestedKey) != nil, let entry = found.next() ?? nil else { return .null }
                var map = CBORMap([(.bytes("status"), .int(entry.bucket.pythonStatus))])
                if let worker = entry.worker, !worker.isEmpty { map.append(.bytes("worker_id"), worker.value) }
                map.append(.bytes("expiration"), entry.expiration.map { .float(Time.seconds($0)) } ?? .null)
                if case .map(let data) = entry.data.decoded(), let traceback = data["traceback"] {
                    map.append(.bytes("traceback"), traceback)
                }
                return .map(map)
            }
            return tuple(.array(list), .null)
        }
    }

    func updateWorkUnit(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let name = try call.identifier(0)
        let key = try call.identifier(1)
        let options = try Options(
            try call.map(2), call: call, optionsIndex: 2,
            schema: ["lease_time": .numberOrNull, "status": .integerOrNull, "data": .any, "worker_id": .stringOrNull])
        var update = UnitUpdate()
        update.leaseSeconds = options.number("lease_time")
        let statusValue = options.value("status")
        update.status = options.int("status")
        update.data = options.value("data").map { StoredValue(encoding: $0) }
        update.worker = options.value("worker_id").flatMap(Identifier.init)
        let namespace = self.namespace
        let requestedUpdate = update
        return try bridge.run(
            call, .write, readingFirst: .unit(namespace: namespace, spec: name, key: key),
            { tx in try tx.updateWorkUnit(namespace: namespace, spec: name, key: key, requestedUpdate) }
        ) { outcome in
            switch outcome {
            case .applied: return tuple(true, .null)
            case .noSuchSpec: return tuple(false, Messages.noSpec(name))
            case .nothingToDo: return tuple(false, .bytes("nothing to do"))
            case .noSuchUnit:
                return tuple(false, .bytes(Array("no such work unit key=".utf8) + PythonRepr.quote(key.octets)))
            case .invalidStatus:
                return tuple(false, .bytes(Array("invalid status ".utf8) + PythonRepr.render(statusValue ?? .null)))
            case .notPending: return tuple(false, .bytes("work unit is not pending"))
            }
        }
    }

    // MARK: - get_work

    func getWork(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let worker = try call.identifier(0)
        let options = try Options(
            try call.map(1), call: call, optionsIndex: 1,
            schema: [
                "max_jobs": .integer, "lease_time": .number, "work_spec_names": .listOrNull, "available_gb": .any,
                "runtimes": .listOrNull,
            ])
        let maxJobs = options.int("max_jobs")
        let tripleForm = maxJobs == nil || maxJobs == 1
        // The engine clamps the grant itself; the read-ahead is told the clamped count.
        let count = engine.configuration.grantable(Int(clamping: max(1, maxJobs ?? 1)))
        var leaseSeconds = options.number("lease_time") ?? 300
        if leaseSeconds > 86400 || leaseSeconds < 1 { leaseSeconds = 300 }
        var filter = Scheduler.Filter()
        // Null or empty means every spec; otherwise only the named ones (non-string names match nothing).
        if let names = options.value("work_spec_names")?.listElements, !names.isEmpty {
            filter.specNames = Set(names.compactMap(Identifier.init))
        }
        // Absent means the default runtime [""]; an empty list means any runtime.
        if let runtimes = options.value("runtimes")?.listElements {
            filter.runtimes = runtimes.isEmpty ? nil : runtimes.compactMap(\.stringOctets)
        } else {
            filter.runtimes = [[]]
        }
        let request = WorkRequest(
            worker: worker, count: count, lease: Time.duration(seconds: leaseSeconds), filter: filter)
        let namespace = self.namespace
        return try bridge.run(
            call, .write, readingFirst: .grant(namespace: namespace, count: count),
            { tx in try tx.getWork(namespace: namespace, request) }
        ) { granted in
            let triples = granted.map {
                CBORValue.tuple([$0.spec.name.value, $0.unit.key.value, .encoded($0.unit.data)])
            }
            if tripleForm {
                return tuple(triples.first ?? .tuple([.null, .null, .null]), .null)
            }
            return tuple(.array(triples), .null)
        }
    }

    // MARK: - Workers

    func getChildWorkUnits(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let parent = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.childWorkUnits(namespace: namespace, parent: parent) }) {
            children in
            var map = CBORMap()
            for (child, units) in children {
                let entries = units.map { held -> CBORValue in
                    .map(
                        CBORMap([
                            (.bytes("work_spec_name"), held.spec.name.value),
                            (.bytes("work_unit_key"), held.unit.key.value),
                            (.bytes("work_unit_data"), .encoded(held.unit.data)),
                            (.bytes("worker_id"), held.holder?.value ?? .null),
                            (.bytes("expires"), held.expires.map { .float(Time.seconds($0)) } ?? .null),
                        ]))
                }
                map.append(child.id.value, .array(entries))
            }
            return tuple(.map(map), .null)
        }
    }

    func workerHeartbeat(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let worker = try call.identifier(0)
        let mode = call[1] ?? .null
        guard let expireValue = call[2], var seconds = expireValue.numberLike else { throw call.fail(2, "number") }
        let data = call[3] ?? .null
        let parent = try call.optionalIdentifier(4)
        var message: CBORValue = .null
        let rendered = Self.renderCoerced(expireValue, seconds)
        if seconds < 0 {
            message = .bytes(Array("negative expire time ".utf8) + rendered + Array(" defaulted to 5 minutes".utf8))
            seconds = 300
        } else if seconds > 86400 {
            message = .bytes(Array("huge expire time ".utf8) + rendered + Array(" defaulted to one hour".utf8))
            seconds = 3600
        }
        let namespace = self.namespace
        let expiresIn = Time.duration(seconds: seconds)
        let storedMode = StoredValue(encoding: mode)
        let storedData = StoredValue(encoding: data)
        let reply = message
        return try bridge.run(
            call, .write, readingFirst: .worker(namespace: namespace, id: worker),
            { tx in
                try tx.workerHeartbeat(
                    namespace: namespace, worker: worker, mode: storedMode, data: storedData,
                    parent: parent.flatMap { $0.isEmpty ? nil : $0 }, expiresIn: expiresIn)
            }
        ) { _ in tuple(true, reply) }
    }

    /// R() of a coerced number: an integer stays an integer; a string renders as the number it parses to.
    static func renderCoerced(_ value: CBORValue, _ number: Double) -> [UInt8] {
        switch value {
        case .unsigned, .negative, .float: return PythonRepr.render(value)
        default:
            let text = value.stringOctets ?? []
            let isInteger =
                !text.contains(UInt8(ascii: ".")) && !text.contains(UInt8(ascii: "e"))
                && !text.contains(UInt8(ascii: "E"))
            if isInteger, let int = value.intLike { return Array(String(int).utf8) }
            return Array(PythonRepr.formatFloat(number).utf8)
        }
    }

    func workerUnregister(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let worker = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.workerUnregister(namespace: namespace, worker: worker) }) {
            existed in
            existed
                ? tuple(true, .null) : tuple(false, .bytes(Array("no worker ".utf8) + PythonRepr.quote(worker.octets)))
        }
    }

    func listWorkerModes(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.liveWorkers(namespace: namespace) }) { workers in
            tuple(.map(CBORMap(workers.map { CBORPair(key: $0.id.value, value: .encoded($0.mode)) })), .null)
        }
    }

    func getWorkerInfo(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let worker = try call.identifier(0)
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.liveWorker(namespace: namespace, worker: worker) }) {
            record in
            guard let record else { return tuple(.null, .null) }
            if record.data == .null { return tuple(.map(CBORMap()), .null) }
            return tuple(.encoded(record.data), .null)
        }
    }

    func modeCounts(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.liveWorkers(namespace: namespace) }) { workers in
            tuple(.map(Self.modeCountMap(workers)), .null)
        }
    }

    /// Groups live workers' modes by value equality (rpc-methods.md §2.21, key order of wire-protocol.md §11.2).
    static func modeCountMap(_ workers: [WorkerRecord]) -> CBORMap {
        var groups: [(key: [UInt8], mode: CBORValue, count: Int)] = []
        var index: [[UInt8]: Int] = [:]
        for worker in workers {
            let mode = worker.mode.decoded()
            let key = mode.normalizedEncoding
            if let position = index[key] {
                groups[position].count += 1
            } else {
                index[key] = groups.count
                groups.append((key, mode, 1))
            }
        }
        func rank(_ mode: CBORValue) -> Int { mode.isString ? 0 : (mode.isNull ? 2 : 1) }
        groups.sort { a, b in
            let (ra, rb) = (rank(a.mode), rank(b.mode))
            if ra != rb { return ra < rb }
            if ra == 0 { return a.mode.stringOctets!.lexicographicallyPrecedes(b.mode.stringOctets!) }
            return PythonRepr.render(a.mode).lexicographicallyPrecedes(PythonRepr.render(b.mode))
        }
        return CBORMap(groups.map { CBORPair(key: $0.mode, value: .int($0.count)) })
    }

    func workerStats(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.liveWorkers(namespace: namespace) }) { workers in
            let parents = Set(workers.compactMap(\.parent))
            return .map(
                CBORMap([
                    (.bytes("num_expirable"), .int(workers.count)),
                    (.bytes("num_children"), .int(parents.count)),
                    (.bytes("num_workers"), .int(workers.count)),
                ]))
        }
    }

    // MARK: - Maintenance

    func archive(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let options = try Options(
            try call.map(0), call: call, optionsIndex: 0,
            schema: [
                "work_spec_names": .listOrNull, "limit_completed_count": .nonNegativeIntegerOrNull,
                "limit_completed_age": .numberOrNull,
            ])
        let names = options.value("work_spec_names")?.listElements?.compactMap(Identifier.init)
        let count =
            options.int("limit_completed_count").map { Int(clamping: $0) } ?? engine.configuration.limitCompletedCount
        let age = options.number("limit_completed_age") ?? engine.configuration.limitCompletedAge
        let namespace = self.namespace
        return try bridge.run(
            call, .write,
            { tx in try tx.archive(namespace: namespace, specNames: names, countLimit: count, ageLimit: age) }
        ) { _ in .null }
    }

    func now(_ call: RPCCall) throws(RPCError) -> RPCReply {
        @Sendable func seconds(_ instant: Int64) -> CBORValue {
            .int(instant >= 0 ? instant / 1_000_000 : (instant - 999_999) / 1_000_000)
        }
        // A backend shared by several daemons keeps the time (storage.md §4.4); elsewhere it is the local clock.
        if engine.backend.timeSource == .storage {
            return try bridge.run(call, .read, { tx in tx.now }) { instant in seconds(instant) }
        }
        return .value(seconds(engine.clock.now()))
    }
}

/// `tuple(a, b)`.
@inline(__always)
func tuple(_ first: CBORValue, _ second: CBORValue) -> CBORValue { .tuple([first, second]) }

/// Shared message texts (rpc-methods.md §1.3).
enum Messages {
    /// `no such work_spec ` + R(name).
    static func noSpec(_ name: Identifier) -> CBORValue {
        .bytes(Array("no such work_spec ".utf8) + PythonRepr.quote(name.octets))
    }

    /// `no such work spec ` + raw name.
    static func noSpecRaw(_ name: Identifier) -> CBORValue {
        .bytes(Array("no such work spec ".utf8) + name.octets)
    }
}

extension UnitBucket {
    /// The Python status code of a unit in this bucket (semantics.md §4.2): what `get_work_unit_status` reports.
    var pythonStatus: Int {
        switch self {
        case .ready, .delayed: return 1
        case .pending: return 3
        case .finished: return 4
        case .failed: return 5
        }
    }
}
