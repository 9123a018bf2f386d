import CoordinateJSON
import Foundation
import TestSupport
import Testing

/// Walks every call of go-coordinate's Go REST client (`restclient`: its `Coordinate`, `Namespace`, `WorkSpec`,
/// `WorkUnit`, `Attempt` and `Worker` types) against a live daemon: each request is built as that client builds
/// it — from the URLs and URI templates of earlier answers, with the JSON its encoder writes for the `restdata`
/// and `coordinate` structures (every field, zero values included) — and each answer is checked for what the
/// client decodes from it (members, their JSON types, URLs it follows next). ugorji's codec, which the client
/// uses, matches member names exactly.
@Suite("REST: every call of go-coordinate's Go client")
struct GoClientWalkTests {
    /// The Go client's view of the daemon: its `resource` helpers (`Get`, `PutTo`, `PostTo`, `DeleteAt`).
    struct GoClient {
        let harness: RESTHarness

        /// `resource.Do`: a 2xx answer parsed as JSON (`.null` when empty); anything else fails the test.
        func call(
            _ method: String, _ url: String, _ body: String? = nil, expect status: Int? = nil,
            sourceLocation: SourceLocation = #_sourceLocation
        ) async throws -> JSONValue {
            let (code, json) = try await harness.call(
                method, url, body, accept: "application/vnd.diffeo.coordinate.v1+json")
            if let status {
                #expect(code == status, "\(method) \(url)", sourceLocation: sourceLocation)
            } else {
                #expect((200..<300).contains(code), "\(method) \(url): \(code) \(json)", sourceLocation: sourceLocation)
            }
            return json
        }

        /// RFC 6570 expansion as `uritemplates` does it for the templates the daemon sends: `{var}` and the
        /// form-style query `{?a*,b}` (lists exploded, absent variables left out).
        static func expand(_ template: String, _ variables: [String: [String]] = [:]) -> String {
            var result = ""
            var rest = Substring(template)
            while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
                result += rest[..<open]
                let expression = rest[rest.index(after: open)..<close]
                if expression.hasPrefix("?") {
                    var pairs: [String] = []
                    for name in expression.dropFirst().split(separator: ",") {
                        let key = String(name.hasSuffix("*") ? name.dropLast() : name)
                        for value in variables[key] ?? [] { pairs.append("\(key)=\(escape(value))") }
                    }
                    if !pairs.isEmpty { result += "?" + pairs.joined(separator: "&") }
                } else {
                    result += variables[String(expression)].flatMap(\.first).map(escape) ?? ""
                }
                rest = rest[rest.index(after: close)...]
            }
            return result + rest
        }

        static func escape(_ value: String) -> String {
            value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
                ?? value
        }
    }

    /// The members the client reads, with the JSON type it decodes them as.
    enum Kind { case string, number, bool, object, array, time, optionalTime, stringOrAbsent, arrayOrAbsent }

    static func check(
        _ json: JSONValue, _ members: [String: Kind], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for (name, kind) in members {
            let value = json[name]
            let ok: Bool
            switch (kind, value) {
            case (.string, .string?), (.number, .int?), (.number, .float?), (.bool, .bool?), (.object, .object?),
                (.array, .array?):
                ok = true
            case (.time, .string(let text)?): ok = RFC3339.parse(text) != nil
            case (.optionalTime, nil), (.optionalTime, .null?): ok = true
            case (.optionalTime, .string(let text)?): ok = RFC3339.parse(text) != nil
            case (.stringOrAbsent, nil), (.stringOrAbsent, .string?), (.arrayOrAbsent, nil), (.arrayOrAbsent, .array?):
                ok = true
            default: ok = false
            }
            #expect(ok, "\(what).\(name): \(String(describing: value))", sourceLocation: sourceLocation)
        }
    }

    struct MissingLink: Error, CustomStringConvertible {
        let description: String
    }

    /// A URL member of an answer, which the client follows next.
    static func link(_ json: JSONValue, _ name: String) throws -> String {
        guard let text = json[name]?.stringValue else { throw MissingLink(description: "no \(name) in \(json)") }
        return text
    }

    static let attemptShort: [String: Kind] = [
        "url": .string, "work_unit_url": .string, "worker_url": .string, "start_time": .time,
    ]
    static let attempt: [String: Kind] = attemptShort.merging([
        "status": .string, "data": .object, "end_time": .optionalTime, "expiration_time": .time, "renew_url": .string,
        "expire_url": .string, "finish_url": .string, "fail_url": .string, "retry_url": .string,
    ]) { $1 }
    static let worker: [String: Kind] = [
        "url": .string, "name": .string, "parent": .stringOrAbsent, "parent_url": .stringOrAbsent,
        "child_urls": .arrayOrAbsent, "active": .bool, "mode": .string, "data": .object, "expiration": .time,
        "last_update": .time, "request_attempts_url": .string, "make_attempt_url": .string,
        "active_attempts_url": .string, "all_attempts_url": .string, "child_attempts_url": .string,
    ]
    static let workUnit: [String: Kind] = [
        "url": .string, "name": .string, "data": .object, "meta": .object, "status": .string, "work_spec_url": .string,
        "active_attempt_url": .stringOrAbsent, "attempts_url": .string,
    ]
    static let workSpecMeta: [String: Kind] = [
        "priority": .number, "weight": .number, "paused": .bool, "continuous": .bool, "can_be_continuous": .bool,
        "interval": .number, "next_continuous": .optionalTime, "max_running": .number,
        "max_attempts_returned": .number, "next_work_spec_name": .string, "available_count": .number,
        "pending_count": .number,
    ]

    /// restdata.Worker as the client encodes it for `Update`, `SetParent` and `Deactivate`.
    static func workerBody(active: Bool, parent: String?, mode: String = "", data: String = "null") -> String {
        let zero = "0001-01-01T00:00:00Z"
        let parentMember = parent.map { #""parent": "\#($0)", "# } ?? ""
        return """
            {"url": "", "name": "", \(parentMember)"active": \(active), "mode": "\(mode)", "data": \(data), \
            "expiration": "\(active ? "2100-01-01T00:00:00Z" : zero)", "last_update": "\(active ? "2026-01-01T00:00:00Z" : zero)", \
            "request_attempts_url": "", "make_attempt_url": "", "active_attempts_url": "", "all_attempts_url": "", \
            "child_attempts_url": ""}
            """
    }

    /// restdata.WorkUnit as the client encodes it (`AddWorkUnit`, `SetPriority`, `ClearActiveAttempt`, the
    /// priority changes).
    static func workUnitBody(
        name: String = "", data: String? = nil, priority: Double?, activeAttempt: String? = nil
    )
        -> String
    {
        let meta = priority.map { #"{"priority": \#($0), "not_before": "0001-01-01T00:00:00Z"}"# } ?? "null"
        let dataMember = data.map { #""data": \#($0), "# } ?? ""
        let attemptMember = activeAttempt.map { #""active_attempt_url": "\#($0)", "# } ?? ""
        return """
            {"url": "", "name": "\(name)", \(dataMember)"meta": \(meta), "status": "any", "work_spec_url": "", \
            \(attemptMember)"attempts_url": ""}
            """
    }

    /// restdata.AttemptCompletion.
    static func completion(data: String? = nil, extend: Int64 = 0, delay: Int64 = 0) -> String {
        (data.map { #"{"data": \#($0), "# } ?? "{") + #""extend_duration": \#(extend), "delay": \#(delay)}"#
    }

    @Test(
        "Coordinate, Namespace, WorkSpec, WorkUnit, Attempt and Worker, call by call", arguments: RESTHarness.backends)
    func walk(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let go = GoClient(harness: harness)
            typealias T = GoClient

            // restclient.New: the root document.
            let root = try await go.call("GET", "/")
            Self.check(root, ["namespaces_url": .string, "namespace_url": .string], "root")
            let namespaceTemplate = try Self.link(root, "namespace_url")

            // Coordinate.Namespace and Namespace.Name.
            let nsURL = T.expand(namespaceTemplate, ["namespace": ["walk"]])
            let ns = try await go.call("GET", nsURL)
            Self.check(
                ns,
                [
                    "url": .string, "name": .string, "work_specs_url": .string, "work_spec_url": .string,
                    "workers_url": .string, "worker_url": .string,
                ], "namespace")
            #expect(ns["name"] == "walk")
            // Coordinate.Namespaces: the list, then each namespace by its URL.
            let namespaces = try #require(
                try await go.call("GET", try Self.link(root, "namespaces_url"))["namespaces"]?.elements)
            for short in namespaces {
                Self.check(short, ["url": .string, "name": .string], "namespace short")
                _ = try await go.call("GET", try Self.link(short, "url"))
            }
            #expect(namespaces.contains { $0["name"] == "walk" })

            // Namespace.SetWorkSpec: restdata.WorkSpec{Data: …}; the answer is a WorkSpecShort, then the spec.
            let specsURL = try Self.link(ns, "work_specs_url")
            let specTemplate = try Self.link(ns, "work_spec_url")
            func setWorkSpec(_ data: String) async throws -> JSONValue {
                let body = """
                    {"url": "", "name": "", "data": \(data), "meta": "", "summary_url": "", "work_units_url": "", \
                    "work_unit_query_url": "", "work_unit_url": "", "work_unit_counts_url": "", \
                    "work_unit_change_url": "", "work_unit_adjust_url": ""}
                    """
                let short = try await go.call("POST", specsURL, body)
                Self.check(short, ["url": .string, "name": .string], "work spec short")
                return try await go.call("GET", try Self.link(short, "url"))
            }
            _ = try await setWorkSpec(#"{"name": "next"}"#)
            let spec = try await setWorkSpec(#"{"name": "spec", "then": "next", "max_getwork": 5}"#)
            Self.check(
                spec,
                [
                    "url": .string, "name": .string, "data": .object, "work_units_url": .string,
                    "work_unit_query_url": .string, "work_unit_url": .string, "work_unit_counts_url": .string,
                    "work_unit_change_url": .string, "work_unit_adjust_url": .string, "meta": .string,
                    "summary_url": .string,
                ], "work spec")
            let specURL = try Self.link(spec, "url")
            // Namespace.WorkSpec, and an unknown one: 404 with the code the client maps to ErrNoSuchWorkSpec.
            #expect(try await go.call("GET", T.expand(specTemplate, ["spec": ["spec"]]))["name"] == "spec")
            let missing = try await go.call("GET", T.expand(specTemplate, ["spec": ["nope"]]), expect: 404)
            #expect(missing["error"] == "ErrNoSuchWorkSpec")
            #expect(missing["value"] == "nope")
            // Namespace.WorkSpecNames.
            let names = try #require(try await go.call("GET", specsURL)["work_specs"]?.elements).compactMap {
                $0["name"]?.stringValue
            }
            #expect(names.sorted() == ["next", "spec"])
            // WorkSpec.Data and SetData (a PUT of restdata.WorkSpec to the spec's URL); a changed name is refused.
            #expect(spec["data"]?["then"] == "next")
            _ = try await go.call(
                "PUT", specURL,
                #"{"url": "", "name": "", "data": {"name": "spec", "then": "next", "priority": 2, "max_getwork": 5}}"#)
            #expect(try await go.call("GET", specURL)["data"]?["priority"] == 2)
            let renamed = try await go.call("PUT", specURL, #"{"data": {"name": "other"}}"#, expect: 400)
            #expect(renamed["error"] == "ErrChangedName")

            // WorkSpec.Meta(withCounts) and SetMeta (the whole coordinate.WorkSpecMeta, zero values included).
            let metaTemplate = try Self.link(spec, "meta")
            let meta = try await go.call("GET", T.expand(metaTemplate, ["counts": ["true"]]))
            Self.check(meta, Self.workSpecMeta, "meta")
            #expect(meta["priority"] == 2)
            #expect(meta["max_attempts_returned"] == 5)
            #expect(meta["next_work_spec_name"] == "next")
            _ = try await go.call(
                "PUT", T.expand(metaTemplate),
                """
                {"priority": 7, "weight": 3, "paused": false, "continuous": false, "can_be_continuous": false, \
                "min_memory_gb": 0, "interval": 0, "next_continuous": "0001-01-01T00:00:00Z", "max_running": 0, \
                "max_attempts_returned": 5, "next_work_spec_name": "", "then_preempts": false, \
                "available_count": 0, "pending_count": 0, "runtime": ""}
                """)
            let updated = try await go.call("GET", T.expand(metaTemplate, ["counts": ["false"]]))
            #expect(updated["priority"] == 7)
            #expect(updated["weight"] == 3)
            #expect(updated["next_work_spec_name"] == "next")  // not settable: kept

            // WorkSpec.AddWorkUnit: restdata.WorkUnit; the answer is a WorkUnitShort.
            let unitsURL = try Self.link(spec, "work_units_url")
            for (name, priority) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
                let short = try await go.call(
                    "POST", unitsURL, Self.workUnitBody(name: name, data: #"{"n": 1}"#, priority: priority))
                Self.check(short, ["url": .string, "name": .string], "work unit short")
            }
            // WorkSpec.WorkUnit, and WorkUnit.Name, Data, Status, Priority, WorkSpec.
            let unitTemplate = try Self.link(spec, "work_unit_url")
            let unitURL = T.expand(unitTemplate, ["unit": ["a"]])
            let unit = try await go.call("GET", unitURL)
            Self.check(unit, Self.workUnit, "work unit")
            Self.check(try #require(unit["meta"]), ["priority": .number], "work unit meta")
            #expect(unit["status"] == "available")
            #expect(unit["work_spec_url"] == .string(specURL))
            // WorkSpec.WorkUnits with a query (names, statuses, previous, limit), then each unit.
            let queryTemplate = try Self.link(spec, "work_unit_query_url")
            let listed = try #require(
                try await go.call(
                    "GET", T.expand(queryTemplate, ["name": ["a", "b", "c"], "status": ["available"], "limit": ["2"]])
                )["work_units"]?.elements)
            #expect(listed.compactMap { $0["name"]?.stringValue } == ["a", "b"])
            for short in listed { _ = try await go.call("GET", try Self.link(short, "url")) }
            #expect(
                try await go.call("GET", T.expand(queryTemplate, ["previous": ["a"]]))["work_units"]?.elements?.count
                    == 2)
            // WorkSpec.CountWorkUnitStatus: keys are the statuses' JSON names.
            #expect(
                try await go.call("GET", try Self.link(spec, "work_unit_counts_url")) == ["available": 3])
            // WorkSpec.SetWorkUnitPriorities and AdjustWorkUnitPriorities.
            _ = try await go.call(
                "POST", T.expand(try Self.link(spec, "work_unit_change_url"), ["name": ["a"]]),
                Self.workUnitBody(priority: 10))
            _ = try await go.call(
                "POST", T.expand(try Self.link(spec, "work_unit_adjust_url"), ["name": ["a", "b"]]),
                Self.workUnitBody(priority: 0.5))
            #expect(try await go.call("GET", unitURL)["meta"]?["priority"] == .float(10.5))
            // WorkUnit.SetPriority: a PUT of restdata.WorkUnit with its meta.
            _ = try await go.call("PUT", unitURL, Self.workUnitBody(priority: 20))
            #expect(try await go.call("GET", unitURL)["meta"]?["priority"] == .float(20))
            // WorkSpec.Summarize.
            let summary = try #require(
                try await go.call("GET", try Self.link(spec, "summary_url")).elements)
            #expect(summary.first?["Status"] == "available")
            #expect(summary.first?["Count"] == 3)

            // Namespace.Worker, then Worker.Update, Name, Active, Mode, Data, Expiration, LastUpdate.
            let workerTemplate = try Self.link(ns, "worker_url")
            let parentURL = T.expand(workerTemplate, ["worker": ["parent"]])
            let workerURL = T.expand(workerTemplate, ["worker": ["child"]])
            Self.check(try await go.call("GET", parentURL), Self.worker, "worker")
            var worker = try await go.call("GET", workerURL)
            _ = try await go.call(
                "PUT", workerURL, Self.workerBody(active: true, parent: nil, mode: "RUN", data: #"{"pid": 4}"#))
            worker = try await go.call("GET", workerURL)
            Self.check(worker, Self.worker, "worker")
            #expect(worker["active"] == true)
            #expect(worker["mode"] == "RUN")
            #expect(worker["data"] == ["pid": 4])
            #expect(worker["expiration"] == "2100-01-01T00:00:00Z")
            // Worker.SetParent (sent inactive, as the client does), Parent, Children.
            _ = try await go.call("PUT", workerURL, Self.workerBody(active: false, parent: "parent"))
            worker = try await go.call("GET", workerURL)
            #expect(worker["parent"] == "parent")
            #expect(try await go.call("GET", try Self.link(worker, "parent_url"))["name"] == "parent")
            let children = try #require(try await go.call("GET", parentURL)["child_urls"]?.elements)
            #expect(children == [.string(workerURL)])
            _ = try await go.call(
                "PUT", workerURL, Self.workerBody(active: true, parent: "parent", mode: "RUN", data: #"{"pid": 4}"#))

            // Worker.RequestAttempts: coordinate.AttemptRequest; the answer names the spec and holds full Attempts.
            let granted = try await go.call(
                "POST", try Self.link(worker, "request_attempts_url"),
                #"{"available_gb": 0.0, "lifetime": 0, "number_of_work_units": 2, "runtimes": null, "work_specs": null}"#
            )
            #expect(granted["work_spec_url"] == .string(specURL))
            let attempts = try #require(granted["attempts"]?.elements)
            #expect(attempts.count == 2)
            for attempt in attempts {
                Self.check(attempt, Self.attempt, "attempt")
                // The client follows each attempt's unit and worker URLs.
                _ = try await go.call("GET", try Self.link(attempt, "work_unit_url"))
                #expect(try await go.call("GET", try Self.link(attempt, "worker_url"))["name"] == "child")
            }
            // Highest priority first: a (20), then c (3).
            let first = attempts[0]
            let second = attempts[1]
            #expect(first["work_unit_url"] == .string(unitURL))
            // Attempt.Status, Data, StartTime, EndTime, ExpirationTime (a refresh of the attempt's URL).
            let firstURL = try Self.link(first, "url")
            let refreshed = try await go.call("GET", firstURL)
            Self.check(refreshed, Self.attempt, "attempt")
            #expect(refreshed["status"] == "pending")
            // WorkUnit.ActiveAttempt and Attempts.
            let held = try await go.call("GET", unitURL)
            #expect(held["status"] == "pending")
            #expect(held["active_attempt_url"] == .string(firstURL))
            let unitAttempts = try #require(
                try await go.call("GET", try Self.link(held, "attempts_url"))["attempts"]?.elements)
            #expect(unitAttempts.count == 1)
            for short in unitAttempts { Self.check(short, Self.attemptShort, "attempt short") }
            // Worker.ActiveAttempts, AllAttempts and the parent's ChildAttempts.
            for (list, owner) in [("active_attempts_url", workerURL), ("all_attempts_url", workerURL)] {
                let url = try Self.link(try await go.call("GET", owner), list)
                let shorts = try #require(try await go.call("GET", url)["attempts"]?.elements)
                #expect(shorts.count == 2, "\(list)")
                for short in shorts { Self.check(short, Self.attemptShort, list) }
            }
            let childAttempts = try #require(
                try await go.call(
                    "GET", try Self.link(try await go.call("GET", parentURL), "child_attempts_url")
                )["attempts"]?.elements)
            #expect(childAttempts.count == 2)

            // Attempt.Renew, then Finish with output: the unit finishes and chains into "next".
            _ = try await go.call(
                "POST", try Self.link(first, "renew_url"),
                Self.completion(data: #"{"n": 1, "step": 2}"#, extend: 60_000_000_000))
            #expect(try await go.call("GET", firstURL)["data"]?["step"] == 2)
            _ = try await go.call(
                "POST", try Self.link(first, "finish_url"), Self.completion(data: #"{"output": ["x"]}"#))
            let finished = try await go.call("GET", firstURL)
            #expect(finished["status"] == "finished")
            Self.check(finished, ["end_time": .time], "finished attempt")
            #expect(try await go.call("GET", unitURL)["status"] == "finished")
            let nextUnits = try await go.call(
                "GET",
                T.expand(try Self.link(try await setWorkSpec(#"{"name": "next"}"#), "work_unit_query_url")))
            #expect(nextUnits["work_units"]?.elements?.compactMap { $0["name"]?.stringValue } == ["x"])
            // Attempt.Retry with a delay, Attempt.Expire, Attempt.Fail on the second unit's attempts.
            let secondURL = try Self.link(second, "url")
            _ = try await go.call(
                "POST", try Self.link(second, "retry_url"), Self.completion(delay: 3_600_000_000_000))
            #expect(try await go.call("GET", secondURL)["status"] == "retryable")
            #expect(try await go.call("GET", try Self.link(second, "work_unit_url"))["status"] == "delayed")
            // Worker.MakeAttempt: restdata.AttemptSpecific; the answer is an Attempt.
            let made = try await go.call(
                "POST", try Self.link(worker, "make_attempt_url"),
                #"{"work_spec": "spec", "work_unit": "b", "lifetime": 0}"#)
            Self.check(made, Self.attempt, "made attempt")
            _ = try await go.call("POST", try Self.link(made, "expire_url"), Self.completion())
            #expect(try await go.call("GET", try Self.link(made, "url"))["status"] == "expired")
            let again = try await go.call(
                "POST", try Self.link(worker, "make_attempt_url"),
                #"{"work_spec": "spec", "work_unit": "b", "lifetime": 0}"#)
            _ = try await go.call(
                "POST", try Self.link(again, "fail_url"), Self.completion(data: #"{"traceback": "boom"}"#))
            #expect(try await go.call("GET", try Self.link(again, "work_unit_url"))["status"] == "failed")
            // A second finish of the finished attempt is a no-op; a renew of it is refused with a mapped code.
            _ = try await go.call("POST", try Self.link(first, "finish_url"), Self.completion())
            let notPending = try await go.call(
                "POST", try Self.link(first, "renew_url"), Self.completion(extend: 1), expect: 409)
            #expect(notPending["error"] == "ErrNotPending")

            // WorkUnit.ClearActiveAttempt: "-" as the active attempt URL.
            _ = try await go.call("PUT", unitURL, Self.workUnitBody(priority: nil, activeAttempt: "-"))
            let cleared = try await go.call("GET", unitURL)
            #expect(cleared["status"] == "available")
            #expect(cleared["active_attempt_url"] == nil)
            // Worker.Deactivate.
            _ = try await go.call("PUT", workerURL, Self.workerBody(active: false, parent: "parent"))
            #expect(try await go.call("GET", workerURL)["active"] == false)

            // WorkSpec.DeleteWorkUnits: the answer is restdata.WorkUnitDeleted, whose member is "Deleted".
            let deleted = try await go.call("DELETE", T.expand(queryTemplate, ["status": ["failed"]]))
            #expect(deleted == ["Deleted": 1])
            // Namespace.DestroyWorkSpec, then Namespace.Destroy.
            _ = try await go.call("DELETE", specURL, expect: 204)
            _ = try await go.call("GET", specURL, expect: 404)
            _ = try await go.call("DELETE", nsURL, expect: 204)
        }
    }
}
