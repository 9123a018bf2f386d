import CoordinateEngine
import Locking

/// Namespace and spec rows kept across transactions, so that an operation on one unit does not read them again
/// each time (a finish was five round trips, three of them for these rows).
///
/// Validity rests on the namespace's generation, which every spec change (creation, update, deletion) raises in
/// the same transaction (``PostgresSession``): an entry is used only together with a check that the generation
/// is still the one it was read under. The check travels behind the operation's next statement without being
/// waited for, and fails the transaction when the generation moved (or the namespace is gone), which is then
/// retried with the cache dropped (``PostgresSession/staleCatalogState``). Counters are never cached: they change
/// with every operation.
final class CatalogCache: Sendable {
    private struct Entries {
        var namespaces: [PrefetchKey: (record: NamespaceRecord, generation: Int64)] = [:]
        var specs: [Int64: (generation: Int64, byName: [PrefetchKey: SpecRecord])] = [:]
    }

    private let entries = Locked(Entries())

    /// Namespaces kept at most; beyond it the cache starts again empty (a daemon serving that many namespaces
    /// at once gains little from it).
    static let maxNamespaces = 10_000

    func namespace(named name: Identifier) -> (record: NamespaceRecord, generation: Int64)? {
        entries.withLock { $0.namespaces[PrefetchKey(name)] }
    }

    func remember(_ namespace: NamespaceRecord, generation: Int64) {
        entries.withLock { entries in
            if entries.namespaces.count >= Self.maxNamespaces { entries = Entries() }
            entries.namespaces[PrefetchKey(namespace.name)] = (namespace, generation)
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

    /// Forgets the namespace and its specs (a transaction changed them, which moves its generation).
    func forget(namespace: Int64) {
        entries.withLock { entries in
            entries.specs[namespace] = nil
            entries.namespaces = entries.namespaces.filter { $0.value.record.id != namespace }
        }
    }

    func removeAll() {
        entries.withLock { $0 = Entries() }
    }
}
