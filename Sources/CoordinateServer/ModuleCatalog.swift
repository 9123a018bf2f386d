import CoordinateConfig
import CoordinateRPC
import Logging

/// The RPC modules and storage backends compiled into this build, and how to build the enabled ones.
public struct ModuleCatalog: Sendable {
    public typealias Factory = @Sendable (Logger) -> any RPCModule

    /// Storage backends this build can run on.
    public var availableStorage: Set<StorageKind>
    /// Module factories by configuration name.
    public var factories: [String: Factory]

    public init(availableStorage: Set<StorageKind>, factories: [String: Factory]) {
        self.availableStorage = availableStorage
        self.factories = factories
    }

    /// What this build offers.
    public static var builtIn: ModuleCatalog {
        ModuleCatalog(availableStorage: [.memory], factories: [:])
    }

    /// Builds the modules enabled by `coordinate.server.modules`, in the configured order.
    public func modules(
        for configuration: CoordinateConfiguration, logger: Logger
    ) throws(DaemonStartError)
        -> [any RPCModule]
    {
        var modules: [any RPCModule] = []
        for name in configuration.server.modules {
            guard let factory = factories[name] else {
                throw .other("module \(name) is not available in this build")
            }
            modules.append(factory(logger))
        }
        return modules
    }
}
