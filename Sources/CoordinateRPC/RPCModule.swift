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
///
/// A class, not a struct: every request carries its method along (``RPCCall``), and one reference is cheaper to
/// pass and keep than a name, a parameter list and a closure each retained on their own.
public final class RPCMethod: Sendable {
    public typealias Handler = @Sendable (RPCCall) throws(RPCError) -> RPCReply

    public let name: String
    public let parameters: [String]
    public let requiredCount: Int
    public let handler: Handler
    /// The module the method belongs to; set when the method is registered in an ``RPCMethodTable``.
    public let moduleName: String
    /// The method's position in its ``RPCMethodTable`` (0 up to the table's count), for per-method state kept in an
    /// array; set when the method is registered.
    public let ordinal: Int
    /// The name's UTF-8 octets, as requests carry it.
    let nameOctets: [UInt8]

    /// - Parameters:
    ///   - name: The method name (ASCII).
    ///   - parameters: Parameter names in positional order.
    ///   - required: How many leading parameters are required; the rest are optional. Defaults to all.
    public convenience init(
        _ name: String, parameters: [String] = [], required: Int? = nil, handler: @escaping Handler
    ) {
        self.init(
            name: name, parameters: parameters, requiredCount: required ?? parameters.count, handler: handler,
            moduleName: "", ordinal: 0)
    }

    private init(
        name: String, parameters: [String], requiredCount: Int, handler: @escaping Handler, moduleName: String,
        ordinal: Int
    ) {
        self.name = name
        self.parameters = parameters
        self.requiredCount = requiredCount
        self.handler = handler
        self.moduleName = moduleName
        self.ordinal = ordinal
        nameOctets = Array(name.utf8)
    }

    /// This method as registered by module `moduleName` at position `ordinal` of a table.
    func registered(by moduleName: String, ordinal: Int) -> RPCMethod {
        RPCMethod(
            name: name, parameters: parameters, requiredCount: requiredCount, handler: handler, moduleName: moduleName,
            ordinal: ordinal)
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

    private let index: MethodIndex
    public let moduleNames: [String]

    /// Merges the modules' methods; a method name defined twice is an error (spec README, components).
    public init(modules: [any RPCModule]) throws(BuildError) {
        var byName: [String: (module: String, method: RPCMethod)] = [:]
        for module in modules {
            for method in module.methods {
                if let existing = byName[method.name] {
                    throw .duplicateMethod(name: method.name, modules: [existing.module, module.name])
                }
                byName[method.name] = (module.name, method)
            }
        }
        moduleNames = modules.map(\.name)
        let sorted = byName.values.sorted { $0.method.nameOctets.lexicographicallyPrecedes($1.method.nameOctets) }
        index = MethodIndex(sorted.enumerated().map { $1.method.registered(by: $1.module, ordinal: $0) })
    }

    /// A table of the same methods whose objects are its own, for the connections of one thread. Every request
    /// retains and releases its method; when two cores do that to one object, each atomic update waits for the
    /// other core's cache line (in a profile of deeply pipelined traffic, that contention made `swift_retain`
    /// the most expensive function of the daemon). Replicas keep each core's counting in its own cache.
    public func replica() -> RPCMethodTable {
        RPCMethodTable(
            moduleNames: moduleNames,
            index: MethodIndex(index.methods.map { $0.registered(by: $0.moduleName, ordinal: $0.ordinal) }))
    }

    private init(moduleNames: [String], index: MethodIndex) {
        self.moduleNames = moduleNames
        self.index = index
    }

    /// Looks a method up by the raw octets of its name.
    public func method(named octets: [UInt8]) -> RPCMethod? {
        octets.withUnsafeBytes { method(named: $0) }
    }

    /// Looks a method up by the raw octets of its name: a binary search over the octets the request arrived in,
    /// without copying them.
    public func method(named octets: UnsafeRawBufferPointer) -> RPCMethod? {
        var low = 0
        var high = index.methods.count
        while low < high {
            let middle = (low + high) / 2
            let order = Self.compare(index.name(at: middle), octets)
            if order == 0 { return index.methods[middle] }
            if order < 0 { low = middle + 1 } else { high = middle }
        }
        return nil
    }

    /// Lexicographic order of two octet strings: negative, zero or positive.
    private static func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        for index in 0..<min(a.count, b.count) where a[index] != b[index] {
            return Int(a[index]) - Int(b[index])
        }
        return a.count - b.count
    }

    /// Every method name, sorted.
    public var methodNames: [String] { index.methods.map(\.name).sorted() }

    /// Every method, in the order of their ordinals.
    public var methods: [RPCMethod] { index.methods }
}

/// The methods sorted by name, and their names back to back in memory of their own: a lookup reads names
/// without retaining a method or an array at every step, and copying the table retains one object.
private final class MethodIndex: @unchecked Sendable {
    // @unchecked Sendable: every property is set in init and never written again; `names` and `nameEnds` point to
    // memory only this object owns (freed in deinit), so sharing it between threads only ever reads.
    let methods: [RPCMethod]
    private let names: UnsafeMutableRawBufferPointer
    /// `nameEnds[i]` is the offset just past the i-th name in `names`.
    private let nameEnds: UnsafeMutableBufferPointer<Int>

    init(_ sorted: [RPCMethod]) {
        methods = sorted
        names = .allocate(byteCount: sorted.reduce(0) { $0 + $1.nameOctets.count }, alignment: 1)
        nameEnds = .allocate(capacity: sorted.count)
        var end = 0
        for (position, method) in sorted.enumerated() {
            method.nameOctets.withUnsafeBytes { octets in
                UnsafeMutableRawBufferPointer(rebasing: names[end..<end + octets.count]).copyMemory(from: octets)
            }
            end += method.nameOctets.count
            nameEnds[position] = end
        }
    }

    deinit {
        names.deallocate()
        nameEnds.deallocate()
    }

    func name(at position: Int) -> UnsafeRawBufferPointer {
        let start = position == 0 ? 0 : nameEnds[position - 1]
        return UnsafeRawBufferPointer(rebasing: names[start..<nameEnds[position]])
    }
}
