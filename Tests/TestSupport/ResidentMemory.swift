import Foundation

/// A process's resident memory, read from /proc, for the tests that bound what a client can make the daemon hold.
public enum ResidentMemory {
    /// The process's resident memory now, in bytes.
    public static func bytes(of pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// The highest resident memory seen over `duration`, sampled every 50 ms.
    public static func peak(of pid: Int32, over duration: Duration) async -> Int {
        var peak = bytes(of: pid)
        let end = ContinuousClock.now + duration
        while ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(50))
            peak = max(peak, bytes(of: pid))
        }
        return peak
    }
}
