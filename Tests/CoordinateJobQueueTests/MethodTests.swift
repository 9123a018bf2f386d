import CBOR
import CoordinateConfig
import CoordinateEngine
import Foundation
import TestSupport
import Testing

func map(_ pairs: [(CBORValue, CBORValue)]) -> CBORValue { .map(CBORMap(pairs)) }

/// Method-level tests of the JobQueue and LockService modules over TCP: result shapes, messages, type errors.
@Suite("JobQueue and LockService methods over TCP")
struct MethodTests {
    @Test("spec methods: shapes and messages", arguments: TestDaemon.backends)
    func specMethods(storage: StorageKind) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let c = try await daemon.connect()
            #expect(
                try await c.result("set_work_spec", [map([("name", "b"), ("weight", 5)])]) == .tuple([true, .null]))
            #expect(try await c.result("set_work_spec", [map([("name", .text("a"))])]) == .tuple([true, .null]))
            #expect(try await c.call("set_work_spec", [map([("x", 1)])]).errorMessage == "No 'name' key in work spec")
            #expect(
                try await c.call("set_work_spec", [map([("name", 4)])]).errorMessage
                    == "Work spec 'name' must be a string")
            #expect(
                try await c.call("set_work_spec", [map([("name", "c"), ("weight", "x")])]).errorMessage
                    == "invalid work spec: weight: expected an integer")
            #expect(
                try await c.call("set_work_spec", ["notamap"]).errorMessage
                    == "bad parameter work_spec for set_work_spec: expected map")
            #expect(try await c.result("get_work_spec", ["b"]) == map([("name", "b"), ("weight", 5)]))
            #expect(try await c.result("get_work_spec", ["nope"]) == .null)
            // Paging: names ≥ start, next is the first name not returned.
            #expect(
                try await c.result("list_work_specs", [map([("limit", 1)])])
                    == .tuple([[map([("name", .text("a"))])], "b"]))
            #expect(
                try await c.result("list_work_specs", [map([("start", "b")])])
                    == .tuple([[map([("name", "b"), ("weight", 5)])], .null]))
            #expect(
                try await c.result("get_work_spec_meta", ["b"])
                    == .tuple([
                        map([
                            ("status", 1), ("continuous", false), ("max_running", .null), ("weight", 5),
                            ("interval", .null),
                        ]), .null,
                    ]))
            #expect(
                try await c.result(
                    "control_work_spec", ["b", map([("status", 2), ("interval", 2.5), ("max_running", 3)])])
                    == .tuple([true, .null]))
            #expect(
                try await c.result("get_work_spec_meta", ["b"])
                    == .tuple([
                        map([
                            ("status", 2), ("continuous", false), ("max_running", 3), ("weight", 5), ("interval", 2.5),
                        ]),
                        .null,
                    ]))
            #expect(
                try await c.result("control_work_spec", ["b", map([("status", 7)])])
                    == .tuple([false, "invalid work spec status 7"]))
            #expect(
                try await c.result("control_work_spec", ["zz", map([("status", 1)])])
                    == .tuple([false, "no such work spec zz"]))
            #expect(
                try await c.call("control_work_spec", ["b", map([("weight", "heavy")])]).errorMessage
                    == "bad parameter options.weight for control_work_spec: expected integer")
            #expect(try await c.result("get_work_spec_meta", ["zz"]) == .tuple([.null, "no such work spec zz"]))
            #expect(try await c.result("del_work_spec", ["a"]) == .tuple([true, .null]))
            #expect(try await c.result("del_work_spec", ["a"]) == .tuple([false, "no such work_spec 'a'"]))
            #expect(try await c.result("clear") == 1)
            #expect(try await c.result("list_work_specs", [map([])]) == .tuple([[], .null]))
        }
    }

    @Test("unit methods: add item errors, listings, status, prioritize, delete", arguments: TestDaemon.backends)
    func unitMethods(storage: StorageKind) async throws {
        try await TestDaemon.with(
            storage: storage,
            configure: {
                $0.server.maxUnitsPerCall = 5; $0.server.maxUnitDataBytes = 100
            }
        ) { daemon in
            let c = try await daemon.connect()
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            for (item, message) in [
                (CBORValue.int(5), "work unit not a list"), (["k"], "too few parameters to work unit"),
                (["k", 1, .null, 1, 2], "too many parameters to work unit"),
                ([1, 1], "work unit key must be a string"),
                (["k", 1, 5], "work unit meta must be a map"), (["k", 1, .null, "x"], "priority must be a number"),
                (["k", 1, map([("priority", .float(.nan))])], "priority must be a number"),
                (["k", 1, map([("delay", "soon")])], "delay must be a number"),
                (["k", .bytes([UInt8](repeating: 1, count: 200))], "work unit data too large: 202 > 100 bytes"),
            ] {
                #expect(try await c.call("add_work_units", ["s", [["ok", 1], item]]).errorMessage == message)
            }
            // Problems are reported in item order, the data limit included.
            let big: CBORValue = ["big", .bytes([UInt8](repeating: 1, count: 200))]
            #expect(
                try await c.call("add_work_units", ["s", [big, 5]]).errorMessage
                    == "work unit data too large: 202 > 100 bytes")
            #expect(try await c.call("add_work_units", ["s", [5, big]]).errorMessage == "work unit not a list")
            #expect(
                try await c.call(
                    "update_work_unit",
                    ["s", "k", map([("status", 4), ("data", .bytes([UInt8](repeating: 1, count: 200)))])]
                ).errorMessage == "work unit data too large: 202 > 100 bytes")
            // A grant asking for more than max_units_per_call is clamped, not refused.
            _ = try await c.result("set_work_spec", [map([("name", "g")])])
            _ = try await c.result("add_work_units", ["g", ["g1", "g2", "g3", "g4"]])
            _ = try await c.result("add_work_units", ["g", ["g5", "g6", "g7"]])
            let granted = try await c.result(
                "get_work", ["w", map([("max_jobs", 10), ("work_spec_names", ["g"]), ("lease_time", 60)])])
            #expect(granted.listElements?.first?.listElements?.count == 5)
            _ = try await c.result("del_work_spec", ["g"])
            #expect(
                try await c.call("add_work_units", ["s", ["a", "b", "c", "d", "e", "f"]]).errorMessage
                    == "too many work units: 6 > 5")
            #expect(try await c.result("count_work_units", ["s"]) == .tuple([map([]), .null]))
            #expect(
                try await c.result("add_work_units", ["nope", [["a", 1]]])
                    == .tuple([false, "no such work_spec 'nope'"]))
            // A map of key → data is accepted too; a bare string is a key with empty data.
            #expect(
                try await c.result("add_work_units", ["s", map([("m1", 1), ("m2", 2)])]) == .tuple([true, .null]))
            #expect(
                try await c.result(
                    "add_work_units", ["s", ["plain", ["p", map([("traceback", "tb")]), map([("priority", 4)])]]])
                    == .tuple([true, .null]))
            #expect(
                try await c.result("get_work_units", ["s", map([("work_unit_keys", [.text("m1"), "zz", 5])])])
                    == .tuple([[.tuple([.text("m1"), 1]), .tuple(["zz", .null]), .tuple([5, .null])], .null]))
            #expect(
                try await c.result("get_work_units", ["s", map([])])
                    == .tuple([
                        [
                            .tuple(["m1", 1]), .tuple(["m2", 2]), .tuple(["p", map([("traceback", "tb")])]),
                            .tuple(["plain", map([])]),
                        ], .null,
                    ]))
            #expect(
                try await c.result("get_work_units", ["s", map([("state", 1), ("limit", 2)])])
                    == .tuple([[.tuple(["p", map([("traceback", "tb")])]), .tuple(["m1", 1])], .null]))
            #expect(try await c.result("get_work_units", ["s", map([("state", [3, 4])])]) == .tuple([[], .null]))
            #expect(
                try await c.result("get_work_units", ["s", map([("start", "n")])])
                    == .tuple([[.tuple(["p", map([("traceback", "tb")])]), .tuple(["plain", map([])])], .null]))
            #expect(
                try await c.call("get_work_units", ["s", map([("state", "x")])]).errorMessage
                    == "bad parameter options.state for get_work_units: expected integer, list, or null")
            #expect(
                try await c.result("get_work_unit_status", ["s", ["p", "zz"]])
                    == .tuple([[map([("status", 1), ("expiration", .null), ("traceback", "tb")]), .null], .null]))
            #expect(
                try await c.result("get_work_unit_status", ["s", "m1"])
                    == .tuple([[map([("status", 1), ("expiration", .null)])], .null]))
            #expect(
                try await c.result("get_work_unit_status", ["nope", ["m1"]])
                    == .tuple([.null, "no such work_spec 'nope'"]))
            #expect(
                try await c.result("prioritize_work_units", ["s", map([])])
                    == .tuple([false, "missing work_unit_keys"]))
            #expect(
                try await c.result("prioritize_work_units", ["s", map([("work_unit_keys", .null), ("priority", 3)])])
                    == .tuple([true, .null]))
            #expect(
                try await c.result(
                    "prioritize_work_units", ["s", map([("work_unit_keys", ["m2"]), ("priority", 10)])])
                    == .tuple([true, .null]))
            #expect(
                try await c.result("get_work_units", ["s", map([("state", 1), ("limit", 1)])])
                    == .tuple([[.tuple(["m2", 2])], .null]))
            #expect(
                try await c.call(
                    "prioritize_work_units", ["s", map([("work_unit_keys", ["m2"]), ("priority", .float(.infinity))])]
                ).errorMessage == "bad parameter options.priority for prioritize_work_units: expected number or null")
            #expect(
                try await c.result("del_work_units", ["s", map([])])
                    == .tuple([0, "no usable options to del_work_units"]))
            #expect(
                try await c.result("del_work_units", ["s", map([("work_unit_keys", ["m1", "zz"])])])
                    == .tuple([1, .null]))
            #expect(
                try await c.result("del_work_units", ["s", map([("work_unit_keys", ["m2"]), ("state", 4)])])
                    == .tuple([0, .null]))
            #expect(try await c.result("del_work_units", ["s", map([("state", 1)])]) == .tuple([3, .null]))
            #expect(
                try await c.result("del_work_units", ["nope", map([("all", true)])])
                    == .tuple([0, "no such work_spec 'nope'"]))
        }
    }

    @Test("get_work shapes for max_jobs absent, 1, 0, -1, 2 with and without work", arguments: TestDaemon.backends)
    func getWorkShapes(storage: StorageKind) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let c = try await daemon.connect()
            let noWorkTriple = CBORValue.tuple([.tuple([.null, .null, .null]), .null])
            #expect(try await c.result("get_work", ["w", map([])]) == noWorkTriple)
            #expect(try await c.result("get_work", ["w", map([("max_jobs", 1)])]) == noWorkTriple)
            #expect(try await c.result("get_work", ["w", map([("max_jobs", .null)])]) == noWorkTriple)
            for jobs: CBORValue in [0, -1, 2, 5] {
                #expect(try await c.result("get_work", ["w", map([("max_jobs", jobs)])]) == .tuple([[], .null]))
            }
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            _ = try await c.result("add_work_units", ["s", ["a", "b", "c", "d", "e"]])
            #expect(try await c.result("get_work", ["w", map([])]) == .tuple([.tuple(["s", "a", map([])]), .null]))
            #expect(
                try await c.result("get_work", ["w", map([("max_jobs", 0)])])
                    == .tuple([[.tuple(["s", "b", map([])])], .null]))
            #expect(
                try await c.result("get_work", ["w", map([("max_jobs", -1)])])
                    == .tuple([[.tuple(["s", "c", map([])])], .null]))
            #expect(
                try await c.result("get_work", ["w", map([("max_jobs", 2)])])
                    == .tuple([[.tuple(["s", "d", map([])]), .tuple(["s", "e", map([])])], .null]))
            #expect(
                try await c.call("get_work", ["w", map([("max_jobs", "many")])]).errorMessage
                    == "bad parameter options.max_jobs for get_work: expected integer")
            #expect(
                try await c.call("get_work", [5, map([])]).errorMessage
                    == "bad parameter worker_id for get_work: expected string"
            )
        }
    }

    @Test("update_work_unit messages and lease semantics", arguments: TestDaemon.backends)
    func updateMessages(storage: StorageKind) async throws {
        let clock = ManualClock()
        try await TestDaemon.with(storage: storage, clock: clock) { daemon in
            let c = try await daemon.connect()
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            _ = try await c.result("add_work_units", ["s", ["u"]])
            #expect(
                try await c.result("update_work_unit", ["s", "u", map([("data", 1)])])
                    == .tuple([false, "nothing to do"]))
            #expect(
                try await c.result("update_work_unit", ["s", "zz", map([("status", 4)])])
                    == .tuple([false, "no such work unit key='zz'"]))
            #expect(
                try await c.result("update_work_unit", ["s", "u", map([("status", 2)])])
                    == .tuple([false, "invalid status 2"]))
            #expect(
                try await c.result("update_work_unit", ["s", "u", map([("lease_time", 30)])])
                    == .tuple([false, "work unit is not pending"]))
            #expect(
                try await c.result("update_work_unit", ["nope", "u", map([("status", 4)])])
                    == .tuple([false, "no such work_spec 'nope'"]))
            // The requested lease is honoured.
            _ = try await c.result("get_work", ["w", map([("lease_time", 900)])])
            let start = Double(clock.now()) / 1e6
            guard case .tuple(let parts) = try await c.result("get_work_unit_status", ["s", ["u"]]),
                case .map(let status) = parts[0].listElements?.first
            else {
                Issue.record("unexpected shape")
                return
            }
            #expect(status["status"] == 3)
            #expect(status["worker_id"] == "w")
            #expect(status["expiration"] == .float(start + 900))
            clock.advance(seconds: 900.001)
            #expect(try await c.result("count_work_units", ["s"]) == .tuple([map([(1, 1)]), .null]))
            #expect(
                try await c.call("update_work_unit", ["s", "u", map([("lease_time", "soon")])]).errorMessage
                    == "bad parameter options.lease_time for update_work_unit: expected number or null")
        }
    }

    @Test("worker methods: heartbeat messages, modes, counts, stats, info, unregister", arguments: TestDaemon.backends)
    func workerMethods(storage: StorageKind) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let c = try await daemon.connect()
            #expect(
                try await c.result("worker_heartbeat", ["p1", "RUN", 6000, map([("pid", 1)]), .null])
                    == .tuple([true, .null]))
            #expect(
                try await c.result("worker_heartbeat", ["c1", .null, -5, map([("pid", 2)]), "p1"])
                    == .tuple([true, "negative expire time -5 defaulted to 5 minutes"]))
            #expect(
                try await c.result("worker_heartbeat", ["c2", .text("RUN"), "-5.0", .null, "p1"])
                    == .tuple([true, "negative expire time -5.0 defaulted to 5 minutes"]))
            #expect(
                try await c.result("worker_heartbeat", ["c3", 7, 100_000, .null, .null])
                    == .tuple([true, "huge expire time 100000 defaulted to one hour"]))
            #expect(
                try await c.call("worker_heartbeat", ["c4", .null, .float(.nan), .null, .null]).errorMessage
                    == "bad parameter expire_seconds for worker_heartbeat: expected number")
            #expect(
                try await c.call("worker_heartbeat", ["c4", .null, 5, .null]).errorMessage
                    == "wrong number of parameters for worker_heartbeat: expected 5, got 4")
            #expect(
                try await c.result("list_worker_modes")
                    == .tuple([map([("c1", .null), ("c2", .text("RUN")), ("c3", 7), ("p1", "RUN")]), .null]))
            // b"RUN" and "RUN" are one mode (first worker in id order names it); strings, then others, then null.
            #expect(
                try await c.result("mode_counts") == .tuple([map([(.text("RUN"), 2), (7, 1), (.null, 1)]), .null]))
            #expect(
                try await c.result("worker_stats")
                    == map([("num_expirable", 4), ("num_children", 1), ("num_workers", 4)]))
            #expect(try await c.result("get_worker_info", ["p1"]) == .tuple([map([("pid", 1)]), .null]))
            #expect(try await c.result("get_worker_info", ["c2"]) == .tuple([map([]), .null]))
            #expect(try await c.result("get_worker_info", ["nobody"]) == .tuple([.null, .null]))
            #expect(
                try await c.result("get_child_work_units", ["p1"]) == .tuple([map([("c1", []), ("c2", [])]), .null]))
            #expect(try await c.result("worker_unregister", ["c1"]) == .tuple([true, .null]))
            #expect(try await c.result("worker_unregister", ["c1"]) == .tuple([false, "no worker 'c1'"]))
            // Changing a parent works.
            #expect(try await c.result("worker_heartbeat", ["c2", "RUN", 60, .null, "p2"]) == .tuple([true, .null]))
            #expect(try await c.result("get_child_work_units", ["p1"]) == .tuple([map([]), .null]))
            #expect(try await c.result("get_child_work_units", ["p2"]) == .tuple([map([("c2", [])]), .null]))
        }
    }

    @Test(
        "get_child_work_units names an expired child until another worker is granted the unit",
        arguments: TestDaemon.backends)
    func childAfterExpiry(storage: StorageKind) async throws {
        let clock = ManualClock()
        try await TestDaemon.with(storage: storage, clock: clock) { daemon in
            let c = try await daemon.connect()
            _ = try await c.result("worker_heartbeat", ["parent", "RUN", 600, .null, .null])
            _ = try await c.result("worker_heartbeat", ["child", "RUN", 600, .null, "parent"])
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            _ = try await c.result("add_work_units", ["s", [["u", map([("x", 1)])]]])
            _ = try await c.result("get_work", ["child", map([("lease_time", 3)])])
            let deadline = Double(clock.now()) / 1e6 + 3
            clock.advance(seconds: 3.1)
            let expected = CBORValue.tuple([
                map([
                    (
                        "child",
                        [
                            map([
                                ("work_spec_name", "s"), ("work_unit_key", "u"), ("work_unit_data", map([("x", 1)])),
                                ("worker_id", "child"), ("expires", .float(deadline)),
                            ])
                        ]
                    )
                ]),
                .null,
            ])
            #expect(try await c.result("get_child_work_units", ["parent"]) == expected)
            #expect(
                try await c.result(
                    "update_work_unit", ["s", "u", map([("status", 5), ("data", map([("traceback", "stuck")]))])])
                    == .tuple([true, .null]))
            #expect(try await c.result("count_work_units", ["s"]) == .tuple([map([(5, 1)]), .null]))
        }
    }

    @Test("lock service messages", arguments: TestDaemon.backends)
    func lockMessages(storage: StorageKind) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let c = try await daemon.connect()
            #expect(try await c.result("lock", ["L1", .null, [.tuple(["a"])]]) == .tuple([true, .null]))
            #expect(try await c.result("unlock", ["L1", [["b"]]]) == .tuple([false, "['b'] is not held"]))
            #expect(
                try await c.result("renew", ["L2", 10, [.tuple(["a"])]]) == .tuple([false, "('a',) is held by 'L1'"]))
            #expect(
                try await c.call("lock", ["L1", 5, [[]]]).errorMessage
                    == "bad parameter keys for lock: expected list of non-empty lists")
            #expect(
                try await c.call("lock", ["L1", 5, "a"]).errorMessage
                    == "bad parameter keys for lock: expected list of non-empty lists")
            #expect(
                try await c.call("lock", ["L1", "soon", [["a"]]]).errorMessage
                    == "bad parameter timeout for lock: expected integer or null")
            guard case .array(let locks) = try await c.result("list_locks") else {
                Issue.record("list_locks is not a bare list")
                return
            }
            #expect(locks.count == 1)
            #expect(locks.first?.listElements?.prefix(2) == [.tuple(["a"]), "L1"])
            #expect(try await c.result("readlock", [[]]) == [])
            #expect(try await c.result("list_locks", ["zz"]) == [])
        }
    }

    @Test(
        "names that must not be methods answer no such method",
        arguments: ["snapshot", "load_snapshot", "maybe_periodic_snapshot", "wsgi", "_private", "__init__"])
    func forbiddenNames(name: String) async throws {
        try await TestDaemon.with { daemon in
            let c = try await daemon.connect()
            #expect(try await c.call(name).errorMessage == "no such method \(name)")
        }
    }

    @Test("get_config returns the effective configuration with secrets redacted; now returns whole seconds")
    func configAndNow() async throws {
        try await TestDaemon.with(configure: {
            $0.server.postgresURL = "postgres://u:secret@db/x"; $0.server.httpToken = "tok"
        }) { daemon in
            let c = try await daemon.connect()
            guard case .tuple(let parts) = try await c.result("get_config"), case .map(let root) = parts[0],
                case .map(let coordinate)? = root["coordinate"], case .map(let server)? = coordinate["server"]
            else {
                Issue.record("unexpected shape")
                return
            }
            #expect(server["postgres_url"] == "postgres://u:***@db/x")
            #expect(server["http_token"] == "***")
            #expect(server["tls_cert_file"] == .null)
            #expect(coordinate["base_retry_seconds"] == .float(0.5))
            #expect(root.pairs.first?.key == "coordinate")
            // Whole seconds, within the wall clock read around the call (however slow the machine is).
            let before = Int64(Date().timeIntervalSince1970)
            let now = try await c.result("now").int64Value ?? 0
            let after = Int64(Date().timeIntervalSince1970)
            #expect(now >= before - 1 && now <= after + 1)
        }
    }

    @Test(
        "E-NUM: non-finite and out-of-range numbers are clear errors or clamps, never crashes",
        arguments: TestDaemon.backends)
    func numericCoercions(storage: StorageKind) async throws {
        try await TestDaemon.with(storage: storage) { daemon in
            let c = try await daemon.connect()
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            _ = try await c.result("add_work_units", ["s", ["u"]])
            let hostile: [CBORValue] = [
                .float(.nan), .float(.infinity), .float(-.infinity), .unsigned(1 << 63), .negative(1 << 63), 1e300,
                "1e999",
                "nan",
            ]
            for value in hostile {
                let jobs = try await c.call("get_work", ["w", map([("max_jobs", value)])])
                #expect(
                    jobs.errorMessage == "bad parameter options.max_jobs for get_work: expected integer"
                        || jobs["result"] != nil, "\(value)")
                _ = try await c.call("get_work", ["w", map([("lease_time", value)])])
                _ = try await c.call("list_work_specs", [map([("limit", value)])])
                _ = try await c.call("lock", ["o", value, [["x"]]])
                _ = try await c.call("worker_heartbeat", ["w", .null, value, .null, .null])
                _ = try await c.call("add_work_units", ["s", [["d", 1, map([("delay", value)])]]])
                _ = try await c.call(
                    "set_work_spec",
                    [
                        map([
                            ("name", "t"), ("weight", value), ("nice", value), ("interval", value),
                            ("max_running", value),
                        ])
                    ])
                _ = try await c.call(
                    "prioritize_work_units", ["s", map([("work_unit_keys", ["u"]), ("adjustment", value)])])
            }
            #expect(
                try await c.call("get_work", ["w", map([("max_jobs", .float(.nan))])]).errorMessage
                    == "bad parameter options.max_jobs for get_work: expected integer")
            #expect(
                try await c.call("get_work", ["w", map([("max_jobs", .unsigned(1 << 63))])]).errorMessage
                    == "bad parameter options.max_jobs for get_work: expected integer")
            #expect(
                try await c.call("get_work", ["w", map([("lease_time", "1e999")])]).errorMessage
                    == "bad parameter options.lease_time for get_work: expected number")
            #expect(
                try await c.call("set_work_spec", [map([("name", "t"), ("weight", 1e300)])]).errorMessage
                    == "invalid work spec: weight: expected an integer")
            #expect(
                try await c.result("set_work_spec", [map([("name", "t"), ("weight", 1e12)])]) == .tuple([true, .null]))
            #expect(
                try await c.result("get_work_spec_meta", ["t"]).listElements?.first?.mapValue?["weight"]
                    == .int(2_147_483_647))
            for _ in 0..<3 {
                _ = try await c.result(
                    "prioritize_work_units", ["s", map([("work_unit_keys", ["u"]), ("adjustment", 1.7e308)])])
            }
            #expect(try await c.result("count_work_units", ["s"]).listElements?.first != nil)
            // The daemon is still healthy.
            #expect(try await c.result("now").int64Value != nil)
        }
    }
}

@Suite("Automatic archiving")
struct AutomaticArchiveTests {
    @Test("the daemon archives on its own when a limit is configured", arguments: TestDaemon.backends)
    func automaticArchive(storage: StorageKind) async throws {
        try await TestDaemon.with(
            storage: storage,
            configure: {
                $0.jobQueue.limitCompletedCount = 0; $0.jobQueue.archiveInterval = .int(1)
            }
        ) { daemon in
            let maintenance = Task { await daemon.daemon.runMaintenance() }
            defer { maintenance.cancel() }
            let c = try await daemon.connect()
            _ = try await c.result("set_work_spec", [map([("name", "s")])])
            _ = try await c.result("add_work_units", ["s", ["a", "b"]])
            _ = try await c.result("update_work_unit", ["s", "a", map([("status", 4)])])
            #expect(
                try await eventually {
                    try await c.result("get_work_units", ["s", map([("state", 4)])]) == .tuple([[], .null])
                })
            // The archived unit still counts.
            #expect(try await c.result("count_work_units", ["s"]) == .tuple([map([(1, 1), (4, 1)]), .null]))
        }
    }
}
