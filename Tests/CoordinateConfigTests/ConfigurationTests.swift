import CoordinateConfig
import Foundation
import Testing

@Suite("Configuration file")
struct ConfigurationTests {
    func parse(_ yaml: String) throws -> (CoordinateConfiguration, [String]) {
        var warnings: [String] = []
        let configuration = try CoordinateConfiguration.parse(yaml: yaml, source: "test.yaml", warnings: &warnings)
        return (configuration, warnings)
    }

    @Test("defaults match the specification's block")
    func defaults() {
        let configuration = CoordinateConfiguration()
        #expect(configuration.namespace == "")
        #expect(configuration.server.port == 5932)
        #expect(configuration.server.httpPort == 5980)
        #expect(configuration.server.maxMessageBytes == 67_108_864)
        #expect(configuration.server.maxNestingDepth == 256)
        #expect(configuration.server.maxConnections == 4096)
        #expect(configuration.server.maxPendingResponseBytes == 4_194_304)
        #expect(configuration.defaultLifetime == .int(900))
        #expect(configuration.jobQueue.archiveInterval == .int(60))
        #expect(configuration.server.modules == ["JobQueue", "LockService"])
        #expect(configuration.server.postgresPoolSize == 10)
        #expect(configuration.server.postgresWriteTransactions == 2)
    }

    @Test("keys are read, other top-level keys ignored, unknown coordinate keys warned about")
    func readsKeys() throws {
        let (configuration, warnings) = try parse(
            """
            logging: {root: {level: DEBUG}}
            coordinate:
              namespace: ns1
              address: "10.0.0.1:6000"
              timeout: 2.5
              bogus: 1
              server:
                port: 6001
                http_port: 0
                storage: memory
                idle_timeout: 30
                max_units_per_call: 100
                postgres_pool_size: 6
                postgres_write_transactions: 3
                cborrpc_allow: ["127.0.0.1/32", "10.0.0.0/8"]
                surprise: true
              job_queue:
                limit_completed_count: 0
            """)
        #expect(configuration.namespace == "ns1")
        #expect(configuration.clientAddress() == ("10.0.0.1", 6000))
        #expect(configuration.timeout == .double(2.5))
        #expect(configuration.server.port == 6001)
        #expect(configuration.server.httpPort == 0)
        #expect(configuration.server.storage == .memory)
        #expect(configuration.server.idleTimeout == .int(30))
        #expect(configuration.server.maxUnitsPerCall == 100)
        #expect(configuration.server.postgresPoolSize == 6)
        #expect(configuration.server.postgresWriteTransactions == 3)
        #expect(configuration.server.cborrpcAllow == ["127.0.0.1/32", "10.0.0.0/8"])
        #expect(configuration.jobQueue.limitCompletedCount == 0)
        #expect(warnings.count == 2)
        #expect(warnings.contains("test.yaml: coordinate.bogus: unknown configuration key ignored"))
    }

    @Test(
        "invalid values are configuration errors naming the key",
        arguments: [
            ("coordinate:\n  server:\n    port: nope\n", "test.yaml: coordinate.server.port: expected an integer"),
            (
                "coordinate:\n  server:\n    storage: redis\n",
                "test.yaml: coordinate.server.storage: unknown storage backend redis"
            ),
            (
                "coordinate:\n  server:\n    modules: [JobQueue, Nope]\n",
                "test.yaml: coordinate.server.modules: unknown module Nope"
            ),
            (
                "coordinate:\n  server:\n    log_format: xml\n",
                "test.yaml: coordinate.server.log_format: unknown log format xml"
            ),
            (
                "coordinate:\n  job_queue:\n    limit_completed_count: -1\n",
                "test.yaml: coordinate.job_queue.limit_completed_count: must not be negative"
            ),
            (
                "coordinate:\n  server:\n    storage: postgres\n",
                "test.yaml: coordinate.server.postgres_url: required when storage is postgres"
            ),
            (
                "coordinate:\n  server:\n    http_token: \"\"\n",
                "test.yaml: coordinate.server.http_token: must not be empty"
            ),
            (
                "coordinate:\n  server:\n    cborrpc_allow: [\"10.0.0.0/33\"]\n",
                "test.yaml: coordinate.server.cborrpc_allow: malformed CIDR 10.0.0.0/33"
            ),
            (
                "coordinate:\n  server:\n    tls_cert_file: /nonexistent\n",
                "test.yaml: coordinate.server.tls_key_file: tls_cert_file and tls_key_file must be set together"
            ),
            (
                "coordinate:\n  server:\n    postgres_write_transactions: 0\n",
                "test.yaml: coordinate.server.postgres_write_transactions: must be at least 1"
            ),
            ("coordinate: [1, 2\n", nil),
        ])
    func invalid(yaml: String, message: String?) {
        do {
            _ = try parse(yaml)
            Issue.record("accepted \(yaml)")
        } catch let error as ConfigurationError {
            if let message { #expect(error.description == message) }
            #expect(error.source == "test.yaml")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("a YAML syntax error is one line naming where and what")
    func syntaxErrorsAreOneLine() throws {
        for (yaml, expected) in [
            (
                "coordinate:\n  server:\n    port: [1, 2\n  bad: : :\n",
                "test.yaml: cannot parse YAML: line 4, column 6: did not find expected ',' or ']' "
                    + "(while parsing a flow sequence in line 3, column 11)"
            ),
            (
                "coordinate:\n\tserver: 1\n",
                "test.yaml: cannot parse YAML: line 2, column 1: found character that cannot start any token "
                    + "(while scanning for the next token in line 2, column 1)"
            ),
        ] {
            #expect(throws: ConfigurationError.self) { try parse(yaml) }
            do {
                _ = try parse(yaml)
            } catch let error as ConfigurationError {
                #expect(error.description == expected)
                #expect(!error.description.contains("\n"))
            }
        }
    }

    @Test("nested YAML aliases (billion laughs) are refused quickly instead of expanding without bound")
    func billionLaughs() throws {
        var yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1..<12 {
            let refs = Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ")
            yaml += "a\(level): &a\(level) [\(refs)]\n"
        }
        yaml += "coordinate:\n  namespace: *a11\n"
        #expect(yaml.utf8.count < 1000)
        do {
            _ = try parse(yaml)
            Issue.record("accepted a configuration of 10^12 values")
        } catch let error as ConfigurationError {
            #expect(error.description.hasPrefix("test.yaml: more than 100000 values"))
        }
    }

    @Test("the effective tree has every key, redacts secrets, and its YAML reads back to the same configuration")
    func effectiveTree() throws {
        var configuration = CoordinateConfiguration()
        configuration.server.postgresURL = "postgres://app:s3cret@db:5432/coord"
        configuration.server.httpToken = "token"
        configuration.server.storage = .postgres
        let yaml = configuration.effectiveTree().yaml()
        #expect(yaml.contains("postgres_url: \"postgres://app:***@db:5432/coord\""))
        #expect(yaml.contains("http_token: \"***\""))
        #expect(!yaml.contains("s3cret"))
        let unredacted = configuration.effectiveTree(redacted: false).yaml()
        let (reread, warnings) = try parse(unredacted)
        #expect(warnings.isEmpty)
        #expect(reread == configuration)
        #expect(
            CoordinateConfiguration.redactPassword("host=db password=secret user=x") == "host=db password=*** user=x")
    }

    @Test("data directory defaults follow storage.md §3.1")
    func dataDirectory() {
        let configuration = CoordinateConfiguration()
        #expect(configuration.resolvedDataDirectory(environment: ["COORDINATE_DATA_DIR": "/d", "HOME": "/h"]) == "/d")
        #expect(
            configuration.resolvedDataDirectory(environment: ["XDG_DATA_HOME": "/x", "HOME": "/h"]) == "/x/coordinate")
        #expect(configuration.resolvedDataDirectory(environment: ["HOME": "/h"]) == "/h/.local/share/coordinate")
        #expect(
            configuration.resolvedSQLitePath(environment: ["HOME": "/h"])
                == "/h/.local/share/coordinate/coordinate.sqlite3")
    }

    @Test("CIDR matching")
    func cidr() throws {
        let net = try #require(CIDR("10.0.0.0/8"))
        #expect(net.contains([10, 1, 2, 3]))
        #expect(!net.contains([11, 1, 2, 3]))
        let host = try #require(CIDR("127.0.0.1"))
        #expect(host.contains([127, 0, 0, 1]))
        #expect(host.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]))
        let v6 = try #require(CIDR("::1/128"))
        #expect(v6.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
        #expect(CIDR("300.0.0.0/8") == nil)
        #expect(CIDR("fe80::1::2") == nil)
    }
}
