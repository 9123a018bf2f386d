import CBOR
import NIOCore

/// An error answered to the client as an error response (wire-protocol.md §7.3). The message is sent as a
/// byte string exactly as given.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: [UInt8]

    public init(_ message: [UInt8]) { self.message = message }
    public init(_ message: String) { self.message = Array(message.utf8) }

    public var description: String { String(decoding: message, as: UTF8.self) }

    /// `bad parameter P for NAME: expected TYPE` (wire-protocol.md §9).
    public static func badParameter(_ parameter: String, method: String, expected type: String) -> RPCError {
        RPCError("bad parameter \(parameter) for \(method): expected \(type)")
    }

    /// `storage unavailable: DETAIL`.
    public static func storageUnavailable(_ detail: String) -> RPCError {
        RPCError("storage unavailable: \(detail)")
    }

    /// `internal error: DETAIL`.
    public static func internalError(_ detail: String) -> RPCError { RPCError("internal error: \(detail)") }
}

/// What a method handler produces.
public enum RPCReply: Sendable {
    /// The result is known now.
    case value(CBORValue)
    /// The result arrives later (for example after a durable commit). The future fails with an ``RPCError`` to
    /// produce an error response; any other error becomes `internal error: …`.
    case future(EventLoopFuture<CBORValue>)
}

/// The arguments of one call, bound to the method's parameter list (absent optional parameters are nil).
public struct RPCCall: Sendable {
    /// The method being called.
    public let method: RPCMethod
    /// One slot per declared parameter, in declaration order.
    public let arguments: [CBORValue?]
    /// The event loop of the connection the request arrived on; deferred results complete on it.
    public let eventLoop: any EventLoop

    public init(method: RPCMethod, arguments: [CBORValue?], eventLoop: any EventLoop) {
        self.method = method
        self.arguments = arguments
        self.eventLoop = eventLoop
    }

    /// The argument bound to parameter `index`, or nil if it was omitted.
    @inlinable
    public subscript(index: Int) -> CBORValue? { arguments[index] }

    /// The method's name, for error messages.
    public var methodName: String { method.name }
}

/// One method of an RPC module: its name, the names of its parameters (for keyword binding and error messages),
/// how many of them are required, and its handler.
public struct RPCMethod: Sendable {
    public typealias Handler = @Sendable (RPCCall) throws(RPCError) -> RPCReply

    public let name: String
    public let parameters: [String]
    public let requiredCount: Int
    public let handler: Handler
    /// Filled in when the method is registered in an ``RPCMethodTable``.
    public internal(set) var moduleName: String = ""

    /// - Parameters:
    ///   - name: The method name (ASCII).
    ///   - parameters: Parameter names in positional order.
    ///   - required: How many leading parameters are required; the rest are optional. Defaults to all.
    public init(_ name: String, parameters: [String] = [], required: Int? = nil, handler: @escaping Handler) {
        self.name = name
        self.parameters = parameters
        self.requiredCount = required ?? parameters.count
        self.handler = handler
    }
}

/// A named group of methods that can be enabled or disabled as a whole (`coordinate.server.modules`).
public protocol RPCModule: Sendable {
    /// The module's configuration name, for example `JobQueue`.
    var name: String { get }
    /// The methods the module serves.
    var methods: [RPCMethod] { get }
}

/// The merged method table of the enabled modules.
public struct RPCMethodTable: Sendable {
    public enum BuildError: Error, Equatable, CustomStringConvertible {
        case duplicateMethod(name: String, modules: [String])

        public var description: String {
            switch self {
            case .duplicateMethod(let name, let modules):
                return "method \(name) is defined by more than one module (\(modules.joined(separator: ", ")))"
            }
        }
    }

    private var methods: [[UInt8]: RPCMethod] = [:]
    public private(set) var moduleNames: [String] = []

    /// Merges the modules' methods; a method name defined twice is an error (spec README, components).
    public init(modules: [any RPCModule]) throws(BuildError) {
        for module in modules {
            moduleNames.append(module.name)
            for var method in module.methods {
                let key = Array(method.name.utf8)
                if let existing = methods[key] {
                    throw .duplicateMethod(name: method.name, modules: [existing.moduleName, module.name])
                }
                method.moduleName = module.name
                methods[key] = method
            }
        }
    }

    /// Looks a method up by the raw octets of its name.
    public func method(named octets: [UInt8]) -> RPCMethod? { methods[octets] }

    /// Every method name, sorted.
    public var methodNames: [String] { methods.values.map(\.name).sorted() }
}
