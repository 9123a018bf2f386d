import CBOR
import CoordinateConfig
import CoordinateRPC
import CoordinateServer
import Logging
import NIOCore
import TestSupport

/// RPC methods defined by the tests to exercise the module mechanism and the network layer.
struct TestModule: RPCModule {
    let name = "Test"

    var methods: [RPCMethod] {
        [
            RPCMethod("echo", parameters: ["value"]) { call in .value(call[0]!) },
            RPCMethod("add", parameters: ["a", "b"], required: 1) { call throws(RPCError) in
                guard let a = call[0]!.intLike else { throw .badParameter("a", method: "add", expected: "integer") }
                var b: Int64 = 0
                if let value = call[1] {
                    guard let parsed = value.intLike else {
                        throw .badParameter("b", method: "add", expected: "integer")
                    }
                    b = parsed
                }
                return .value(.int(a &+ b))
            },
            RPCMethod("later", parameters: ["value", "delay_ms"]) { call in
                let delay = call[1]!.intLike ?? 0
                let promise = call.eventLoop.makePromise(of: CBORValue.self)
                let value = call[0]!
                call.eventLoop.scheduleTask(in: .milliseconds(delay)) { promise.succeed(value) }
                return .future(promise.futureResult)
            },
            RPCMethod("later_fail", parameters: []) { call in
                .future(call.eventLoop.makeFailedFuture(RPCError("deferred failure")))
            },
            RPCMethod("fail", parameters: []) { _ throws(RPCError) in throw RPCError("it failed") },
            RPCMethod("big", parameters: ["size"]) { call in
                .value(.bytes([UInt8](repeating: 0x61, count: Int(call[0]!.intLike ?? 0))))
            },
        ]
    }
}

/// A second module that defines a method name the first one already has.
struct ClashingModule: RPCModule {
    let name = "Clash"
    var methods: [RPCMethod] { [RPCMethod("echo", parameters: ["v"]) { call in .value(call[0]!) }] }
}

/// Runs `body` with an in-process daemon serving `modules` on a loopback port it chose itself; shut down when
/// `body` ends.
func withTestDaemon<R>(
    modules: [any RPCModule] = [TestModule()], configure: (inout CoordinateConfiguration) -> Void = { _ in },
    _ body: (Daemon, Int) async throws -> R
) async throws -> R {
    var configuration = CoordinateConfiguration()
    configuration.server.port = 0
    configuration.server.httpPort = 0
    configure(&configuration)
    var logger = Logger(label: "test-daemon")
    logger.logLevel = .critical
    return try await withInProcessDaemon(
        { try Daemon(configuration: configuration, modules: modules, logger: logger, eventLoopThreads: 2) }, body)
}
