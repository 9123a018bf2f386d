import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The tests' process launcher: many concurrent launches, clean children, parent-death signal.
@Suite("Child processes of the tests")
struct ChildProcessTests {
    @Test("300 programs launched at once from concurrent tasks: each gets its own output and status")
    func manyConcurrentLaunches() async throws {
        let results = try await concurrently(300) { index in
            try await runProgram(
                "/bin/sh", ["-c", "echo out-$0; echo err-$0 >&2; exit $(($0 % 7))", String(index)],
                stdin: nil)
        }
        for (index, result) in results.enumerated() {
            #expect(result.status == Int32(index % 7))
            #expect(result.stdout == "out-\(index)\n")
            #expect(result.stderr == "err-\(index)\n")
        }
    }

    @Test("launches interleaved with daemons starting and stopping do not disturb each other")
    func launchesBesideDaemons() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let specs = try await withDaemon { daemon in
                        try await daemon.connect().result("list_work_specs", [.map(.init())])
                    }
                    #expect(specs == .tuple([[], .null]))
                }
            }
            for index in 0..<100 {
                group.addTask {
                    let result = try await runProgram("/bin/echo", ["\(index)"])
                    #expect(result.stdout == "\(index)\n")
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("stdin is delivered and closed; a missing program is an error, not a crash")
    func stdinAndMissingProgram() async throws {
        let echoed = try await runProgram("/bin/cat", [], stdin: String(repeating: "x", count: 300_000))
        #expect(echoed.stdout.count == 300_000)
        await #expect(throws: ChildProcess.SpawnError.self) {
            _ = try await ChildProcess.spawn("/nonexistent/program", [])
        }
    }

    @Test("a child holds only its standard descriptors, carries SIGKILL as parent-death signal, starts unmasked")
    func cleanChild() async throws {
        // Held open (not close-on-exec) in the test process while the child starts: it must not leak into it.
        let held = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(held > 2)
        defer { close(held) }
        let script = """
            import ctypes, os
            libc = ctypes.CDLL(None)
            signal = ctypes.c_int()
            libc.prctl(2, ctypes.byref(signal))  # PR_GET_PDEATHSIG
            fds = sorted(int(n) for n in os.listdir('/proc/self/fd'))
            print(signal.value)
            print(' '.join(os.readlink('/proc/self/fd/%d' % n) for n in fds if n > 2 and os.path.exists('/proc/self/fd/%d' % n)))
            print(open('/proc/self/status').read().split('SigBlk:')[1].split()[0])
            """
        let result = try await runProgram("/usr/bin/env", ["python3", "-c", script])
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(lines.first == "\(SIGKILL)")
        // Only the directory listing's own descriptor, if any: no pipe or socket of the test process.
        #expect(lines.count > 1 && !lines[1].contains("pipe:") && !lines[1].contains("socket:"), "\(lines)")
        #expect(lines.count > 2 && lines[2] == "0000000000000000", "\(lines)")
    }
}
