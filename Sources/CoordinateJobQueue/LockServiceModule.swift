import CBOR
import CoordinateEngine
import CoordinateRPC

/// The LockService RPC module (rpc-methods.md §3): hierarchical locks in the CBOR-RPC namespace.
public struct LockServiceModule: RPCModule {
    public let name = "LockService"
    let bridge: EngineBridge
    let namespace: Identifier

    public init(engine: Engine, namespace: Identifier) {
        self.bridge = EngineBridge(engine: engine)
        self.namespace = namespace
    }

    public var methods: [RPCMethod] {
        [
            RPCMethod("lock", parameters: ["locker_id", "timeout", "keys"], handler: lock),
            RPCMethod("locksome", parameters: ["locker_id", "timeout", "keys"], handler: lockSome),
            RPCMethod("renew", parameters: ["locker_id", "timeout", "keys"], handler: renew),
            RPCMethod("readlock", parameters: ["keys"], handler: readLock),
            RPCMethod("unlock", parameters: ["locker_id", "keys"], handler: unlock),
            RPCMethod("delete_namespace", parameters: ["prefix"], handler: deleteNamespace),
            RPCMethod("list_locks", parameters: ["prefix"], required: 0, handler: listLocks),
        ]
    }

    /// The `keys` parameter: a list of non-empty lists.
    static func paths(_ call: RPCCall, _ index: Int) throws(RPCError) -> [CBORValue] {
        let type = "list of non-empty lists"
        guard let value = call[index], let paths = value.listElements else { throw call.fail(index, type) }
        for path in paths {
            guard let labels = path.listElements, !labels.isEmpty else { throw call.fail(index, type) }
        }
        return paths
    }

    /// `timeout`: int-like or null.
    static func timeout(_ call: RPCCall, _ index: Int) throws(RPCError) -> Int64? {
        try call.optionalInt(index, type: "integer or null")
    }

    static func render(_ outcome: LockOutcome, paths: [CBORValue]) -> CBORValue {
        switch outcome {
        case .ok:
            return tuple(true, .null)
        case .notLockable(let index):
            return tuple(false, .bytes(PythonRepr.render(paths[index]) + Array(" is not lockable".utf8)))
        case .notHeld(let index):
            return tuple(false, .bytes(PythonRepr.render(paths[index]) + Array(" is not held".utf8)))
        case .heldBy(let index, let owner):
            return tuple(
                false,
                .bytes(PythonRepr.render(paths[index]) + Array(" is held by ".utf8) + PythonRepr.quote(owner.octets)))
        }
    }

    func lock(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let owner = try call.identifier(0)
        let timeout = try Self.timeout(call, 1)
        let paths = try Self.paths(call, 2)
        let namespace = self.namespace
        return try bridge.run(
            call, .write, { tx in try tx.lock(namespace: namespace, owner: owner, timeout: timeout, paths: paths) }
        ) { outcome in Self.render(outcome, paths: paths) }
    }

    func lockSome(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let owner = try call.identifier(0)
        let timeout = try Self.timeout(call, 1)
        let paths = try Self.paths(call, 2)
        let namespace = self.namespace
        return try bridge.run(
            call, .write, { tx in try tx.lockSome(namespace: namespace, owner: owner, timeout: timeout, paths: paths) }
        ) { locked in
            tuple(.array(zip(paths, locked).map { $1 ? $0 : .null }), .null)
        }
    }

    func renew(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let owner = try call.identifier(0)
        let timeout = try Self.timeout(call, 1)
        let paths = try Self.paths(call, 2)
        let namespace = self.namespace
        return try bridge.run(
            call, .write,
            { tx in try tx.renewLocks(namespace: namespace, owner: owner, timeout: timeout, paths: paths) }
        ) { outcome in
            // A path that holds no lock renders as "held by None" for renew (rpc-methods.md §3.3).
            if case .notHeld(let index) = outcome {
                return tuple(false, .bytes(PythonRepr.render(paths[index]) + Array(" is held by None".utf8)))
            }
            return Self.render(outcome, paths: paths)
        }
    }

    func readLock(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let paths = try Self.paths(call, 0)
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.readLocks(namespace: namespace, paths: paths) }) { owners in
            .array(owners.map { $0?.value ?? .null })
        }
    }

    func unlock(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let owner = try call.identifier(0)
        let paths = try Self.paths(call, 1)
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.unlock(namespace: namespace, owner: owner, paths: paths) }) {
            outcome in Self.render(outcome, paths: paths)
        }
    }

    func deleteNamespace(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let prefix = call[0] ?? .null
        let namespace = self.namespace
        return try bridge.run(call, .write, { tx in try tx.deleteLockNamespace(namespace: namespace, prefix: prefix) })
        {
            count in .int(count)
        }
    }

    func listLocks(_ call: RPCCall) throws(RPCError) -> RPCReply {
        let prefix: CBORValue? = call[0].flatMap { $0.isNull ? CBORValue?.none : $0 }
        let namespace = self.namespace
        return try bridge.run(call, .read, { tx in try tx.listLocks(namespace: namespace, prefix: prefix) }) { locks in
            .array(locks.map { .tuple([.encoded($0.path), $0.owner.value, .float(Time.seconds($0.deadline))]) })
        }
    }
}
