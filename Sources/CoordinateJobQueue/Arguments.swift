import CBOR
import CoordinateEngine
import CoordinateRPC

/// Typed access to a call's arguments with the exact `bad parameter P for NAME: expected TYPE` errors of
/// wire-protocol.md §9 (TYPE phrases from rpc-methods.md).
extension RPCCall {
    func fail(_ index: Int, _ type: String) -> RPCError {
        .badParameter(method.parameters[index], method: methodName, expected: type)
    }

    /// A required string parameter, as an identifier.
    func identifier(_ index: Int) throws(RPCError) -> Identifier {
        guard let value = self[index], let identifier = Identifier(value) else { throw fail(index, "string") }
        return identifier
    }

    /// A string-or-null parameter.
    func optionalIdentifier(_ index: Int) throws(RPCError) -> Identifier? {
        guard let value = self[index], !value.isNull else { return nil }
        guard let identifier = Identifier(value) else { throw fail(index, "string or null") }
        return identifier
    }

    /// A map parameter; an omitted optional one is empty.
    func map(_ index: Int) throws(RPCError) -> CBORMap {
        guard let value = self[index] else { return CBORMap() }
        guard case .map(let map) = value else { throw fail(index, "map") }
        return map
    }

    /// A list (array or tuple) parameter.
    func list(_ index: Int, type: String = "list") throws(RPCError) -> [CBORValue] {
        guard let value = self[index], let items = value.listElements else { throw fail(index, type) }
        return items
    }

    /// An int-like parameter.
    func int(_ index: Int, type: String = "integer") throws(RPCError) -> Int64 {
        guard let value = self[index], let int = value.intLike else { throw fail(index, type) }
        return int
    }

    /// An int-like-or-null parameter.
    func optionalInt(_ index: Int, type: String = "integer or null") throws(RPCError) -> Int64? {
        guard let value = self[index], !value.isNull else { return nil }
        guard let int = value.intLike else { throw fail(index, type) }
        return int
    }

    /// A number-like parameter.
    func number(_ index: Int, type: String = "number") throws(RPCError) -> Double {
        guard let value = self[index], let number = value.numberLike else { throw fail(index, type) }
        return number
    }
}

/// Validates and reads an options map (rpc-methods.md §1.2): unknown keys are ignored, a null value counts as
/// absent unless a key says otherwise, and type errors name `options.KEY`, checked in the map's pair order.
struct Options {
    enum Kind {
        case any
        case integer
        case integerOrNull
        case number
        case numberOrNull
        case stringOrNull
        case listOrNull
        case integerListOrNull
        case nonNegativeIntegerOrNull

        var phrase: String {
            switch self {
            case .any: return "any"
            case .integer, .integerOrNull: return self == .integer ? "integer" : "integer or null"
            case .number: return "number"
            case .numberOrNull: return "number or null"
            case .stringOrNull: return "string or null"
            case .listOrNull: return "list or null"
            case .integerListOrNull: return "integer, list, or null"
            case .nonNegativeIntegerOrNull: return "non-negative integer or null"
            }
        }

        func accepts(_ value: CBORValue) -> Bool {
            if value.isNull { return true }
            switch self {
            case .any: return true
            case .integer, .integerOrNull: return value.intLike != nil
            case .number, .numberOrNull: return value.numberLike != nil
            case .stringOrNull: return value.isString
            case .listOrNull: return value.listElements != nil
            case .integerListOrNull: return value.intLike != nil || value.listElements != nil
            case .nonNegativeIntegerOrNull: return (value.intLike ?? -1) >= 0
            }
        }
    }

    let map: CBORMap

    /// Checks the known keys' types in pair order.
    init(_ map: CBORMap, call: RPCCall, optionsIndex: Int, schema: [String: Kind]) throws(RPCError) {
        self.map = map
        for pair in map.pairs {
            guard let key = pair.key.stringOctets, let kind = schema[String(decoding: key, as: UTF8.self)] else {
                continue
            }
            if !kind.accepts(pair.value) {
                let name = "\(call.method.parameters[optionsIndex]).\(String(decoding: key, as: UTF8.self))"
                throw RPCError.badParameter(name, method: call.methodName, expected: kind.phrase)
            }
        }
    }

    /// The value of `key` (last match), nil when absent or null.
    func value(_ key: StaticString) -> CBORValue? {
        guard let value = map[key], !value.isNull else { return nil }
        return value
    }

    /// Whether `key` is present at all, null included.
    func contains(_ key: String) -> Bool { map.contains(identifier: Array(key.utf8)) }

    func int(_ key: StaticString) -> Int64? { value(key)?.intLike }
    func number(_ key: StaticString) -> Double? { value(key)?.numberLike }
}
