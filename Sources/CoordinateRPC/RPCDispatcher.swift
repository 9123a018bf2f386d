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
            encoder.writeByteString("id")
            encoder.encode(id)
            encoder.writeByteString("result")
            encoder.encode(value)
        case .error(let id, let message):
            encoder.bytes.append(0xa2)
            encoder.writeByteString("id")
            encoder.encode(id)
            encoder.writeByteString("error")
            encoder.bytes.append(0xa1)
            encoder.writeByteString("message")
            encoder.writeHead(major: 2, argument: UInt64(message.count))
            encoder.bytes.append(contentsOf: message)
        case .batch(let items):
            encoder.writeHead(major: 4, argument: UInt64(items.count))
            for item in items { item.encode(into: &encoder) }
        case .deferred:
            encoder.bytes.append(0xf6)
        }
    }
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

    /// A dispatcher with the same observer over a replica of the method table, for the connections of one thread
    /// (``RPCMethodTable/replica()`` says why).
    public func replica() -> RPCDispatcher {
        RPCDispatcher(table: table.replica(), observer: observer)
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

    /// Answers a batch one element after another, encoding each element's response as soon as it is known, so no
    /// result is kept as a value while the others are worked on and the batch's size is known as it grows
    /// (wire-protocol.md §3.3). Nested batches are answered the same way.
    ///
    /// - Parameter limit: bytes of encoded responses the batch may hold beyond its largest element; past it the
    ///   batch is abandoned (the remaining elements are not dispatched) and the future yields nil.
    /// - Returns: the encoded array of responses (the envelope is the caller's), or nil.
    public func respondEncoded(
        toBatch elements: [CBORValue], on eventLoop: any EventLoop, limit: Int
    ) -> EventLoopFuture<[UInt8]?> {
        let batch = EncodedBatch(elements: elements, limit: limit, dispatcher: self, eventLoop: eventLoop)
        if eventLoop.inEventLoop {
            batch.advance()
        } else {
            eventLoop.execute { batch.advance() }
        }
        return batch.promise.futureResult
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

    /// Answers a request straight from its encoded message when it has the usual shape — a map of `id`, a known
    /// `method` and `params`, each at most once — without decoding the request map or its keys. Nil for every
    /// other message (batches, unknown methods, malformed or unusual requests): decode it and call
    /// ``respond(to:on:)``, which gives those their exact answers.
    public func respond(
        toEncoded message: UnsafeRawBufferPointer, maxDepth: Int, maxDecodedBytes: Int, on eventLoop: any EventLoop
    ) -> RPCResponse? {
        guard var scanner = CBORMapScanner(message: message, maxDepth: maxDepth, maxDecodedBytes: maxDecodedBytes)
        else { return nil }
        let started = startTime
        var id: CBORValue?
        var method: RPCMethod?
        var params: CBORValue?
        var hasParams = false
        while let key = scanner.nextKey() {
            if id == nil, key.elementsEqual(Self.idKey) {
                guard let value = scanner.value() else { return nil }
                id = value
            } else if method == nil, key.elementsEqual(Self.methodKey) {
                guard let name = scanner.stringValue(), let known = table.method(named: name) else { return nil }
                method = known
            } else if !hasParams, key.elementsEqual(Self.paramsKey) {
                guard let value = scanner.value() else { return nil }
                params = value
                hasParams = true
            } else {
                return nil
            }
        }
        guard scanner.isComplete, let id, let method else { return nil }
        return respond(id: id, method: method, params: params, started: started, on: eventLoop)
    }

    private func respond(toRequest request: CBORMap, on eventLoop: any EventLoop) -> RPCResponse {
        let started = startTime
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
            report(nil, failed: true, since: started)
            return .error(id: .null, message: Self.missingIDMessage)
        }
        guard let methodName = methodValue?.stringOctets else {
            report(nil, failed: true, since: started)
            return .error(id: id, message: Self.missingMethodMessage)
        }
        guard let method = table.method(named: methodName) else {
            report(nil, failed: true, since: started)
            return .error(id: id, message: Self.noSuchMethodPrefix + methodName)
        }
        return respond(id: id, method: method, params: params, started: started, on: eventLoop)
    }

    /// When a request started, read only when requests are observed: at a million requests a second, the clock
    /// read shows in a profile.
    private var startTime: ContinuousClock.Instant? { observer == nil ? nil : .now }

    private func report(_ method: RPCMethod?, failed: Bool, since started: ContinuousClock.Instant?) {
        if let observer, let started { observer.requestCompleted(method: method, failed: failed, startedAt: started) }
    }

    /// Binds the parameters and calls the method.
    private func respond(
        id: CBORValue, method: RPCMethod, params: CBORValue?, started: ContinuousClock.Instant?,
        on eventLoop: any EventLoop
    ) -> RPCResponse {
        let arguments: [CBORValue?]
        switch Self.bind(params, to: method) {
        case .success(let bound): arguments = bound
        case .failure(let error):
            report(method, failed: true, since: started)
            return .error(id: id, message: error.message)
        }
        let reply: RPCReply
        do {
            reply = try method.handler(RPCCall(method: method, arguments: arguments, eventLoop: eventLoop))
        } catch {
            report(method, failed: true, since: started)
            return .error(id: id, message: error.message)
        }
        switch reply {
        case .value(let result):
            report(method, failed: false, since: started)
            return .result(id: id, value: result)
        case .future(let future):
            return .deferred(
                future.map { [self] result in
                    report(method, failed: false, since: started)
                    return RPCResponse.result(id: id, value: result)
                }.recover { [self] error in
                    report(method, failed: true, since: started)
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
                    let index = method.parameters.firstIndex(where: { $0.utf8.elementsEqual(name) })
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

/// The state of one ``RPCDispatcher/respondEncoded(toBatch:on:limit:)``: the elements still to answer and the
/// encoding so far. Touched only on its event loop.
private final class EncodedBatch: @unchecked Sendable {
    // @unchecked Sendable: every method runs on `eventLoop` (`advance` is only called there, and the futures it
    // waits for complete there), so the mutable state is never touched concurrently.
    let promise: EventLoopPromise<[UInt8]?>
    private let elements: [CBORValue]
    private let limit: Int
    private let dispatcher: RPCDispatcher
    private let eventLoop: any EventLoop
    private var encoder: CBOREncoder
    private var next = 0
    private var largest = 0

    init(elements: [CBORValue], limit: Int, dispatcher: RPCDispatcher, eventLoop: any EventLoop) {
        self.elements = elements
        self.limit = limit
        self.dispatcher = dispatcher
        self.eventLoop = eventLoop
        promise = eventLoop.makePromise()
        encoder = CBOREncoder(reservingCapacity: 64)
        encoder.writeHead(major: 4, argument: UInt64(elements.count))
    }

    /// Answers elements until one must be waited for (then resumes when it arrives) or all are done. A loop, not
    /// recursion: most elements are answered at once, and a long batch must not grow the stack.
    func advance() {
        eventLoop.assertInEventLoop()
        while next < elements.count {
            let element = elements[next]
            next += 1
            let pending: EventLoopFuture<[UInt8]?>
            if case .array(let nested) = element {
                pending = dispatcher.respondEncoded(toBatch: nested, on: eventLoop, limit: limit)
            } else {
                let response = dispatcher.respond(to: element, on: eventLoop)
                if response.isResolved {
                    guard append(response) else { return }
                    continue
                }
                pending = RPCDispatcher.resolve(response, on: eventLoop).map { resolved -> [UInt8]? in
                    var encoder = CBOREncoder(reservingCapacity: 64)
                    resolved.encode(into: &encoder)
                    return encoder.bytes
                }
            }
            pending.hop(to: eventLoop).whenComplete { [self] result in
                switch result {
                case .success(let bytes?):
                    guard append(encoded: bytes) else { return }
                    advance()
                case .success(nil), .failure:
                    promise.succeed(nil)
                }
            }
            return
        }
        promise.succeed(encoder.bytes)
    }

    private func append(_ response: RPCResponse) -> Bool {
        let before = encoder.bytes.count
        response.encode(into: &encoder)
        return withinLimit(elementSize: encoder.bytes.count - before)
    }

    private func append(encoded bytes: [UInt8]) -> Bool {
        encoder.bytes.append(contentsOf: bytes)
        return withinLimit(elementSize: bytes.count)
    }

    /// False (and the batch abandoned) when the batch holds more than `limit` bytes beyond its largest element.
    private func withinLimit(elementSize: Int) -> Bool {
        largest = max(largest, elementSize)
        guard encoder.bytes.count - largest > limit else { return true }
        promise.succeed(nil)
        return false
    }
}
