#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The signature of a libFuzzer target, `LLVMFuzzerTestOneInput`.
public typealias FuzzTarget = @convention(c) (UnsafeRawPointer?, Int) -> CInt

/// The entry point of a fuzz executable: hands the command line and `target` to libFuzzer's driver.
///
/// A fuzz target is an ordinary executable with its own `main` (SwiftPM renames an executable's entry point, so
/// libFuzzer's `main` cannot stand in for it). The AddressSanitizer build (Package.swift, COORDINATE_SANITIZE)
/// links libFuzzer into it and exports `LLVMFuzzerRunDriver`; any other build has no libFuzzer, and the
/// executable says so instead of pretending to fuzz.
public func runFuzzer(_ target: FuzzTarget) -> Never {
    typealias Driver =
        @convention(c) (
            UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
            FuzzTarget
        ) -> CInt
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "LLVMFuzzerRunDriver") else {
        let message = "this fuzz target was built without libFuzzer: run it through scripts/fuzz\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
    let driver = unsafeBitCast(symbol, to: Driver.self)
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(driver(&argc, &argv, target))
}
