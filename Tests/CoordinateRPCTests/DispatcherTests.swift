import CBOR
import CoordinateRPC
import NIOCore
import NIOEmbedded
import Testing

struct SampleModule: RPCModule {
    let name = "Sample"
    var methods: [RPCMethod] {
        [
            RPCMethod("pair", parameters: ["first", "second", "third"], required: 2) { call in
                .value(.array([call[0]!, call[1]!, call[2] ?? "absent"]))
            },
            RPCMethod("none") { _ in .value(.null) },
        ]
    }
}

@Suite("RPC dispatcher")
struct DispatcherTests {
    let dispatcher = RPCDispatcher(table: try! RPCMethodTable(modules: [SampleModule()]))
    let loop = EmbeddedEventLoop()

    func respond(_ message: CBORValue) -> CBORValue {
        let response = dispatcher.respond(to: message, on: loop)
        guard response.isResolved else { return "deferred" }
        return response.value
    }

    func request(_ method: CBORValue, _ params: CBORValue?, id: CBORValue = 1) -> CBORValue {
        var map = CBORMap([("id", id), ("method", method)])
        if let params { map.append("params", params) }
        return .map(map)
    }

    @Test("binding: positional, tuple, keyword, optional defaults")
    func binding() {
        #expect(respond(request("pair", [1, 2])) == RPCDispatcher.successResponse(id: 1, result: [1, 2, "absent"]))
        #expect(
            respond(request("pair", .tuple([1, 2, 3]))) == RPCDispatcher.successResponse(id: 1, result: [1, 2, 3]))
        #expect(
            respond(request("pair", .map(CBORMap([("second", 2), (.text("first"), 1)]))))
                == RPCDispatcher.successResponse(id: 1, result: [1, 2, "absent"]))
        #expect(respond(request("none", nil)) == RPCDispatcher.successResponse(id: 1, result: .null))
        #expect(respond(request("none", .null)) == RPCDispatcher.successResponse(id: 1, result: .null))
    }

    @Test("errors follow the documented order and texts")
    func errorOrder() {
        func message(_ value: CBORValue) -> String? {
            guard case .map(let map) = value, case .map(let error)? = map["error"],
                let text = error["message"]?.stringOctets
            else { return nil }
            return String(decoding: text, as: UTF8.self)
        }
        // Unknown method wins over bad params; bad params kind wins over arity.
        #expect(message(respond(request("nope", 5))) == "no such method nope")
        #expect(message(respond(request("pair", 5))) == "don't understand params: 5")
        #expect(message(respond(request("pair", [1]))) == "wrong number of parameters for pair: expected 2 to 3, got 1")
        #expect(message(respond(request("none", [1]))) == "wrong number of parameters for none: expected 0, got 1")
        // Unknown keyword reported before a missing one, the first unknown in map order.
        #expect(
            message(respond(request("pair", .map(CBORMap([("x", 1), ("y", 2)]))))) == "unexpected parameter x for pair")
        #expect(message(respond(request("pair", .map(CBORMap([("second", 1)]))))) == "missing parameter first for pair")
        // The last of duplicate request keys wins.
        let duplicate = CBORValue.map(CBORMap([("id", 1), ("method", "nope"), ("method", "none")]))
        #expect(respond(duplicate) == RPCDispatcher.successResponse(id: 1, result: .null))
        // A map without id: nothing executed, id null.
        #expect(
            respond(.map(CBORMap([("method", "none")])))
                == RPCDispatcher.errorResponse(id: .null, message: Array("malformed request: missing id".utf8)))
    }
}
