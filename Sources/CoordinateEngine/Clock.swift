import Foundation
import Synchronization

/// The engine's source of time (semantics.md §12). Production uses the wall clock; tests inject
/// ``ManualClock``; the PostgreSQL backend supplies the database's clock.
public protocol EngineClock: Sendable {
    /// The current instant in microseconds since the Unix epoch.
    func now() -> Timestamp
}

/// The system wall clock, optionally shifted (for tests of clock disagreement between daemons).
public struct SystemClock: EngineClock {
    public let offset: Int64

    public init(offsetMicroseconds: Int64 = 0) { offset = offsetMicroseconds }

    public func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000 + offset
    }
}

/// A clock that only moves when told to.
public final class ManualClock: EngineClock {
    private let current: Atomic<Int64>

    public init(_ start: Timestamp = 1_700_000_000_000_000) { current = Atomic(start) }

    public func now() -> Timestamp { current.load(ordering: .relaxed) }

    public func set(_ instant: Timestamp) { current.store(instant, ordering: .relaxed) }

    /// Moves the clock forward by `seconds`.
    public func advance(seconds: Double) { current.add(Int64(seconds * 1e6), ordering: .relaxed) }

    public func advance(microseconds: Int64) { current.add(microseconds, ordering: .relaxed) }
}
