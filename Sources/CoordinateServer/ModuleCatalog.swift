import CBOR
import CoordinateConfig
import CoordinateEngine
import CoordinateJobQueue
import CoordinateRPC
import Logging

/// What RPC module factories get to build a module.
public struct ModuleContext: Sendable {
    public let engine: Engine
    /// The CBOR-RPC namespace (`coordinate.namespace`).
    public let namespace: Identifier
    /// `get_config`'s map.
    public let configuration: CBORValue
    public let logger: Logger
}

/// The RPC modules compiled into this build, and how to build the enabled ones (storage backends: ``StorageRegistry``).
public struct ModuleCatalog: Sendable {
    public typealias Factory = @Sendable (ModuleContext) -> any RPCModule

    /// Module factories by configuration name.
    public var factories: [String: Factory]

    public init(factories: [String: Factory]) {
        self.factories = factories
    }

    /// What this build offers.
    public static var builtIn: ModuleCatalog {
        ModuleCatalog(
            factories: [
                "JobQueue": { context in
                    JobQueueModule(
                        engine: context.engine, namespace: context.namespace, configuration: context.configuration)
                },
                "LockService": { context in LockServiceModule(engine: context.engine, namespace: context.namespace) },
            ])
    }

    /// Builds the modules enabled by `coordinate.server.modules`, in the configured order.
    public func modules(
        for configuration: CoordinateConfiguration, context: ModuleContext
    ) throws(DaemonStartError)
        -> [any RPCModule]
    {
        var modules: [any RPCModule] = []
        for name in configuration.server.modules {
            guard let factory = factories[name] else {
                throw .other("module \(name) is not available in this build")
            }
            modules.append(factory(context))
        }
        return modules
    }
}

extension ConfigTree {
    /// The tree as `get_config` returns it: byte-string keys and strings, numbers keeping their kind.
    public var cborValue: CBORValue {
        switch self {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .int(let value): return .int(value)
        case .double(let value): return .float(value)
        case .string(let text): return .bytes(text)
        case .list(let items): return .array(items.map(\.cborValue))
        case .map(let pairs): return .map(CBORMap(pairs.map { CBORPair(key: .bytes($0.0), value: $0.1.cborValue) }))
        }
    }
}
