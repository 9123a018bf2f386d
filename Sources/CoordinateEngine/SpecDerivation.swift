import CBOR

/// Derives a spec's name and control fields from its data (semantics.md §3.1–3.2).
public enum SpecDerivation {
    /// The range int-like control fields are clamped to, so scheduler score products fit in 64 bits.
    static let controlRange: ClosedRange<Int64> = -2_147_483_648...2_147_483_647

    /// Reports values that had to be clamped (the spec says: a logged warning, not an error).
    public typealias ClampReporter = (_ key: String, _ original: Int64, _ clamped: Int64) -> Void

    /// The spec's name: the `name` value, which must be a non-empty string.
    public static func name(of data: CBORMap) throws(EngineError) -> Identifier {
        guard let value = data["name"], !value.isNull else { throw .noWorkSpecName }
        guard let name = Identifier(value) else { throw .workSpecNameNotString }
        guard !name.isEmpty else { throw .noWorkSpecName }
        return name
    }

    /// Clamps an int-like control value into ±2³¹, reporting when it changed.
    static func clampControl(_ value: Int64, key: String, report: ClampReporter?) -> Int64 {
        let clamped = min(max(value, controlRange.lowerBound), controlRange.upperBound)
        if clamped != value { report?(key, value, clamped) }
        return clamped
    }

    /// The derived control fields of `data`. A key whose value is null is treated as absent (except
    /// `then_preempts`).
    public static func fields(of data: CBORMap, report: ClampReporter? = nil) throws(EngineError) -> SpecFields {
        var fields = SpecFields()
        func value(_ key: StaticString) -> CBORValue? {
            guard let value = data[key], !value.isNull else { return nil }
            return value
        }
        func intLike(_ key: String, _ value: CBORValue) throws(EngineError) -> Int64 {
            guard let int = value.intLike else { throw .invalidWorkSpec(key: key, reason: "expected an integer") }
            return clampControl(int, key: key, report: report)
        }
        func limit(_ key: String, _ value: CBORValue?) throws(EngineError) -> Int64? {
            guard let value else { return nil }
            let int = try intLike(key, value)
            return int > 0 ? int : nil
        }

        fields.paused = value("disabled")?.isTruthy ?? false
        if let weight = value("weight") {
            fields.weight = try intLike("weight", weight)
        } else if let nice = value("nice") {
            let niceValue = try intLike("nice", nice)
            fields.weight = clampControl(max(1, 20 - niceValue), key: "weight", report: report)
        }
        if let priority = value("priority") { fields.priority = try intLike("priority", priority) }
        let continuous = value("continuous")?.isTruthy ?? false
        fields.canBeContinuous = continuous
        fields.continuous = continuous
        if let interval = value("interval") {
            guard let seconds = interval.numberLike else {
                throw .invalidWorkSpec(key: "interval", reason: "expected a number")
            }
            fields.interval = seconds > 0 ? Time.duration(seconds: seconds) : nil
        }
        fields.maxRunning = try limit("max_running", value("max_running"))
        fields.maxGetwork = try limit("max_getwork", value("max_getwork"))
        fields.maxRetries = try limit("max_retries", value("max_retries"))
        if let then = value("then") {
            guard let name = Identifier(then) else { throw .invalidWorkSpec(key: "then", reason: "expected a string") }
            fields.then = name.isEmpty ? nil : name
        }
        if let preempts = data["then_preempts"] { fields.thenPreempts = preempts.isTruthy }
        if let runtime = value("runtime") {
            guard let octets = runtime.stringOctets else {
                throw .invalidWorkSpec(key: "runtime", reason: "expected a string")
            }
            fields.runtime = octets
        }
        if let minGB = value("min_gb"), let number = minGB.numberLike { fields.minGB = number }
        return fields
    }
}
