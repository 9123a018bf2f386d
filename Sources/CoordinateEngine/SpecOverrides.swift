import CBOR

/// The stored form of a spec's overrides (semantics.md §3.3): a CBOR map from field name to value, absent when
/// nothing is overridden. Shared by the durable backends.
public enum SpecOverrides {

    public static func encode(_ spec: SpecRecord) -> [UInt8]? {
        guard !spec.overridden.isEmpty else { return nil }
        let values = spec.overrideValues
        var map = CBORMap()
        func optional(_ value: Int64?) -> CBORValue { value.map { .int($0) } ?? .null }
        for field in spec.overridden.sorted(by: { $0.rawValue < $1.rawValue }) {
            let value: CBORValue
            switch field {
            case .paused: value = .bool(values.paused)
            case .continuous: value = .bool(values.continuous)
            case .weight: value = .int(values.weight)
            case .interval: value = optional(values.interval)
            case .maxRunning: value = optional(values.maxRunning)
            case .maxGetwork: value = optional(values.maxGetwork)
            case .maxRetries: value = optional(values.maxRetries)
            case .priority: value = .int(values.priority)
            }
            map.append(.text(field.rawValue), value)
        }
        return CBOREncoder.encode(.map(map))
    }

    public static func decode(_ bytes: [UInt8], into spec: inout SpecRecord) {
        guard case .map(let map)? = try? CBORDecoder.decode(bytes) else { return }
        for pair in map.pairs {
            guard let name = pair.key.stringOctets,
                let field = OverridableField(rawValue: String(decoding: name, as: UTF8.self))
            else { continue }
            spec.overridden.insert(field)
            let value = pair.value
            switch field {
            case .paused: spec.overrideValues.paused = value.isTruthy
            case .continuous: spec.overrideValues.continuous = value.isTruthy
            case .weight: spec.overrideValues.weight = value.int64Value ?? 20
            case .interval: spec.overrideValues.interval = value.int64Value
            case .maxRunning: spec.overrideValues.maxRunning = value.int64Value
            case .maxGetwork: spec.overrideValues.maxGetwork = value.int64Value
            case .maxRetries: spec.overrideValues.maxRetries = value.int64Value
            case .priority: spec.overrideValues.priority = value.int64Value ?? 0
            }
        }
    }
}
