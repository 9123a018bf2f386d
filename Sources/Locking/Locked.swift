#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value behind a pthread mutex: the lock of every module of this package.
///
/// Why not the standard library's `Mutex`: ThreadSanitizer cannot see its futex-based lock on Linux (Swift 6.3
/// implements it in the uninstrumented Synchronization library), so it reports every access the lock guards as
/// a race, and the sanitizer runs (scripts/sanitize) could check none of that code. A pthread mutex is
/// intercepted by every sanitizer runtime. It is the adaptive kind on glibc (`PTHREAD_MUTEX_ADAPTIVE_NP`):
/// critical sections here are a few microseconds long and contended by every event-loop thread, so spinning
/// briefly beats sleeping in the kernel (the standard library's lock, a priority-inheritance futex, always
/// enters the kernel when contended).
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched between pthread_mutex_lock and pthread_mutex_unlock, and the
    // mutex lives at a fixed heap address for the object's lifetime.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
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

    /// Runs `body` with exclusive access to the value.
    @inlinable
    public func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        lock()
        defer { unlock() }
        return try body(&unsafeValue)
    }

    @usableFromInline
    func lock() { pthread_mutex_lock(mutex) }

    @usableFromInline
    func unlock() { pthread_mutex_unlock(mutex) }

    /// The value, for ``withLock(_:)`` only (inlinable code cannot reach a private property).
    @usableFromInline
    var unsafeValue: Value {
        _read { yield value }
        _modify { yield &value }
    }
}

extension Locked where Value == Void {
    /// A plain lock: `Locked(())` guarding state held elsewhere.
    @inlinable
    public func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        lock()
        defer { unlock() }
        return try body()
    }
}
