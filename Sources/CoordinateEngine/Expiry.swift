/// What the passing of time does to stored state: the one definition (semantics.md §4.2, §6.4; locks §10).
///
/// When a lease, a delay or a lock is due is ``leaseIsDue(deadline:at:)``, ``delayIsDue(notBefore:at:)`` and
/// ``lockHasLapsed(deadline:at:)`` (``UnitRecord/bucket(at:)`` observes units through them); what a lapsed lease
/// writes is ``expire(_:attempt:)``. The engine applies it to a
/// unit it writes with a lease already past (``EngineTransaction/store(_:)``), the memory backend in its
/// sweep. The SQL backends' sweeps (SQLite's `materialize`, PostgreSQL's `sweepSQL`) say the same in SQL for
/// speed, naming the codes below; the conformance case "time-based transitions follow the engine's
/// definition" checks on every backend that a sweep finds due exactly what these functions call due and writes
/// exactly what ``expire(_:attempt:)`` writes.
public enum Expiry {
    /// The status an attempt ends with when its lease runs out.
    public static let attemptStatus = AttemptStatus.expired
    /// The state of its unit afterwards: available to the next worker at once.
    public static let unitState = UnitState.available

    /// Whether a lease with this deadline has run out at `now`: it holds through its deadline.
    @inlinable
    public static func leaseIsDue(deadline: Timestamp, at now: Timestamp) -> Bool { deadline < now }

    /// Whether a unit delayed until `notBefore` is ready at `now`: from that instant on.
    @inlinable
    public static func delayIsDue(notBefore: Timestamp, at now: Timestamp) -> Bool { notBefore <= now }

    /// Whether `unit` is PENDING under a lease that ran out before `now`.
    @inlinable
    public static func leaseHasLapsed(_ unit: UnitRecord, at now: Timestamp) -> Bool {
        unit.state == .pending && unit.bucket(at: now) != .pending
    }

    /// A lapsed lease (semantics.md §6.4): the unit's attempt, if still pending, ends ``attemptStatus`` at the
    /// deadline — never before it started — and the unit becomes ``unitState`` without a deadline.
    /// Answers whether it ended the attempt (which the caller then stores).
    @discardableResult
    public static func expire(_ unit: inout UnitRecord, attempt: inout AttemptRecord?) -> Bool {
        guard let deadline = unit.leaseDeadline else { return false }
        var ended = false
        if var pending = attempt, pending.status == .pending {
            pending.status = attemptStatus
            pending.endTime = max(pending.startTime, deadline)
            attempt = pending
            ended = true
        }
        unit.state = unitState
        unit.leaseDeadline = nil
        return ended
    }

    /// Whether a lock held until `deadline` is gone at `now`: it holds through its deadline.
    @inlinable
    public static func lockHasLapsed(deadline: Timestamp, at now: Timestamp) -> Bool { deadline < now }
}
