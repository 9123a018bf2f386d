import CBOR

/// Outcomes of the all-or-nothing lock operations (rpc-methods.md §3).
public enum LockOutcome: Sendable, Equatable {
    case ok
    /// The path at this index of the request is not lockable.
    case notLockable(index: Int)
    /// The path at this index holds no lock.
    case notHeld(index: Int)
    /// The path at this index is held by another owner.
    case heldBy(index: Int, owner: Identifier)
}

extension EngineTransaction {
    /// Lock timeouts: null or ≤ 0 means 60 s; at most 1 000 000 s.
    static func lockDuration(_ seconds: Int64?) -> Int64 {
        guard let seconds, seconds > 0 else { return 60 * Time.microsecondsPerSecond }
        return min(seconds, 1_000_000) * Time.microsecondsPerSecond
    }

    /// The namespace of a lock-service operation, serialized against every other lock-service operation on it
    /// (a transaction-scoped advisory lock on PostgreSQL, so daemons sharing a database agree, storage.md §4.3).
    private func lockNamespace(_ name: Identifier, create: Bool) throws -> NamespaceRecord? {
        guard let namespace = try namespace(name, create: create) else { return nil }
        try session.serializeLockService(namespace: namespace.id)
        return namespace
    }

    /// Locks every path or none, judged against the locks held before the call (rpc-methods.md §3.1).
    public func lock(
        namespace name: Identifier, owner: Identifier, timeout: Int64?, paths: [CBORValue]
    ) throws
        -> LockOutcome
    {
        guard let namespace = try lockNamespace(name, create: true) else { return .ok }
        let keys = paths.map { LockPath.key(for: $0.listElements ?? []) }
        for (index, key) in keys.enumerated()
        where !(try session.conflictingLocks(namespace: namespace.id, pathKey: key)).isEmpty {
            return .notLockable(index: index)
        }
        let deadline = now &+ Self.lockDuration(timeout)
        for (index, key) in keys.enumerated() {
            try session.saveLock(
                LockRecord(
                    namespaceID: namespace.id, pathKey: key, path: StoredValue(encoding: paths[index]), owner: owner,
                    deadline: deadline))
        }
        return .ok
    }

    /// Locks each lockable path in order, counting locks taken earlier in the call (rpc-methods.md §3.2).
    /// Returns, per path, whether it was locked.
    public func lockSome(
        namespace name: Identifier, owner: Identifier, timeout: Int64?, paths: [CBORValue]
    ) throws
        -> [Bool]
    {
        guard let namespace = try lockNamespace(name, create: true) else { return [] }
        let deadline = now &+ Self.lockDuration(timeout)
        return try paths.map { path in
            let key = LockPath.key(for: path.listElements ?? [])
            guard try session.conflictingLocks(namespace: namespace.id, pathKey: key).isEmpty else { return false }
            try session.saveLock(
                LockRecord(
                    namespaceID: namespace.id, pathKey: key, path: StoredValue(encoding: path), owner: owner,
                    deadline: deadline))
            return true
        }
    }

    /// Checks that `owner` holds every path; the first failure in order.
    private func checkHeld(
        namespace: NamespaceRecord?, owner: Identifier, keys: [[UInt8]]
    ) throws -> (LockOutcome, [LockRecord]) {
        var held: [LockRecord] = []
        for (index, key) in keys.enumerated() {
            guard let namespace, let lock = try session.lock(namespace: namespace.id, pathKey: key) else {
                return (.notHeld(index: index), [])
            }
            guard lock.owner == owner else { return (.heldBy(index: index, owner: lock.owner), []) }
            held.append(lock)
        }
        return (.ok, held)
    }

    /// Extends every lock or none (rpc-methods.md §3.3).
    public func renewLocks(
        namespace name: Identifier, owner: Identifier, timeout: Int64?, paths: [CBORValue]
    ) throws
        -> LockOutcome
    {
        let namespace = try lockNamespace(name, create: false)
        let (outcome, held) = try checkHeld(
            namespace: namespace, owner: owner, keys: paths.map { LockPath.key(for: $0.listElements ?? []) })
        guard outcome == .ok else { return outcome }
        let deadline = now &+ Self.lockDuration(timeout)
        for var lock in held {
            lock.deadline = deadline
            try session.saveLock(lock)
        }
        return .ok
    }

    /// Releases every lock or none (rpc-methods.md §3.5).
    public func unlock(namespace name: Identifier, owner: Identifier, paths: [CBORValue]) throws -> LockOutcome {
        let namespace = try lockNamespace(name, create: false)
        let (outcome, held) = try checkHeld(
            namespace: namespace, owner: owner, keys: paths.map { LockPath.key(for: $0.listElements ?? []) })
        guard outcome == .ok, let namespace else { return outcome }
        for lock in held { try session.deleteLock(namespace: namespace.id, pathKey: lock.pathKey) }
        return .ok
    }

    /// The owner of the lock on exactly each path, or nil (rpc-methods.md §3.4).
    public func readLocks(namespace name: Identifier, paths: [CBORValue]) throws -> [Identifier?] {
        guard let namespace = try lockNamespace(name, create: false) else { return paths.map { _ in nil } }
        return try paths.map { path in
            try session.lock(namespace: namespace.id, pathKey: LockPath.key(for: path.listElements ?? []))?.owner
        }
    }

    /// Releases every lock whose first label equals `prefix`; returns how many (rpc-methods.md §3.6).
    public func deleteLockNamespace(namespace name: Identifier, prefix: CBORValue) throws -> Int {
        guard let namespace = try lockNamespace(name, create: false) else { return 0 }
        let locks = try session.locks(namespace: namespace.id, pathKeyPrefix: LockPath.key(forFirstLabel: prefix))
        for lock in locks { try session.deleteLock(namespace: namespace.id, pathKey: lock.pathKey) }
        return locks.count
    }

    /// Held locks in path order, optionally only those under one first label (rpc-methods.md §3.7).
    public func listLocks(namespace name: Identifier, prefix: CBORValue?) throws -> [LockRecord] {
        guard let namespace = try lockNamespace(name, create: false) else { return [] }
        return try session.locks(namespace: namespace.id, pathKeyPrefix: prefix.map { LockPath.key(forFirstLabel: $0) })
    }
}
