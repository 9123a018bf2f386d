import CoordinateEngine
import Locking

/// Namespace and spec rows kept across transactions, so that an operation on one unit does not read them again
/// each time (a finish was eight statements, three of them for these rows, each statement then its own
/// round trip).
///
/// Validity rests on the namespace's generation, which every spec change (creation, update, deletion) raises in
/// the same transaction (``PostgresSession``). The expiry sweep every transaction starts with also answers the
/// current generation of every kept namespace, and a kept row is used only when its generation is still the one
/// it was read under: a change committed by any daemon before the transaction began is seen, exactly as if the
/// rows had been read then. Counters are never kept: they change with every operation.
final class CatalogCache: Sendable {
    private struct Entries {
        var namespaces: [PrefetchKey: (record: NamespaceRecord, generation: Int64)] = [:]
        var specs: [Int64: (generation: Int64, byName: [PrefetchKey: SpecRecord])] = [:]
        /// By namespace id: the spec of the latest grant there, with the generation it was read under.
        var lastGrants: [Int64: (generation: Int64, spec: SpecRecord)] = [:]
    }

    private let entries = Locked(Entries())
    private let usedCount = Locked(0)

    /// How many times a kept namespace row was used instead of read (for tests and diagnostics).
    var uses: Int { usedCount.withLock { $0 } }

    /// Counts one use of a kept row.
    func used() {
        usedCount.withLock { $0 += 1 }
    }

    /// Namespaces kept at most (every transaction asks for their generations); beyond it, further namespaces are
    /// read each time.
    static let maxNamespaces = 64

    func namespace(named name: Identifier) -> (record: NamespaceRecord, generation: Int64)? {
        entries.withLock { $0.namespaces[PrefetchKey(name)] }
    }

    func remember(_ namespace: NamespaceRecord, generation: Int64) {
        entries.withLock { entries in
            let key = PrefetchKey(namespace.name)
            guard entries.namespaces[key] != nil || entries.namespaces.count < Self.maxNamespaces else { return }
            entries.namespaces[key] = (namespace, generation)
        }
    }

    /// The spec read under `generation` of its namespace, if known.
    func spec(namespace: Int64, named name: Identifier, generation: Int64) -> SpecRecord? {
        entries.withLock { entries in
            guard let known = entries.specs[namespace], known.generation == generation else { return nil }
            return known.byName[PrefetchKey(name)]
        }
    }

    func remember(_ spec: SpecRecord, generation: Int64) {
        entries.withLock { entries in
            if entries.specs[spec.namespaceID]?.generation != generation {
                entries.specs[spec.namespaceID] = (generation, [:])
            }
            entries.specs[spec.namespaceID]?.byName[PrefetchKey(spec.name)] = spec
        }
    }

    /// The spec the latest grant in the namespace took units from, if it was read under `generation`: the
    /// spec the next grant there most likely picks too.
    func lastGrant(namespace: Int64, generation: Int64) -> SpecRecord? {
        entries.withLock { entries in
            guard let last = entries.lastGrants[namespace], last.generation == generation else { return nil }
            return last.spec
        }
    }

    func rememberGrant(from spec: SpecRecord, generation: Int64) {
        entries.withLock { entries in
            guard entries.specs[spec.namespaceID] != nil else { return }
            entries.lastGrants[spec.namespaceID] = (generation, spec)
        }
    }

    /// Forgets the namespace and its specs (a transaction changed them, which moves its generation).
    func forget(namespace: Int64) {
        entries.withLock { entries in
            entries.specs[namespace] = nil
            entries.lastGrants[namespace] = nil
            entries.namespaces = entries.namespaces.filter { $0.value.record.id != namespace }
        }
    }

    /// Forgets the namespace of a spec found deleted although its namespace's generation said otherwise (a row
    /// deleted by hand), so that the next transaction reads the namespace's specs again.
    func forget(specID: Int64) {
        let namespace = entries.withLock { entries in
            entries.specs.first { $0.value.byName.values.contains { $0.id == specID } }?.key
        }
        if let namespace { forget(namespace: namespace) }
    }

    /// The ids of the kept namespaces.
    func namespaceIDs() -> [Int64] {
        entries.withLock { $0.namespaces.values.map(\.record.id) }
    }
}
