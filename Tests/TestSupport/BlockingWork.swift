import NIOPosix

/// Runs blocking work — a synchronous storage call that opens files and syncs them, say — on NIO's blocking-I/O
/// pool and suspends until it is done, so that the cooperative pool's two threads stay free for the other tests.
public func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await NIOThreadPool.singleton.runIfActive(body)
}
