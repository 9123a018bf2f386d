import CBOR
import CoordinateEngine
import CoordinateJobQueue
import CoordinateRPC
import NIOEmbedded

/// The daemon's request path without sockets: the JobQueue and LockService modules over an in-memory engine,
/// kept across inputs so that later requests meet the state earlier ones built.
private struct Harness {
    let loop = EmbeddedEventLoop()
    let dispatcher: RPCDispatcher

    init() {
        let engine = Engine(backend: MemoryBackend(), clock: SystemClock())
        let namespace = Identifier(text: "")
        let modules: [any RPCModule] = [
            JobQueueModule(engine: engine, namespace: namespace, configuration: .map(CBORMap())),
            LockServiceModule(engine: engine, namespace: namespace),
        ]
        dispatcher = RPCDispatcher(table: try! RPCMethodTable(modules: modules))
    }
}

// Fuzz inputs run one at a time on libFuzzer's thread: nothing else touches the harness.
nonisolated(unsafe) private var harness = Harness()
nonisolated(unsafe) private var inputsSinceReset = 0

/// libFuzzer target: one framed message (an envelope or a bare item, as on the wire) dispatched to the RPC
/// modules, read directly where the connection would read it so. Every request must get a response that encodes; nothing may crash, whatever the method, arity,
/// types or values. The engine starts over every 5 000 inputs to bound its memory.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRPC(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    inputsSinceReset += 1
    if inputsSinceReset > 5_000 {
        harness = Harness()
        inputsSinceReset = 0
    }
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    // As the connection does: the direct path first, decoding when it declines.
    let response: RPCResponse
    if let direct = harness.dispatcher.respond(
        toEncoded: bytes, maxDepth: 32, maxDecodedBytes: DecodeBudget.bytes(forMessageOf: count), on: harness.loop)
    {
        response = direct
    } else {
        guard case .value(let message, _) = CBORMessage.decode(bytes, maxDepth: 32) else { return 0 }
        response = harness.dispatcher.respond(to: message, on: harness.loop)
    }
    let future = RPCDispatcher.resolve(response, on: harness.loop)
    harness.loop.run()
    guard let resolved = try? future.wait() else {
        preconditionFailure("a response did not resolve on the event loop")
    }
    var encoder = CBOREncoder()
    resolved.encode(into: &encoder)
    precondition(!encoder.bytes.isEmpty)
    return 0
}
