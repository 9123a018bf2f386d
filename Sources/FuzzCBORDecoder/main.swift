// libFuzzer's driver over this target (FuzzSupport.runFuzzer).
import FuzzSupport

runFuzzer { fuzzCBORDecoder($0, $1) }
