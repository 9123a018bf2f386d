import CBOR
import CoordinateEngine
import CoordinateJSON

/// URL building and the JSON representations of rest-api.md §4.
enum Rep {
    static func segment(_ name: Identifier) -> String { CoordinateJSON.pathSegment(name.octets) }

    static func namespaceURL(_ ns: Identifier) -> String { "/namespace/" + segment(ns) }
    static func specURL(_ ns: Identifier, _ spec: Identifier) -> String {
        namespaceURL(ns) + "/work_spec/" + segment(spec)
    }
    static func unitURL(_ ns: Identifier, _ spec: Identifier, _ unit: Identifier) -> String {
        specURL(ns, spec) + "/work_unit/" + segment(unit)
    }
    static func attemptURL(_ ns: Identifier, _ id: Int64) -> String { namespaceURL(ns) + "/attempt/\(id)" }
    static func workerURL(_ ns: Identifier, _ worker: Identifier) -> String {
        namespaceURL(ns) + "/worker/" + segment(worker)
    }

    static func name(_ name: Identifier, field: String = "name") -> [(String, JSONValue)] {
        CoordinateJSON.nameMembers(name.octets, field: field)
    }

    static func time(_ instant: Timestamp?) -> JSONValue { CoordinateJSON.time(microseconds: instant) }

    static func data(_ value: StoredValue) -> JSONValue { CoordinateJSON.data(value.decoded()) }

    // MARK: Namespaces

    static func namespaceShort(_ ns: Identifier) -> JSONValue {
        .object([("url", .string(namespaceURL(ns)))] + name(ns))
    }

    static func namespace(_ ns: Identifier) -> JSONValue {
        let url = namespaceURL(ns)
        return .object(
            [("url", .string(url))] + name(ns) + [
                ("summary_url", .string(url + "/summary")), ("work_specs_url", .string(url + "/work_spec")),
                ("work_spec_url", .string(url + "/work_spec/{spec}")), ("workers_url", .string(url + "/worker")),
                ("worker_url", .string(url + "/worker/{worker}")), ("attempt_url", .string(url + "/attempt/{id}")),
                ("locks_url", .string(url + "/lock")),
            ])
    }

    // MARK: Specs

    static func specShort(_ ns: Identifier, _ spec: SpecRecord) -> JSONValue {
        .object([("url", .string(specURL(ns, spec.name)))] + name(spec.name))
    }

    static func spec(_ ns: Identifier, _ spec: SpecRecord) -> JSONValue {
        let url = specURL(ns, spec.name)
        let query = "{?name*,status*,previous,limit}"
        return .object(
            [("url", .string(url))] + name(spec.name) + [
                ("data", data(spec.data)), ("summary_url", .string(url + "/summary")),
                ("work_units_url", .string(url + "/work_unit")),
                ("work_unit_query_url", .string(url + "/work_unit" + query)),
                ("work_unit_url", .string(url + "/work_unit/{unit}")),
                ("work_unit_counts_url", .string(url + "/counts")),
                ("work_unit_change_url", .string(url + "/change" + query)),
                ("work_unit_adjust_url", .string(url + "/adjust" + query)), ("meta", .string(url + "/meta{?counts}")),
                ("add_work_units_url", .string(url + "/add_work_units")),
                ("update_work_units_url", .string(url + "/update_work_units")),
            ])
    }

    static func meta(_ spec: SpecRecord, counts: UnitCounts?) -> JSONValue {
        let fields = spec.effective
        var members: [(String, JSONValue)] = [
            ("priority", .int(fields.priority)), ("weight", .int(fields.weight)), ("paused", .bool(fields.paused)),
            ("continuous", .bool(fields.continuous)), ("can_be_continuous", .bool(fields.canBeContinuous)),
        ]
        if fields.minGB != 0 { members.append(("min_memory_gb", .float(fields.minGB))) }
        members += [
            ("interval", .int((fields.interval ?? 0) &* 1000)), ("next_continuous", time(spec.nextContinuous)),
            ("max_running", .int(fields.maxRunning ?? 0)), ("max_attempts_returned", .int(fields.maxGetwork ?? 0)),
            ("max_retries", .int(fields.maxRetries ?? 0)),
            ("next_work_spec_name", .string(fields.then.map { String(decoding: $0.octets, as: UTF8.self) } ?? "")),
            ("then_preempts", .bool(fields.thenPreempts)),
            ("runtime", .string(String(decoding: fields.runtime, as: UTF8.self))),
            ("available_count", .int(Int64(counts?.ready ?? 0))), ("pending_count", .int(Int64(counts?.pending ?? 0))),
        ]
        if let counts {
            members += [
                ("delayed_count", .int(Int64(counts.delayed))), ("finished_count", .int(Int64(counts.finished))),
                ("failed_count", .int(Int64(counts.failed))), ("archived_finished_count", .int(spec.archivedFinished)),
                ("archived_failed_count", .int(spec.archivedFailed)),
            ]
        }
        return .object(members)
    }

    static func counts(_ counts: UnitCounts) -> JSONValue {
        let order: [UnitBucket] = [.ready, .delayed, .pending, .finished, .failed]
        return .object(order.filter { counts[$0] > 0 }.map { ($0.name, .int(Int64(counts[$0]))) })
    }

    static func summary(_ records: [SummaryRecord]) -> JSONValue {
        .array(
            records.map { record in
                .object([
                    ("Namespace", .string(record.namespace.description)),
                    ("WorkSpec", .string(record.spec.description)),
                    ("Status", .string(record.bucket.name)), ("Count", .int(Int64(record.count))),
                ])
            })
    }

    // MARK: Units

    static func unitShort(_ ns: Identifier, _ spec: Identifier, _ unit: UnitRecord) -> JSONValue {
        .object([("url", .string(unitURL(ns, spec, unit.key)))] + name(unit.key))
    }

    static func unit(
        _ ns: Identifier, _ spec: Identifier, _ unit: UnitRecord, latest: AttemptRecord?, now: Timestamp
    ) -> JSONValue {
        let url = unitURL(ns, spec, unit.key)
        let bucket = unit.bucket(at: now)
        var members: [(String, JSONValue)] = [("url", .string(url))] + name(unit.key)
        members.append(("data", data(unit.data)))
        members.append(("meta", .object([("priority", .float(unit.priority)), ("not_before", time(unit.notBefore))])))
        members.append(("status", .string(bucket.name)))
        switch bucket {
        case .pending:
            if let latest { members += name(latest.worker, field: "worker_id") }
            members.append(("expiration", time(unit.leaseDeadline)))
        case .finished, .failed:
            if let latest { members += name(latest.worker, field: "worker_id") }
            members.append(("expiration", time(unit.completionTime)))
        case .ready, .delayed:
            break
        }
        members.append(("work_spec_url", .string(specURL(ns, spec))))
        if [.pending, .finished, .failed].contains(bucket), let latest {
            members.append(("active_attempt_url", .string(attemptURL(ns, latest.id))))
        }
        members.append(("attempts_url", .string(url + "/attempts")))
        return .object(members)
    }

    // MARK: Attempts

    static func attemptShort(
        _ ns: Identifier, _ attempt: AttemptRecord, spec: Identifier, unit: Identifier
    ) -> JSONValue {
        .object([
            ("url", .string(attemptURL(ns, attempt.id))), ("id", .int(attempt.id)),
            ("work_unit_url", .string(unitURL(ns, spec, unit))), ("worker_url", .string(workerURL(ns, attempt.worker))),
            ("start_time", time(attempt.startTime)),
        ])
    }

    static func attempt(_ ns: Identifier, _ attempt: AttemptRecord, spec: Identifier, unit: Identifier) -> JSONValue {
        let url = attemptURL(ns, attempt.id)
        return .object([
            ("url", .string(url)), ("id", .int(attempt.id)), ("work_unit_url", .string(unitURL(ns, spec, unit))),
            ("worker_url", .string(workerURL(ns, attempt.worker))), ("start_time", time(attempt.startTime)),
            ("status", .string(attempt.status.name)), ("data", data(attempt.data)), ("end_time", time(attempt.endTime)),
            ("expiration_time", time(attempt.expirationTime)), ("renew_url", .string(url + "/renew")),
            ("expire_url", .string(url + "/expire")), ("finish_url", .string(url + "/finish")),
            ("fail_url", .string(url + "/fail")), ("retry_url", .string(url + "/retry")),
        ])
    }

    // MARK: Workers

    static func workerShort(_ ns: Identifier, _ worker: WorkerRecord) -> JSONValue {
        .object([("url", .string(workerURL(ns, worker.id)))] + name(worker.id))
    }

    /// A mode for JSON: strings decoded with replacement, null as `""`, anything else as R().
    static func mode(_ value: StoredValue) -> JSONValue {
        let decoded = value.decoded()
        if decoded.isNull { return .string("") }
        if let octets = decoded.stringOctets { return .string(String(decoding: octets, as: UTF8.self)) }
        return .string(PythonRepr.renderString(decoded))
    }

    static func worker(_ ns: Identifier, _ worker: WorkerRecord, children: [WorkerRecord], now: Timestamp) -> JSONValue
    {
        let url = workerURL(ns, worker.id)
        var members: [(String, JSONValue)] = [("url", .string(url))] + name(worker.id)
        if let parent = worker.parent {
            members += name(parent, field: "parent")
            members.append(("parent_url", .string(workerURL(ns, parent))))
        }
        if !children.isEmpty {
            members.append(("child_urls", .array(children.map { .string(workerURL(ns, $0.id)) })))
        }
        members += [
            ("active", .bool(worker.isLive(at: now))), ("mode", mode(worker.mode)), ("data", data(worker.data)),
            ("expiration", time(worker.expiration)), ("last_update", time(worker.lastHeartbeat)),
            ("first_seen", time(worker.firstSeen)), ("request_attempts_url", .string(url + "/request_attempts")),
            ("make_attempt_url", .string(url + "/make_attempt")),
            ("active_attempts_url", .string(url + "/active_attempts")),
            ("all_attempts_url", .string(url + "/all_attempts")),
            ("child_attempts_url", .string(url + "/child_attempts")),
        ]
        return .object(members)
    }

    // MARK: Locks

    static func lock(_ lock: LockRecord) -> JSONValue {
        let path = lock.path.decoded()
        return .object(
            [
                ("path", .string(PythonRepr.renderString(path))),
                ("path_cbor", .string(Base64.encode(lock.path.bytes))),
            ] + name(lock.owner, field: "owner") + [("deadline", time(lock.deadline))])
    }
}
