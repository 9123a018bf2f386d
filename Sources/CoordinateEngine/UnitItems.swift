import CBOR

/// One item to add to a spec (rpc-methods.md §2.8, REST bulk add, chaining outputs).
public struct UnitItem: Sendable, Equatable {
    public var key: Identifier
    public var data: StoredValue
    /// An explicit priority, if the item carries one.
    public var priority: Double?
    /// Not-before delay in seconds; only positive values delay.
    public var delay: Double?
    /// An absolute not-before time (REST `meta.not_before`); `delay` wins when both are set.
    public var notBefore: Timestamp?

    public init(
        key: Identifier, data: StoredValue, priority: Double? = nil, delay: Double? = nil, notBefore: Timestamp? = nil
    ) {
        self.key = key
        self.data = data
        self.priority = priority
        self.delay = delay
        self.notBefore = notBefore
    }
}

/// The items of one add request as it states them: the items before its first invalid one, and that item's
/// problem. The engine reports problems in item order, the data-size limit included (``EngineConfiguration``),
/// so a request's parser only has to stop where its own checks fail.
public struct UnitItemBatch: Sendable {
    public var items: [UnitItem]
    /// Why the item after `items` is invalid; nil when every item parsed.
    public var problem: UnitItemProblem?
    /// How many items the request carried, for `max_units_per_call`.
    public var count: Int

    public init(items: [UnitItem], problem: UnitItemProblem? = nil, count: Int) {
        self.items = items
        self.problem = problem
        self.count = count
    }

    /// A batch of valid items.
    public init(_ items: [UnitItem]) { self.init(items: items, count: items.count) }
}

/// The rules of a unit item (rpc-methods.md §2.8), for every way items arrive: CBOR-RPC's `add_work_units`,
/// a finished unit's `output` (semantics.md §6.5) and REST's JSON items, whose `meta` is read as its CBOR form.
public enum UnitItemParser {
    /// The items of a list, or of a map treated as the list of its `[key, data]` pairs.
    public static func elements(of value: CBORValue) -> [CBORValue]? {
        if let list = value.listElements { return list }
        if case .map(let map) = value { return map.pairs.map { .array([$0.key, $0.value]) } }
        return nil
    }

    /// Parses items of the CBOR-RPC shape, stopping at the first invalid one.
    public static func parse(_ elements: [CBORValue]) -> UnitItemBatch {
        var items: [UnitItem] = []
        items.reserveCapacity(elements.count)
        for element in elements {
            switch item(element) {
            case .success(let item): items.append(item)
            case .failure(let problem): return UnitItemBatch(items: items, problem: problem, count: elements.count)
            }
        }
        return UnitItemBatch(items: items, count: elements.count)
    }

    /// One item of the CBOR-RPC shape: a bare key, or `[key, data, meta?, priority?]`.
    public static func item(_ element: CBORValue) -> Result<UnitItem, UnitItemProblem> {
        if let key = Identifier(element) {
            return .success(UnitItem(key: key, data: .emptyMap))
        }
        guard let parts = element.listElements else { return .failure(.notAList) }
        guard parts.count >= 2 else { return .failure(.tooFewParameters) }
        guard parts.count <= 4 else { return .failure(.tooManyParameters) }
        guard let key = Identifier(parts[0]) else { return .failure(.keyNotString) }
        return Result { () throws(UnitItemProblem) in
            try item(
                key: key, data: StoredValue(encoding: parts[1]), meta: parts.count >= 3 ? parts[2] : nil,
                priority: parts.count == 4 ? parts[3] : nil)
        }
    }

    /// An item from its parts, checking `meta` and the priorities: an explicit `priority` that is not null wins
    /// over `meta.priority`; both must be finite numbers, as must `meta.delay`.
    public static func item(
        key: Identifier, data: StoredValue, meta: CBORValue?, priority: CBORValue?
    ) throws(UnitItemProblem) -> UnitItem {
        var metaMap: CBORMap?
        switch meta {
        case nil, .null?: break
        case .map(let map)?: metaMap = map
        default: throw .metaNotMap
        }
        var explicit: CBORValue?
        if let priority, !priority.isNull {
            explicit = priority
        } else if let value = metaMap?["priority"], !value.isNull {
            explicit = value
        }
        var item = UnitItem(key: key, data: data)
        if let explicit {
            guard let number = explicit.strictNumber, number.isFinite else { throw .priorityNotNumber }
            item.priority = number
        }
        if let value = metaMap?["delay"], !value.isNull {
            guard let number = value.strictNumber, number.isFinite else { throw .delayNotNumber }
            item.delay = number
        }
        return item
    }
}

extension EngineConfiguration {
    /// `max_unit_data_bytes`, for every way data reaches a unit (rpc-methods.md §2.8 and §2.14, rest-api.md §3).
    func check(unitData data: StoredValue) throws(EngineError) {
        if let limit = maxUnitDataBytes, data.bytes.count > limit {
            throw .dataTooLarge(size: data.bytes.count, limit: limit)
        }
    }

    /// `max_units_per_call` for a request of `count` units.
    func check(unitCount count: Int) throws(EngineError) {
        if let limit = maxUnitsPerCall, count > limit { throw .tooManyUnits(count: count, limit: limit) }
    }

    /// How many units a grant may hand out when `requested` are asked for: `max_units_per_call` clamps
    /// (rpc-methods.md §2.15).
    public func grantable(_ requested: Int) -> Int {
        if let limit = maxUnitsPerCall { min(requested, limit) } else { requested }
    }
}
