// swift-tools-version:6.0
import PackageDescription

let strictSwift6: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let libm: [LinkerSetting] = [.linkedLibrary("m", .when(platforms: [.linux]))]

let package = Package(
    name: "Coordinate",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "CBOR", targets: ["CBOR"]),
        .library(name: "CoordinateEngine", targets: ["CoordinateEngine"]),
        .library(name: "CoordinateClient", targets: ["CoordinateClient"]),
        .executable(name: "coordinated", targets: ["coordinated"]),
        .executable(name: "coordinate-bench", targets: ["CoordinateBench"]),
        .executable(name: "coordinate-worker", targets: ["CoordinateWorkerTool"]),
        .executable(name: "coordinate", targets: ["CoordinateCLI"]),
        .executable(name: "coordinate-example", targets: ["CoordinateExample"]),
        .library(name: "CoordinateWorker", targets: ["CoordinateWorker"]),
        // libFuzzer targets, built one at a time by scripts/fuzz (see docs/testing.md).
        .executable(name: "FuzzCBORDecoder", targets: ["FuzzCBORDecoder"]),
        .executable(name: "FuzzFramer", targets: ["FuzzFramer"]),
        .executable(name: "FuzzRPC", targets: ["FuzzRPC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // SCRAM-SHA-256 and MD5 in the PostgreSQL wire client (already in the graph through swift-nio-extras and swift-certificates).
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // Already a dependency of Hummingbird; named for NIOHTTPTypes (the HTTP connection guard's parts).
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    ],
    targets: [
        // The lock every module uses (a pthread mutex the sanitizers can see; Sources/Locking/Locked.swift).
        .target(name: "Locking", swiftSettings: strictSwift6),

        // The CBOR codec: values, canonical encoder, decoder and the incremental stream framer.
        // Knows nothing of RPC or job queues.
        .target(name: "CBOR", swiftSettings: strictSwift6),

        // Configuration file model shared by the daemon, the client, the worker and the CLI.
        .target(
            name: "CoordinateConfig",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: strictSwift6),

        // The job-queue engine: data model, scheduler, storage boundary and the memory backend.
        // Knows nothing of sockets or framing.
        .target(
            name: "CoordinateEngine",
            dependencies: [
                "Locking", "CBOR", .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strictSwift6),

        // The SQLite storage backend (the default): GRDB connection management, raw statements on the hot path.
        .target(
            name: "CoordinateSQLite",
            dependencies: [
                "Locking",
                "CBOR", "CoordinateEngine",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift6),

        // A pipelining client of PostgreSQL's frontend/backend protocol (knows nothing of job queues).
        .target(
            name: "PostgresWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift6),

        // The PostgreSQL storage backend (several daemons on one database).
        .target(
            name: "CoordinatePostgres",
            dependencies: [
                "Locking",
                "CBOR", "CoordinateEngine", "PostgresWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift6),

        // RPC module abstraction: method tables, parameter binding, protocol-level errors, dispatch.
        .target(
            name: "CoordinateRPC",
            dependencies: ["CBOR", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSwift6),

        // The JobQueue and LockService RPC modules: CBOR-RPC method surface over the engine.
        .target(
            name: "CoordinateJobQueue",
            dependencies: [
                "Locking",
                "CBOR", "CoordinateEngine", "CoordinateRPC", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6),

        // The CBOR-RPC network server and the daemon's service wiring.
        .target(
            name: "CoordinateServer",
            dependencies: [
                "CBOR", "CoordinateRPC", "CoordinateConfig", "CoordinateEngine", "CoordinateJobQueue",
                "CoordinateSQLite", "CoordinatePostgres", "CoordinateHTTP", "CoordinateMetrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift6),

        // The JSON mapping of Coordinate values (rest-api.md §1): JSON values with int/float kept apart, data
        // dictionaries, names, base64 and RFC 3339 times. Shared by the HTTP API, the CLI and the worker.
        .target(name: "CoordinateJSON", dependencies: ["CBOR"], swiftSettings: strictSwift6),

        // Metrics: swift-metrics instruments on a swift-prometheus registry, and the scrape-time state gauges.
        .target(
            name: "CoordinateMetrics",
            dependencies: [
                "Locking",
                "CoordinateEngine", .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSwift6),

        // The HTTP API on Hummingbird: REST routes, export/import, /healthz, /metrics, the dashboard.
        .target(
            name: "CoordinateHTTP",
            dependencies: [
                "Locking",
                "CBOR", "CoordinateEngine", "CoordinateJSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift6),

        // The Swift client library: pipelined CBOR-RPC connection with retries, and the typed TaskMaster-style API.
        .target(
            name: "CoordinateClient",
            dependencies: [
                "CBOR", "CoordinateConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strictSwift6),

        // The worker runtime: parent and child workers, bounded concurrent tasks, lease renewal, drain, and
        // shell-command tasks.
        .target(
            name: "CoordinateWorker",
            dependencies: [
                "Locking",
                "CBOR", "CoordinateClient", "CoordinateJSON", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift6),

        // Fuzz targets: LLVMFuzzerTestOneInput plus a main that runs libFuzzer's driver over it (FuzzSupport); the
        // AddressSanitizer build links libFuzzer in (below). libm: the CBOR module's rounding reaches it through
        // Swift's Glibc overlay, which a target importing only CBOR does not link.
        .target(name: "FuzzSupport", swiftSettings: strictSwift6),
        .executableTarget(
            name: "FuzzCBORDecoder", dependencies: ["CBOR", "FuzzSupport"], swiftSettings: strictSwift6,
            linkerSettings: libm),
        .executableTarget(
            name: "FuzzFramer", dependencies: ["CBOR", "FuzzSupport"], swiftSettings: strictSwift6,
            linkerSettings: libm),
        .executableTarget(
            name: "FuzzRPC",
            dependencies: [
                "CBOR", "CoordinateEngine", "CoordinateRPC", "CoordinateJobQueue", "FuzzSupport",
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6),
        .executableTarget(
            name: "CoordinateWorkerTool",
            dependencies: [
                "CoordinateWorker", "CoordinateClient", "CoordinateConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/coordinate-worker",
            swiftSettings: strictSwift6),

        .executableTarget(
            name: "CoordinateCLI",
            dependencies: [
                "CBOR", "CoordinateClient", "CoordinateConfig", "CoordinateJSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/coordinate",
            swiftSettings: strictSwift6),

        // The README's Swift client and worker examples, kept runnable (a test runs them).
        .executableTarget(
            name: "CoordinateExample",
            dependencies: [
                "CBOR", "CoordinateClient", "CoordinateWorker", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/coordinate-example",
            swiftSettings: strictSwift6),

        .executableTarget(
            name: "coordinated",
            dependencies: [
                "CoordinateServer", "CoordinateConfig", "CoordinateEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift6),

        .executableTarget(
            name: "CoordinateBench",
            dependencies: [
                "CBOR", "CoordinateRPC", "CoordinateServer", "CoordinateConfig", "CoordinateEngine",
                "CoordinatePostgres",
                "PostgresWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/coordinate-bench",
            swiftSettings: strictSwift6),

        // Process launching with a parent-death signal (vfork + prctl + execve), for the tests' child processes.
        .target(name: "CSpawn", path: "Tests/CSpawn"),

        .target(
            name: "TestSupport",
            dependencies: [
                "Locking",
                "CBOR", "CSpawn", "CoordinateConfig", "CoordinateServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: strictSwift6),

        .testTarget(name: "TestSupportTests", dependencies: ["TestSupport"], swiftSettings: strictSwift6),
        .testTarget(name: "CBORTests", dependencies: ["CBOR", "TestSupport"], swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateEngineTests",
            dependencies: ["CoordinateEngine", "CoordinateSQLite", "CoordinatePostgres", "CBOR", "TestSupport"],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateRPCTests",
            dependencies: [
                "CoordinateRPC", "CBOR", "TestSupport", .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateJobQueueTests",
            dependencies: [
                "CoordinateJobQueue", "CoordinateServer", "CoordinateEngine", "CoordinateConfig", "CBOR", "TestSupport",
            ],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateSQLiteTests",
            dependencies: ["CoordinateSQLite", "CoordinateEngine", "CBOR", "TestSupport", "coordinated"],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateConfigTests",
            dependencies: ["CoordinateConfig"],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateJSONTests", dependencies: ["CoordinateJSON", "CBOR"], swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateClientTests",
            dependencies: ["CoordinateClient", "CBOR", "TestSupport", "coordinated"],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateWorkerTests",
            dependencies: [
                "CoordinateWorker", "CoordinateClient", "CoordinateJSON", "CBOR", "TestSupport", "coordinated",
                "CoordinateWorkerTool", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateCLITests",
            dependencies: [
                "CoordinateClient", "CoordinateJSON", "CBOR", "TestSupport", "coordinated", "CoordinateCLI",
                "CoordinateExample",
            ],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateHTTPTests",
            dependencies: ["CoordinateClient", "CoordinateJSON", "CBOR", "TestSupport", "coordinated"],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinatePostgresTests",
            dependencies: [
                "CoordinateClient", "CoordinatePostgres", "PostgresWire", "CBOR", "TestSupport", "coordinated",
            ],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "PostgresWireTests",
            dependencies: ["PostgresWire", "CoordinatePostgres", "TestSupport"],
            swiftSettings: strictSwift6),
        .testTarget(
            name: "CoordinateServerTests",
            dependencies: [
                "CoordinateServer", "CoordinateRPC", "CoordinateConfig", "CBOR", "TestSupport", "coordinated",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6),
    ]
)

// Sanitizer builds (scripts/sanitize; docs/testing.md): COORDINATE_SANITIZE=thread or =address instruments this
// package's own Swift targets and leaves the dependencies as the ordinary build compiled them, so a sanitizer
// build in the ordinary scratch path recompiles only this package's modules. ThreadSanitizer still sees the
// dependencies' locks (it intercepts pthread); their memory errors are not this package's to find.
//
// The AddressSanitizer build also carries libFuzzer's coverage instrumentation and links libFuzzer into the fuzz
// targets, exporting the driver their `main` calls (FuzzSupport): one build serves the ASan test run and the
// fuzz targets. Other products link the ASan runtime only, whose weak no-op coverage callbacks satisfy the
// instrumented code.
if let sanitizer = Context.environment["COORDINATE_SANITIZE"] {
    let compile: [String]
    let link: [String]
    switch sanitizer {
    case "thread":
        compile = ["-sanitize=thread"]
        link = ["-sanitize=thread"]
    case "address":
        compile = ["-sanitize=fuzzer,address"]
        link = ["-sanitize=address"]
    default:
        fatalError("COORDINATE_SANITIZE must be thread or address, not \(sanitizer)")
    }
    let fuzzLink = [
        "-sanitize=fuzzer,address", "-Xlinker", "--undefined=LLVMFuzzerRunDriver", "-Xlinker",
        "--export-dynamic-symbol=LLVMFuzzerRunDriver",
    ]
    let fuzzTargets: Set<String> = ["FuzzCBORDecoder", "FuzzFramer", "FuzzRPC"]
    for target in package.targets where target.name != "CSpawn" {
        let fuzzing = sanitizer == "address" && fuzzTargets.contains(target.name)
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(compile)]
        target.linkerSettings = (target.linkerSettings ?? []) + [.unsafeFlags(fuzzing ? fuzzLink : link)]
    }
}
