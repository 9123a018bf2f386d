#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How many CBOR-RPC connections the process's descriptor limit leaves room for.
///
/// Every connection costs a descriptor, and so do the HTTP connections, storage (SQLite's files, PostgreSQL's
/// pool), the event loops and the listeners. With the common `ulimit -n 1024` and the default
/// `max_connections` 4096, idle CBOR-RPC connections used to exhaust the descriptors: then nothing could be
/// accepted — `/healthz` included — and the accept loop spun on EMFILE. So the daemon raises its soft limit to
/// the hard one at start-up and, if that is still short, accepts fewer CBOR-RPC connections than configured
/// (saying so once), keeping room for the rest.
public struct DescriptorBudget: Sendable, Equatable {
    /// The soft limit after raising it.
    public let limit: Int
    /// What the other users of descriptors are given: HTTP connections, storage, event loops, listeners, files.
    public let reserved: Int
    /// The CBOR-RPC connection limit to enforce: `max_connections`, or less when the descriptors cannot hold it.
    public let maxConnections: Int
    /// Why the limit is lower than configured, for one warning at start-up; nil when it is not.
    public let warning: String?

    /// The fewest CBOR-RPC connections accepted, however low the descriptor limit.
    static let floor = 16

    public init(limit: Int, maxConnections: Int, httpConnections: Int, storageDescriptors: Int, eventLoops: Int) {
        self.limit = limit
        // Listeners, stdio, the SQLite lock file, logs, accept headroom, and an epoll, eventfd and timerfd per
        // event loop.
        reserved = httpConnections + storageDescriptors + 64 + 3 * eventLoops
        let room = max(Self.floor, limit - reserved)
        self.maxConnections = min(maxConnections, room)
        warning =
            self.maxConnections < maxConnections
            ? "descriptor limit \(limit) (ulimit -n) is below what max_connections \(maxConnections) needs "
                + "(\(maxConnections + reserved) with HTTP, storage and a reserve): accepting at most "
                + "\(self.maxConnections) CBOR-RPC connections; raise the limit or lower max_connections"
            : nil
    }

    /// Raises the soft descriptor limit to the hard one (as far as the kernel allows) and returns the soft limit.
    public static func raiseLimit() -> Int {
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return 1024 }
        if limits.rlim_cur < limits.rlim_max {
            var raised = limits
            raised.rlim_cur = limits.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
                limits = raised
            } else {
                // RLIM_INFINITY or beyond fs.nr_open: settle for what the kernel takes.
                raised.rlim_cur = rlim_t(1 << 20)
                if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limits = raised }
            }
        }
        return limits.rlim_cur > rlim_t(Int32.max) ? Int(Int32.max) : Int(limits.rlim_cur)
    }
}
