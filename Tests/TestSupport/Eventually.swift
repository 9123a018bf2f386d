import Foundation

/// Polls `condition` every 20 ms (suspending, never blocking a thread) until it holds or `timeout` passes;
/// returns true as soon as it holds, else its last answer. Deadlines are generous: they bound a failing test,
/// they are not what a passing test waits for.
public func eventually(
    _ timeout: Duration = .seconds(30), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// ``eventually(_:_:)-(Duration,_)`` with the timeout in seconds.
public func eventually(_ seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
    try await eventually(.milliseconds(Int64(seconds * 1000)), condition)
}

/// `body`'s answer once it succeeds, retrying every 100 ms for up to `timeout`: for the moments after a
/// disruption, when a daemon may still be starting or reconnecting to its database with backoff.
public func retrying<T>(for timeout: Duration = .seconds(60), _ body: () async throws -> T) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        do {
            return try await body()
        } catch  where ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Runs `body(index)` for `count` indices concurrently and returns the results in index order; the first error
/// cancels the other tasks and is rethrown once they have ended.
public func concurrently<T: Sendable>(
    _ count: Int, _ body: @escaping @Sendable (Int) async throws -> T
) async throws -> [T] {
    try await withThrowingTaskGroup(of: (Int, T).self) { group in
        for index in 0..<count { group.addTask { (index, try await body(index)) } }
        var results = [T?](repeating: nil, count: count)
        for try await (index, value) in group { results[index] = value }
        return results.map { $0! }
    }
}

/// Runs `body`, then `cleanup` whether `body` returned or threw (`defer` cannot await).
public func withCleanup<R>(_ body: () async throws -> R, cleanup: () async -> Void) async throws -> R {
    do {
        let result = try await body()
        await cleanup()
        return result
    } catch {
        await cleanup()
        throw error
    }
}
