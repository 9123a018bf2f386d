import CBOR
import NIOCore

/// Receives one event per handled request (each batch element counts), for metrics and request logging.
public protocol RPCObserver: Sendable {
    /// Called when a request's response is known. `method` is nil for requests that never reached a method
    /// (malformed requests, unknown methods).
    func requestCompleted(method: RPCMethod?, failed: Bool, startedAt: ContinuousClock.Instant)
}

/// The response to one message. Responses are encoded straight to the wire by ``encode(into:)``; building
/// them as generic maps first would cost allocations on the hottest path of the daemon.
public indirect enum RPCResponse: Sendable, Equatable {
    /// `{id, result}`.
    case result(id: CBORValue, value: CBORValue)
    /// `{id, error: {message}}`.
    case error(id: CBORValue, message: [UInt8])
    /// The responses to the elements of a batch, in order.
    case batch([RPCResponse])
    /// A response that arrives later; the future never fails and never yields another `.deferred`.
    case deferred(EventLoopFuture<RPCResponse>)

    public static func == (lhs: RPCResponse, rhs: RPCResponse) -> Bool {
        switch (lhs, rhs) {
        case (.result(let a, let b), .result(let c, let d)): return a == c && b == d
        case (.error(let a, let b), .error(let c, let d)): return a == c && b == d
        case (.batch(let a), .batch(let b)): return a == b
        case (.deferred(let a), .deferred(let b)): return a === b
        default: return false
        }
    }

    /// Whether the response is complete (contains no deferred part).
    public var isResolved: Bool {
        switch self {
        case .result, .error: return true
        case .batch(let items): return items.allSatisfy(\.isResolved)
        case .deferred: return false
        }
    }

    /// The response as a CBOR value (tests and diagnostics; the server uses ``encode(into:)``).
    public var value: CBORValue {
        switch self {
        case .result(let id, let value): return RPCDispatcher.successResponse(id: id, result: value)
        case .error(let id, let message): return RPCDispatcher.errorResponse(id: id, message: message)
        case .batch(let items): return .array(items.map(\.value))
        case .deferred: return .null
        }
    }

    /// Appends the canonical encoding of a resolved response (wire-protocol.md §7.4: byte-string keys, `id`
    /// first).
    public func encode(into encoder: inout CBOREncoder) {
        switch self {
        case .result(let id, let value):
            encoder.bytes.append(0xa2)
            encoder.bytes.append(contentsOf: Self.idKeyEncoded)
            encoder.encode(id)
            encoder.bytes.append(contentsOf: Self.resultKeyEncoded)
            encoder.encode(value)
        case .error(let id, let message):
            encoder.bytes.append(0xa2)
            encoder.bytes.append(contentsOf: Self.idKeyEncoded)
            encoder.encode(id)
            encoder.bytes.append(contentsOf: Self.errorKeyEncoded)
            encoder.bytes.append(0xa1)
            encoder.bytes.append(contentsOf: Self.messageKeyEncoded)
            encoder.writeHead(major: 2, argument: UInt64(message.count))
            encoder.bytes.append(contentsOf: message)
        case .batch(let items):
            encoder.writeHead(major: 4, argument: UInt64(items.count))
            for item in items { item.encode(into: &encoder) }
        case .deferred:
            encoder.bytes.append(0xf6)
        }
    }

    static let idKeyEncoded: [UInt8] = [0x42] + Array("id".utf8)
    static let resultKeyEncoded: [UInt8] = [0x46] + Array("result".utf8)
    static let errorKeyEncoded: [UInt8] = [0x45] + Array("error".utf8)
    static let messageKeyEncoded: [UInt8] = [0x47] + Array("message".utf8)
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
                if !response.isResolved { anyDeferred = true }
                responses.append(response)
            }
            guard anyDeferred else { return .batch(responses) }
            let futures = responses.map { response -> EventLoopFuture<RPCResponse> in
                switch response {
                case .deferred(let future): return future
                case .batch where !response.isResolved:
                    // A nested batch with deferred parts: resolve it recursively.
                    return Self.resolve(response, on: eventLoop)
                default: return eventLoop.makeSucceededFuture(response)
                }
            }
            return .deferred(EventLoopFuture.whenAllSucceed(futures, on: eventLoop).map { .batch($0) })
        case .map(let request):
            return respond(toRequest: request, on: eventLoop)
        default:
            observer?.requestCompleted(method: nil, failed: true, startedAt: .now)
            return .error(id: .null, message: Array("malformed request: not a request map".utf8))
        }
    }

    /// A future of the fully resolved form of `response`.
    public static func resolve(_ response: RPCResponse, on eventLoop: any EventLoop) -> EventLoopFuture<RPCResponse> {
        switch response {
        case .deferred(let future): return future
        case .batch(let items) where !response.isResolved:
            return EventLoopFuture.whenAllSucceed(items.map { resolve($0, on: eventLoop) }, on: eventLoop).map {
                .batch($0)
            }
        default: return eventLoop.makeSucceededFuture(response)
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
            return .error(id: .null, message: Self.missingIDMessage)
        }
        guard let methodName = methodValue?.stringOctets else {
            observer?.requestCompleted(method: nil, failed: true, startedAt: started)
            return .error(id: id, message: Self.missingMethodMessage)
        }
        guard let method = table.method(named: methodName) else {
            observer?.requestCompleted(method: nil, failed: true, startedAt: started)
            return .error(id: id, message: Self.noSuchMethodPrefix + methodName)
        }
        let arguments: [CBORValue?]
        switch Self.bind(params, to: method) {
        case .success(let bound): arguments = bound
        case .failure(let error):
            observer?.requestCompleted(method: method, failed: true, startedAt: started)
            return .error(id: id, message: error.message)
        }
        let reply: RPCReply
        do {
            reply = try method.handler(RPCCall(method: method, arguments: arguments, eventLoop: eventLoop))
        } catch {
            observer?.requestCompleted(method: method, failed: true, startedAt: started)
            return .error(id: id, message: error.message)
        }
        switch reply {
        case .value(let result):
            observer?.requestCompleted(method: method, failed: false, startedAt: started)
            return .result(id: id, value: result)
        case .future(let future):
            let observer = self.observer
            return .deferred(
                future.map { result in
                    observer?.requestCompleted(method: method, failed: false, startedAt: started)
                    return RPCResponse.result(id: id, value: result)
                }.recover { error in
                    observer?.requestCompleted(method: method, failed: true, startedAt: started)
                    let rpcError = error as? RPCError ?? RPCError.internalError("\(error)")
                    return RPCResponse.error(id: id, message: rpcError.message)
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

    static let missingIDMessage = Array("malformed request: missing id".utf8)
    static let missingMethodMessage = Array("malformed request: missing method".utf8)
    static let noSuchMethodPrefix = Array("no such method ".utf8)
    static let idKey = Array("id".utf8)
    static let methodKey = Array("method".utf8)
    static let paramsKey = Array("params".utf8)

    /// `{id, result}` with byte-string keys (wire-protocol.md §7.1, §7.4).
    public static func successResponse(id: CBORValue, result: CBORValue) -> CBORValue {
        .map(
            CBORMap([
                CBORPair(key: .bytes(idKey), value: id), CBORPair(key: .bytes(Array("result".utf8)), value: result),
            ]))
    }

    /// `{id, error: {message}}` with byte-string keys and a byte-string message (wire-protocol.md §7.3).
    public static func errorResponse(id: CBORValue, message: [UInt8]) -> CBORValue {
        let error = CBORValue.map(CBORMap([CBORPair(key: .bytes(Array("message".utf8)), value: .bytes(message))]))
        return .map(
            CBORMap([CBORPair(key: .bytes(idKey), value: id), CBORPair(key: .bytes(Array("error".utf8)), value: error)])
        )
    }
}
