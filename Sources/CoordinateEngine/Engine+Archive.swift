import CBOR

extension EngineTransaction {
    /// Runs the archive pass of semantics.md §11 on the selected specs (all when `specNames` is nil), separately
    /// for FINISHED and FAILED units. Returns how many units were archived.
    @discardableResult
    public func archive(
        namespace name: Identifier, specNames: [Identifier]?, countLimit: Int?, ageLimit: Double?
    ) throws -> Int {
        guard countLimit != nil || ageLimit != nil, let namespace = try namespace(name, create: false) else { return 0 }
        var specs = try session.specs(namespace: namespace.id)
        if let specNames {
            let wanted = Set(specNames)
            specs = specs.filter { wanted.contains($0.name) }
        }
        var total = 0
        for var spec in specs {
            var changed = false
            for bucket in [UnitBucket.finished, .failed] {
                let removed = try archive(spec: spec, bucket: bucket, countLimit: countLimit, ageLimit: ageLimit)
                guard removed > 0 else { continue }
                changed = true
                total += removed
                if bucket == .finished {
                    spec.archivedFinished += Int64(removed)
                } else {
                    spec.archivedFailed += Int64(removed)
                }
            }
            if changed { try session.updateSpec(spec) }
        }
        return total
    }

    private func archive(spec: SpecRecord, bucket: UnitBucket, countLimit: Int?, ageLimit: Double?) throws -> Int {
        var removed = 0
        if let ageLimit {
            let cutoff = now &- Time.duration(seconds: ageLimit)
            while true {
                let oldest = try session.completedUnits(spec: spec.id, bucket: bucket, limit: 256)
                let expired = oldest.prefix { ($0.completionTime ?? 0) < cutoff }
                for unit in expired { try session.deleteUnit(unit) }
                removed += expired.count
                if expired.count < oldest.count || oldest.count < 256 { break }
            }
        }
        if let countLimit {
            let remaining = try session.unitCounts(spec: spec.id)[bucket]
            let excess = remaining - countLimit
            if excess > 0 {
                for unit in try session.completedUnits(spec: spec.id, bucket: bucket, limit: excess) {
                    try session.deleteUnit(unit)
                }
                removed += excess
            }
        }
        return removed
    }

    /// Runs the automatic archive pass on every namespace with the configured limits.
    public func archiveAll() throws -> Int {
        var total = 0
        for namespace in try session.allNamespaces() {
            total += try archive(
                namespace: namespace.name, specNames: nil, countLimit: configuration.limitCompletedCount,
                ageLimit: configuration.limitCompletedAge)
        }
        return total
    }
}
