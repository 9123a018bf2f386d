import CBOR
import CoordinateEngine
import CoordinateRPC
import Locking
import NIOCore
import Synchronization

/// Runs engine operations for RPC handlers. When the backend completes synchronously (memory), the reply is
/// an immediate value and no promise is allocated; otherwise the reply is a future on the connection's event
/// loop.
struct EngineBridge: Sendable {
    let engine: Engine

    /// Maps engine and storage failures to error responses.
    static func rpcError(_ error: any Error, method: String) -> RPCError {
        switch error {
        case let error as RPCError: return error
        case let error as EngineError:
            if case .badParameter(let name, let expected) = error {
                return .badParameter(name, method: method, expected: expected)
            }
            return RPCError(error.message)
        case let error as StorageError: return RPCError(error.description)
        default: return .internalError("\(error)")
        }
    }

    func run<T: Sendable>(
        _ call: RPCCall, _ mode: AccessMode, readingFirst hint: StorageReadHint? = nil,
        _ body: @escaping @Sendable (inout EngineTransaction) throws -> T,
        render: @escaping @Sendable (T) throws(RPCError) -> CBORValue
    ) throws(RPCError) -> RPCReply {
        let bridge = ReplyBridge()
        let method = call.methodName
        engine.perform(mode, readingFirst: hint, body) { result in
            let rendered: Result<CBORValue, RPCError>
            switch result {
            case .success(let value):
                rendered = Result { () throws(RPCError) -> CBORValue in try render(value) }
            case .failure(let error):
                rendered = .failure(Self.rpcError(error, method: method))
            }
            bridge.complete(rendered)
        }
        return try bridge.reply(on: call.eventLoop)
    }
}

/// Hands a result from the engine's completion to the RPC layer, synchronously if it is already there.
final class ReplyBridge: Sendable {
    private enum State {
        case waiting
        case done(Result<CBORValue, RPCError>)
        case promised(EventLoopPromise<CBORValue>)
    }

    private let state = Locked<State>(.waiting)

    func complete(_ result: Result<CBORValue, RPCError>) {
        let promise: EventLoopPromise<CBORValue>? = state.withLock { state in
            switch state {
            case .waiting:
                state = .done(result)
                return nil
            case .promised(let promise):
                return promise
            case .done:
                return nil
            }
        }
        promise?.completeWith(result.mapError { $0 as any Error })
    }

    func reply(on eventLoop: any EventLoop) throws(RPCError) -> RPCReply {
        let outcome = state.withLock { state -> Result<RPCReply, RPCError> in
            switch state {
            case .done(let result):
                return result.map { .value($0) }
            case .waiting:
                let promise = eventLoop.makePromise(of: CBORValue.self)
                state = .promised(promise)
                return .success(.future(promise.futureResult))
            case .promised(let promise):
                return .success(.future(promise.futureResult))
            }
        }
        return try outcome.get()
    }
}
