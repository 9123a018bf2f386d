// libFuzzer's driver over this target (FuzzSupport.runFuzzer).
import FuzzSupport

runFuzzer { fuzzRPC($0, $1) }
