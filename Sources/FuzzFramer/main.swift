// libFuzzer's driver over this target (FuzzSupport.runFuzzer).
import FuzzSupport

runFuzzer { fuzzFramer($0, $1) }
