/// A request the engine refuses as a whole. Each case has the exact text of the error response
/// (rpc-methods.md) and a REST error code (rest-api.md §1.6).
public enum EngineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `No 'name' key in work spec`
    case noWorkSpecName
    /// `Work spec 'name' must be a string`
    case workSpecNameNotString
    /// `invalid work spec: KEY: REASON`
    case invalidWorkSpec(key: String, reason: String)
    /// `Cannot change work spec 'name'` (REST data updates only)
    case changedName
    /// An invalid item in a unit batch, with its exact text (rpc-methods.md §2.8).
    case invalidUnitItem(UnitItemProblem)
    /// `too many work units: N > LIMIT`
    case tooManyUnits(count: Int, limit: Int)
    /// `work unit data too large: N > LIMIT bytes` (`max_unit_data_bytes`, wherever data reaches a unit)
    case dataTooLarge(size: Int, limit: Int)
    /// A parameter failed a semantic check that the protocol reports as `bad parameter …`; the RPC layer adds
    /// the method name.
    case badParameter(name: String, expected: String)
    /// Any other refusal, with its exact text.
    case other(String)

    public var description: String { message }

    /// The exact message text.
    public var message: String {
        switch self {
        case .noWorkSpecName: return "No 'name' key in work spec"
        case .workSpecNameNotString: return "Work spec 'name' must be a string"
        case .invalidWorkSpec(let key, let reason): return "invalid work spec: \(key): \(reason)"
        case .changedName: return "Cannot change work spec 'name'"
        case .invalidUnitItem(let problem): return problem.message
        case .tooManyUnits(let count, let limit): return "too many work units: \(count) > \(limit)"
        case .dataTooLarge(let size, let limit): return "work unit data too large: \(size) > \(limit) bytes"
        case .badParameter(let name, let expected): return "bad parameter \(name): expected \(expected)"
        case .other(let text): return text
        }
    }
}

/// Why one item of a unit batch is invalid (rpc-methods.md §2.8; REST maps them in rest-api.md §1.6).
public enum UnitItemProblem: Error, Sendable, Equatable {
    case notAList
    case tooFewParameters
    case tooManyParameters
    case keyNotString
    case metaNotMap
    case priorityNotNumber
    case delayNotNumber
    /// Data in a form the protocol cannot read (REST's `data`), with the reader's text.
    case dataNotReadable(String)

    public var message: String {
        switch self {
        case .notAList: return "work unit not a list"
        case .tooFewParameters: return "too few parameters to work unit"
        case .tooManyParameters: return "too many parameters to work unit"
        case .keyNotString: return "work unit key must be a string"
        case .metaNotMap: return "work unit meta must be a map"
        case .priorityNotNumber: return "priority must be a number"
        case .delayNotNumber: return "delay must be a number"
        case .dataNotReadable(let text): return text
        }
    }
}
