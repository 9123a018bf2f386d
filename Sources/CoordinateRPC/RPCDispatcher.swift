import CBOR
import NIOCore

/// Receives one event per handled request (each batch element counts), for metrics and request logging.
public protocol RPCObserver: Sendable {
    /// Called when a request's response is known. `method` is nil for requests that never reached a method
    /// (malformed requests, unknown methods).
    func requestCompleted(method: RPCMethod?, failed: Bool, startedAt: ContinuousClock.Instant)
}

/// The response to one message: known now, or once deferred method results arrive.
public enum RPCResponse: Sendable {
    case immediate(CBORValue)
    case deferred(EventLoopFuture<CBORValue>)
}

/// Turns decoded request messages into response messages (wire-protocol.md §§6–9): request validation,
/// parameter binding, method dispatch, batches, and the exact protocol-level error texts.
public struct RPCDispatcher: Sendable {
    public let table: RPCMethodTable
    public let observer: (any RPCObserver)?

    public init(table: RPCMethodTable, observer: (any RPCObserver)? = nil) {
        self.table = table
        self.observer = observer
    }

    /// Handles one decoded message: a request map, or a batch array (handled element by element, recursively).
    public func respond(to message: CBORValue, on eventLoop: any EventLoop) -> RPCResponse {
        switch message {
        case .array(let elements):
            var responses: [RPCResponse] = []
            responses.reserveCapacity(elements.count)
            var anyDeferred = false
            for element in elements {
                let response = respond(to: element, on: eventLoop)
                if case .deferred = response { anyDeferred = true }
                responses.append(response)
            }
            guard anyDeferred else {
                return .immediate(.array(responses.map { if case .immediate(let v) = $0 { return v } else { return .null } }))
            }
            let futures = responses.map { response -> EventLoopFuture<CBORValue> in
                switch response {
                case .immediate(let value): return eventLoop.makeSucceededFuture(value)
                case .deferred(let future): return future
                }
            }
            return .deferred(EventLoopFuture.whenAllSucceed(futures, on: eventLoop).map { .array($0) })
        case .map(let request):
            return respond(toRequest: request, on: eventLoop)
        default:
            observer?.requestCompleted(method: nil, failed: true, startedAt: .now)
            return .immediate(Self.errorResponse(id: .null, message: Array("malformed request: not a request map".utf8)))
        }
    }

    private func respond(toRequest request: CBORMap, on eventLoop: any EventLoop) -> RPCResponse {
        let started = ContinuousClock.now
        var id: CBORValue?
        var methodValue: CBORValue?
        var params: CBORValue?
        for pair in request.pairs {
            guard let key = pair.key.stringOctets else { continue }
            if key == Self.idKey {
                id = pair.value
            } else if key == Self.methodKey {
                methodValue = pair.value
            } else if key == Self.paramsKey {
                params = pair.value
            }
        }
        guard let id else {
            observer?.requestCompleted(method: nil, failed: true, startedAt: started)
            return .immediate(Self.errorResponse(id: .null, message: Array("malformed request: missing id".utf8)))
        }
        guard let methodName = methodValue?.stringOctets else {
            observer?.requestCompleted(method: nil, failed: true, startedAt: started)
            return .immediate(Self.errorResponse(id: id, message: Array("malformed request: missing method".utf8)))
        }
        guard let method = table.method(named: methodName) else {
            observer?.requestCompleted(method: nil, failed: true, startedAt: started)
            return .immediate(Self.errorResponse(id: id, message: Array("no such method ".utf8) + methodName))
        }
        let arguments: [CBORValue?]
        switch Self.bind(params, to: method) {
        case .success(let bound): arguments = bound
        case .failure(let error):
            observer?.requestCompleted(method: method, failed: true, startedAt: started)
            return .immediate(Self.errorResponse(id: id, message: error.message))
        }
        let reply: RPCReply
        do {
            reply = try method.handler(RPCCall(method: method, arguments: arguments, eventLoop: eventLoop))
        } catch {
            observer?.requestCompleted(method: method, failed: true, startedAt: started)
            return .immediate(Self.errorResponse(id: id, message: error.message))
        }
        switch reply {
        case .value(let result):
            observer?.requestCompleted(method: method, failed: false, startedAt: started)
            return .immediate(Self.successResponse(id: id, result: result))
        case .future(let future):
            let observer = self.observer
            return .deferred(
                future.map { result in
                    observer?.requestCompleted(method: method, failed: false, startedAt: started)
                    return Self.successResponse(id: id, result: result)
                }.recover { error in
                    observer?.requestCompleted(method: method, failed: true, startedAt: started)
                    let rpcError = error as? RPCError ?? RPCError.internalError("\(error)")
                    return Self.errorResponse(id: id, message: rpcError.message)
                })
        }
    }

    /// Binds positional or keyword parameters to the method's parameter list (wire-protocol.md §9 items 1–2,
    /// checks 5–6).
    static func bind(_ params: CBORValue?, to method: RPCMethod) -> Result<[CBORValue?], RPCError> {
        let total = method.parameters.count
        let required = method.requiredCount
        switch params {
        case nil, .null?:
            return bindPositional([], method: method)
        case .array(let items)?, .tuple(let items)?:
            return bindPositional(items, method: method)
        case .map(let keywords)?:
            var bound = [CBORValue?](repeating: nil, count: total)
            var present = [Bool](repeating: false, count: total)
            for pair in keywords.pairs {
                guard let name = pair.key.stringOctets,
                    let index = method.parameters.firstIndex(where: { Array($0.utf8) == name })
                else {
                    let rendered = pair.key.stringOctets ?? PythonRepr.render(pair.key)
                    return .failure(
                        RPCError(Array("unexpected parameter ".utf8) + rendered + Array(" for \(method.name)".utf8)))
                }
                bound[index] = pair.value
                present[index] = true
            }
            if let missing = (0..<required).first(where: { !present[$0] }) {
                return .failure(RPCError("missing parameter \(method.parameters[missing]) for \(method.name)"))
            }
            return .success(bound)
        case let other?:
            return .failure(RPCError(Array("don't understand params: ".utf8) + PythonRepr.render(other)))
        }
    }

    private static func bindPositional(_ items: [CBORValue], method: RPCMethod) -> Result<[CBORValue?], RPCError> {
        let total = method.parameters.count
        let required = method.requiredCount
        guard items.count >= required, items.count <= total else {
            let expected = required == total ? "\(total)" : "\(required) to \(total)"
            return .failure(
                RPCError("wrong number of parameters for \(method.name): expected \(expected), got \(items.count)"))
        }
        var bound = [CBORValue?](repeating: nil, count: total)
        for (index, item) in items.enumerated() { bound[index] = item }
        return .success(bound)
    }

    static let idKey = Array("id".utf8)
    static let methodKey = Array("method".utf8)
    static let paramsKey = Array("params".utf8)

    /// `{id, result}` with byte-string keys (wire-protocol.md §7.1, §7.4).
    public static func successResponse(id: CBORValue, result: CBORValue) -> CBORValue {
        .map(CBORMap([CBORPair(key: .bytes(idKey), value: id), CBORPair(key: .bytes(Array("result".utf8)), value: result)]))
    }

    /// `{id, error: {message}}` with byte-string keys and a byte-string message (wire-protocol.md §7.3).
    public static func errorResponse(id: CBORValue, message: [UInt8]) -> CBORValue {
        let error = CBORValue.map(CBORMap([CBORPair(key: .bytes(Array("message".utf8)), value: .bytes(message))]))
        return .map(CBORMap([CBORPair(key: .bytes(idKey), value: id), CBORPair(key: .bytes(Array("error".utf8)), value: error)]))
    }
}
