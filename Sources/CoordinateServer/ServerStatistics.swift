import Synchronization

/// A monotonically updated integer shared between event loops.
public final class AtomicCounter: Sendable {
    private let storage = Atomic<Int>(0)

    public init() {}

    public func add(_ amount: Int) { storage.add(amount, ordering: .relaxed) }
    public var value: Int { storage.load(ordering: .relaxed) }

    /// Adds one unless that would exceed `limit`; returns whether it did.
    public func incrementIfBelow(_ limit: Int) -> Bool {
        var current = storage.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = storage.compareExchange(
                expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }
}

/// Connection-level counters of the CBOR-RPC listener (exported as metrics, rest-api.md §6).
public final class ServerStatistics: Sendable {
    public let openConnections = AtomicCounter()
    public let acceptedConnections = AtomicCounter()
    public let rejectedForLimit = AtomicCounter()
    public let rejectedNotAllowed = AtomicCounter()
    public let malformedMessages = AtomicCounter()

    public init() {}
}
