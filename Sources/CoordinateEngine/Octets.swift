#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Raw-octet ordering (wire-protocol.md §5.3.4) with `memcmp`: unsigned, lexicographic, a proper prefix first.
/// The generic `lexicographicallyPrecedes` compares element by element through protocol witnesses; unit keys
/// are compared on every index operation, so this matters.
@inlinable
func octetsPrecede(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    let common = min(lhs.count, rhs.count)
    let order = lhs.withUnsafeBufferPointer { l in
        rhs.withUnsafeBufferPointer { r in common == 0 ? 0 : memcmp(l.baseAddress!, r.baseAddress!, common) }
    }
    return order != 0 ? order < 0 : lhs.count < rhs.count
}

/// A pthread mutex with adaptive spinning (`PTHREAD_MUTEX_ADAPTIVE_NP`): engine critical sections are a few
/// microseconds long and contended by every event-loop thread, so spinning briefly beats sleeping in the
/// kernel (the standard library's `Mutex` uses a priority-inheritance futex whose contended path always enters
/// the kernel).
final class AdaptiveMutex: @unchecked Sendable {
    // @unchecked Sendable: the pthread mutex is the synchronization primitive itself; it is heap-allocated so
    // its address never changes.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        #if canImport(Glibc)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        #endif
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
