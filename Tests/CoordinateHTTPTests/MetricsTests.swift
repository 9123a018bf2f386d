import CBOR
import CoordinateClient
import Foundation
import TestSupport
import Testing

/// A parser of the Prometheus text exposition format 0.0.4: every sample must belong to a family declared by a
/// `# TYPE` line (histograms through their `_bucket`, `_sum` and `_count` series), label syntax and escapes must
/// be valid, and values must be numbers.
struct PrometheusText {
    struct Sample: Equatable {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    struct ParseError: Error, CustomStringConvertible {
        let description: String
    }

    var types: [String: String] = [:]
    var samples: [Sample] = []

    init(_ text: String) throws {
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3])
                else {
                    throw ParseError(description: "bad TYPE line: \(line)")
                }
                guard types[String(parts[2])] == nil else {
                    throw ParseError(description: "family declared twice: \(line)")
                }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            samples.append(try Self.sample(String(line)))
        }
        for sample in samples {
            let family =
                [sample.name]
                + ["_bucket", "_sum", "_count"].compactMap { suffix in
                    sample.name.hasSuffix(suffix) ? String(sample.name.dropLast(suffix.count)) : nil
                }
            guard family.contains(where: { types[$0] != nil }) else {
                throw ParseError(description: "sample of an undeclared family: \(sample.name)")
            }
        }
    }

    static func sample(_ line: String) throws -> Sample {
        var characters = Substring(line)
        let name = characters.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
        guard !name.isEmpty else { throw ParseError(description: "no metric name: \(line)") }
        characters = characters.dropFirst(name.count)
        var labels: [String: String] = [:]
        if characters.first == "{" {
            characters = characters.dropFirst()
            while characters.first != "}" {
                let label = characters.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                characters = characters.dropFirst(label.count)
                guard !label.isEmpty, characters.hasPrefix("=\"") else {
                    throw ParseError(description: "bad label: \(line)")
                }
                characters = characters.dropFirst(2)
                var value = ""
                while let next = characters.first, next != "\"" {
                    characters = characters.dropFirst()
                    if next == "\\" {
                        guard let escaped = characters.first else {
                            throw ParseError(description: "bad escape: \(line)")
                        }
                        characters = characters.dropFirst()
                        switch escaped {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw ParseError(description: "bad escape: \(line)")
                        }
                    } else {
                        value.append(next)
                    }
                }
                guard characters.first == "\"" else { throw ParseError(description: "unterminated label: \(line)") }
                characters = characters.dropFirst()
                labels[String(label)] = value
                if characters.first == "," { characters = characters.dropFirst() }
            }
            characters = characters.dropFirst()
        }
        guard characters.first == " ", let value = Double(characters.dropFirst().split(separator: " ").first ?? "")
        else {
            throw ParseError(description: "bad value: \(line)")
        }
        return Sample(name: String(name), labels: labels, value: value)
    }

    func value(_ name: String, _ labels: [String: String]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }?
            .value
    }

    func all(_ name: String) -> [Sample] { samples.filter { $0.name == name } }
}

@Suite("/metrics and /healthz")
struct MetricsTests {
    @Test("the exposition parses and its values match the engine's counts", arguments: RESTHarness.backends)
    func metricsMatchEngine(storage: String) async throws {
        try await withRESTHarness(storage: storage) { harness in
            let client = harness.client
            try await client.setWorkSpec(["name": "s"])
            try await client.setWorkSpec(["name": "gone"])
            try await client.addWorkUnits("s", (0..<10).map { WorkUnitSubmission(key: .text("u\($0)")) })
            try await client.addWorkUnits("s", [WorkUnitSubmission(key: "later", delay: 600)])
            let granted = try await client.getWork(workerID: "w", maxJobs: 4)
            try await granted[0].finish()
            try await granted[1].finish()
            try await granted[2].fail(traceback: "x")
            _ = try await client.call("archive", [.map(CBORMap([(.text("limit_completed_count"), 1)]))])
            try await client.workerHeartbeat(workerID: "live", lifetime: 600)
            try await client.workerHeartbeat(workerID: "leaving", lifetime: 600)
            try await client.workerUnregister(workerID: "leaving")
            _ = try await client.lock(lockerID: "w", paths: [["a"], ["b"]])
            _ = try? await client.call("no_such_method")
            _ = try await harness.http.json("GET", "/namespace/-/work_spec/s")
            try await client.deleteWorkSpec("gone")

            let response = try await harness.http.request("GET", "/metrics")
            #expect(response.status == 200)
            #expect(response.header("content-type") == "text/plain; version=0.0.4; charset=utf-8")
            let metrics = try PrometheusText(response.text)

            let counts = try await client.countWorkUnits("s")
            // Python counts fold archived units back in; the gauges show live ones and archived ones apart.
            let spec = ["namespace": "", "work_spec": "s"]
            func units(_ status: String) -> Double? {
                metrics.value("coordinate_work_units", spec.merging(["status": status]) { $1 })
            }
            #expect(units("available") == 6)
            #expect(units("delayed") == 1)
            #expect(units("pending") == 1)
            #expect(units("finished") == 1)
            #expect(units("failed") == 1)
            #expect(Double(counts[.available] ?? 0) == units("available")! + units("delayed")!)
            #expect(metrics.value("coordinate_archived_work_units", spec.merging(["status": "finished"]) { $1 }) == 1)
            #expect(Double(counts[.finished] ?? 0) == units("finished")! + 1)
            // Every status of every spec is emitted; a deleted spec disappears.
            #expect(metrics.all("coordinate_work_units").count == 5)
            #expect(metrics.all("coordinate_work_units").allSatisfy { $0.labels["work_spec"] == "s" })

            #expect(metrics.value("coordinate_attempts_total", spec.merging(["outcome": "granted"]) { $1 }) == 4)
            #expect(metrics.value("coordinate_attempts_total", spec.merging(["outcome": "finished"]) { $1 }) == 2)
            #expect(metrics.value("coordinate_attempts_total", spec.merging(["outcome": "failed"]) { $1 }) == 1)
            #expect(metrics.value("coordinate_workers", ["namespace": "", "state": "live"]) == 1)
            #expect(metrics.value("coordinate_workers", ["namespace": "", "state": "inactive"]) == 1)
            #expect(metrics.value("coordinate_locks_held", ["namespace": ""]) == 2)
            #expect(metrics.value("coordinate_rpc_requests_total", ["module": "JobQueue", "method": "get_work"]) == 1)
            #expect(metrics.value("coordinate_rpc_requests_total", ["module": "none", "method": "unknown"]) == 1)
            #expect(metrics.value("coordinate_rpc_errors_total", ["module": "none", "method": "unknown"]) == 1)
            #expect(metrics.value("coordinate_rpc_duration_seconds_count", ["method": "get_work"]) == 1)
            #expect(metrics.value("coordinate_rpc_duration_seconds_bucket", ["method": "get_work", "le": "+Inf"]) == 1)
            #expect(
                metrics.all("coordinate_rpc_duration_seconds_bucket").filter { $0.labels["method"] == "get_work" }.count
                    == 15)
            #expect(
                metrics.value(
                    "coordinate_http_requests_total",
                    ["route": "/namespace/{ns}/work_spec/{spec}", "method": "GET", "code": "200"]) == 1)
            #expect(metrics.value("coordinate_cborrpc_connections", [:]) == 1)
            #expect(metrics.value("coordinate_cborrpc_connections_total", [:]) ?? 0 >= 1)
            #expect(metrics.value("coordinate_cborrpc_rejected_total", ["reason": "max_connections"]) == 0)
            #expect(metrics.value("coordinate_storage_up", ["backend": storage]) == 1)
            if storage != "memory" {
                #expect(
                    metrics.value("coordinate_storage_operation_seconds_count", ["backend": storage, "op": "commit"])
                        ?? 0 > 0)
            }
            // PostgreSQL's own mechanics: write batches and conflict retries, one series each.
            for name in ["write_batches", "batched_writes", "batch_reruns", "conflict_retries"] {
                let family = "coordinate_storage_\(name)_total"
                #expect(metrics.types[family] == (storage == "postgres" ? "counter" : nil), "\(family)")
                if storage == "postgres" { #expect(metrics.value(family, ["backend": storage]) != nil, "\(family)") }
            }
            #expect(metrics.value("coordinate_build_info", ["version": "0.1.0"]) == 1)
            #expect(metrics.types["coordinate_summary_seconds"] == "histogram")
            #expect(metrics.types["coordinate_storage_errors_total"] == "counter")
            #expect(metrics.types["coordinate_storage_damaged_values_total"] == "counter")
            // The scrape itself is counted on the next one.
            let next = try PrometheusText(try await harness.http.request("GET", "/metrics").text)
            #expect(next.value("coordinate_summary_seconds_count", [:]) == 2)
            #expect(next.value("coordinate_http_requests_total", ["route": "/metrics", "code": "200"]) == 1)
        }
    }

    @Test("/healthz answers 200 with the storage and version, also under a token and for HEAD")
    func healthz() async throws {
        try await withRESTHarness { harness in
            let response = try await harness.http.request("GET", "/healthz")
            #expect(response.status == 200)
            #expect(response.header("content-type") == "application/json")
            #expect(response.text == #"{"status":"ok","storage":"memory","version":"0.1.0"}"#)
            let head = try await harness.http.request("HEAD", "/healthz")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
        }
    }
}
