import CBOR
import CoordinateEngine

/// Parses the items of `add_work_units` (rpc-methods.md §2.8), stopping at the first invalid one.
enum UnitItemParser {
    static func parse(_ list: [CBORValue], maxDataBytes: Int?) -> Result<[UnitItem], EngineError> {
        var items: [UnitItem] = []
        items.reserveCapacity(list.count)
        for element in list {
            switch parseItem(element, maxDataBytes: maxDataBytes) {
            case .success(let item): items.append(item)
            case .failure(let problem): return .failure(.invalidUnitItem(problem))
            }
        }
        return .success(items)
    }

    /// The items of a list, or of a map treated as the list of its `[key, data]` pairs.
    static func elements(of value: CBORValue) -> [CBORValue]? {
        if let list = value.listElements { return list }
        if case .map(let map) = value { return map.pairs.map { .array([$0.key, $0.value]) } }
        return nil
    }

    static func parseItem(_ element: CBORValue, maxDataBytes: Int?) -> Result<UnitItem, UnitItemProblem> {
        if let key = Identifier(element) {
            return .success(UnitItem(key: key, data: .emptyMap))
        }
        guard let parts = element.listElements else { return .failure(.notAList) }
        guard parts.count >= 2 else { return .failure(.tooFewParameters) }
        guard parts.count <= 4 else { return .failure(.tooManyParameters) }
        guard let key = Identifier(parts[0]) else { return .failure(.keyNotString) }
        var meta: CBORMap?
        if parts.count >= 3 {
            switch parts[2] {
            case .null: break
            case .map(let map): meta = map
            default: return .failure(.metaNotMap)
            }
        }
        var priority: Double?
        let explicit: CBORValue? = {
            if parts.count == 4, !parts[3].isNull { return parts[3] }
            if let value = meta?["priority"], !value.isNull { return value }
            return nil
        }()
        if let explicit {
            guard let number = explicit.strictNumber, number.isFinite else { return .failure(.priorityNotNumber) }
            priority = number
        }
        var delay: Double?
        if let value = meta?["delay"], !value.isNull {
            guard let number = value.strictNumber, number.isFinite else { return .failure(.delayNotNumber) }
            delay = number
        }
        let data = StoredValue(encoding: parts[1])
        if let limit = maxDataBytes, data.bytes.count > limit {
            return .failure(.dataTooLarge(size: data.bytes.count, limit: limit))
        }
        return .success(UnitItem(key: key, data: data, priority: priority, delay: delay))
    }
}
