import CBOR
import Foundation
import TestSupport
import Testing

/// Feeds a byte stream to a framer in chunks, the way a socket would deliver it.
struct StreamHarness {
    var framer: CBORStreamFramer
    var buffer: [UInt8] = []
    var messages: [[UInt8]] = []
    var terminal: CBORStreamFramer.FramingEvent?

    init(maxMessageBytes: Int = 64 << 20, maxDepth: Int = 256) {
        framer = CBORStreamFramer(maxMessageBytes: maxMessageBytes, maxDepth: maxDepth)
    }

    mutating func feed(_ chunk: some Collection<UInt8>) {
        guard terminal == nil else { return }
        buffer.append(contentsOf: chunk)
        while true {
            let event = buffer.withUnsafeBytes { framer.next(in: $0) }
            switch event {
            case .needMoreData:
                return
            case .message(let length):
                messages.append(Array(buffer[..<length]))
                buffer.removeFirst(length)
                framer.reset()
            default:
                terminal = event
                return
            }
        }
    }
}

@Suite("Incremental stream framer")
struct FramerTests {
    @Test("finds boundaries of back-to-back messages delivered in one read")
    func manyInOneRead() {
        let messages: [CBORValue] = [1, .map(CBORMap([("a", [1, 2, 3])])), .tuple([]), "xyz", .null]
        var stream: [UInt8] = []
        for message in messages { stream += CBOREncoder.encodeEnvelope(message) }
        for message in messages { stream += CBOREncoder.encode(message) }
        var harness = StreamHarness()
        harness.feed(stream)
        #expect(harness.terminal == nil)
        #expect(harness.messages.count == messages.count * 2)
        #expect(harness.buffer.isEmpty)
    }

    @Test("a message split at every possible position is still one message")
    func splitEverywhere() {
        let message = CBOREncoder.encode(
            .map(CBORMap([("params", [.tuple(["k", .map(CBORMap([(.int(1), .float(2.5))]))])]), ("id", 7)])))
        let indefinite = Hex.decode("bf4161 9f 5f4161 4162 ff 7f6178ff ff ff".replacingOccurrences(of: " ", with: ""))
        for stream in [message, CBOREncoder.encodeEnvelope(.bytes(message)), indefinite] {
            for split in 0...stream.count {
                var harness = StreamHarness()
                harness.feed(stream[..<split])
                harness.feed(stream[split...])
                #expect(harness.messages == [stream], "split at \(split)")
                #expect(harness.terminal == nil)
            }
            var byteAtATime = StreamHarness()
            for byte in stream { byteAtATime.feed([byte]) }
            #expect(byteAtATime.messages == [stream])
        }
    }

    @Test("a large bare message arriving in 4 KiB reads is scanned incrementally")
    func incrementalLargeBare() {
        // 2 MiB of small array elements: a framer that re-scanned from the start on every read would examine
        // ~2 MiB × 512 reads; this one examines each byte once.
        let count = 1 << 20
        var stream: [UInt8] = [0x9a]
        stream += [UInt8(count >> 24 & 0xff), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)]
        stream += [UInt8](repeating: 0x18, count: count).flatMap { [$0, 0x20] }
        var harness = StreamHarness()
        var index = 0
        while index < stream.count {
            let end = min(index + 4096, stream.count)
            harness.feed(stream[index..<end])
            if end < stream.count {
                #expect(harness.framer.scannedBytes == end || harness.framer.scannedBytes == end - 1)
            }
            index = end
        }
        #expect(harness.messages.count == 1)
        #expect(harness.messages.first?.count == stream.count)
    }

    @Test("the envelope head's declared size is enforced before the body is buffered")
    func tooLargeFromHead() {
        var harness = StreamHarness(maxMessageBytes: 1000)
        // d8 18 5a 00 01 00 00: a 65 536-byte string; only the head has arrived.
        harness.feed(Hex.decode("d8185a00010000"))
        #expect(harness.terminal == .tooLarge)

        var exact = StreamHarness(maxMessageBytes: 1000)
        let fits = CBOREncoder.encodeEnvelope(.bytes([UInt8](repeating: 1, count: 1000 - 8)))
        #expect(fits.count == 1000)
        exact.feed(fits)
        #expect(exact.messages.count == 1)
        var over = StreamHarness(maxMessageBytes: 999)
        over.feed(fits.prefix(5))
        #expect(over.terminal == .tooLarge)
    }

    @Test("a bare message that grows past the limit is too large")
    func tooLargeWhileScanning() {
        var harness = StreamHarness(maxMessageBytes: 100)
        harness.feed([0x9f] + [UInt8](repeating: 0x01, count: 200))
        #expect(harness.terminal == .tooLarge)
        var counted = StreamHarness(maxMessageBytes: 100)
        counted.feed(Hex.decode("9bffffffffffffffff"))
        #expect(counted.terminal == .tooLarge)
    }

    @Test(
        "structural errors of the stream are reported",
        arguments: ["ff", "1c", "5f01", "5f5f", "9f5f4161ffff00ff", "3f", "f810", "df"])
    func malformedStream(hex: String) {
        var harness = StreamHarness()
        harness.feed(Hex.decode(hex))
        if case .malformed = harness.terminal {
        } else {
            Issue.record("\(hex): \(String(describing: harness.terminal))")
        }
    }

    @Test("nesting beyond the limit is reported")
    func tooDeep() {
        var harness = StreamHarness(maxDepth: 10)
        harness.feed(CBOREncoder.encode(RandomCBOR.nested(depth: 11)))
        #expect(harness.terminal == .tooDeep)
        var ok = StreamHarness(maxDepth: 10)
        ok.feed(CBOREncoder.encode(RandomCBOR.nested(depth: 10)))
        #expect(ok.messages.count == 1)
    }

    @Test("random, truncated and corrupted streams end in a §4 outcome without trapping", arguments: 0..<4)
    func randomStreams(seed: UInt64) {
        var generator = RandomCBOR(seed: 991 + seed)
        for round in 0..<2000 {
            var stream: [UInt8]
            switch round % 4 {
            case 0:
                stream = (0..<Int.random(in: 0...64, using: &generator.rng)).map { _ in
                    UInt8.random(in: 0...255, using: &generator.rng)
                }
            case 1:
                stream = CBOREncoder.encodeEnvelope(generator.value(depth: 5))
                stream = Array(stream.prefix(Int.random(in: 0...stream.count, using: &generator.rng)))
            case 2:
                stream = CBOREncoder.encode(generator.value(depth: 5))
                for _ in 0..<3 where !stream.isEmpty {
                    stream[Int.random(in: 0..<stream.count, using: &generator.rng)] = UInt8.random(
                        in: 0...255, using: &generator.rng)
                }
            default:
                stream = CBOREncoder.encodeEnvelope(generator.value(depth: 5))
                for _ in 0..<2 where stream.count > 4 {
                    stream[Int.random(in: 3..<stream.count, using: &generator.rng)] ^= UInt8.random(
                        in: 1...255, using: &generator.rng)
                }
            }
            var harness = StreamHarness(maxMessageBytes: 4096, maxDepth: 16)
            var index = 0
            while index < stream.count {
                let end = min(stream.count, index + Int.random(in: 1...7, using: &generator.rng))
                harness.feed(stream[index..<end])
                index = end
            }
            // Every complete message decodes into one of the outcomes of wire-protocol.md §4.
            for message in harness.messages {
                let decoded = message.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 16) }
                switch decoded {
                case .value, .invalidCBOR, .nestingTooDeep, .decodedTooLarge: break
                case .notWellFormed: Issue.record("framer accepted a message the decoder finds malformed")
                }
            }
        }
    }

    @Test("an envelope around a tag 24 whose bytes are not one item is invalid CBOR, not malformed (fuzzing find)")
    func envelopeAroundInvalidEmbeddedItem() {
        // tag 24 ( tag 24 ( h'a2426964…' ) ) where the inner bytes end inside their map.
        let message = Hex.decode("d818d8184da242696409467265726573756c")
        var framer = CBORStreamFramer(maxMessageBytes: 4096, maxDepth: 16)
        #expect(message.withUnsafeBytes { framer.next(in: $0) } == .message(length: message.count))
        #expect(message.withUnsafeBytes { CBORMessage.decode($0, maxDepth: 16) } == .invalidCBOR)
    }

    @Test("every input that once failed the framer fuzz target keeps the target's properties")
    func fuzzRegressions() throws {
        let directory = TestPaths.repositoryRoot.appendingPathComponent("Tests/Fuzz/Regressions/framer")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { !$0.hasPrefix(".") }
        #expect(!names.isEmpty)
        for name in names {
            let input = [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
            guard let first = input.first else { continue }
            let stream = Array(input.dropFirst())
            var whole = CBORStreamFramer(maxMessageBytes: 4096, maxDepth: 16)
            let event = stream.withUnsafeBytes { whole.next(in: $0) }
            var harness = StreamHarness(maxMessageBytes: 4096, maxDepth: 16)
            let chunk = Int(first % 16) + 1
            var index = 0
            while index < stream.count {
                harness.feed(stream[index..<min(stream.count, index + chunk)])
                index += chunk
            }
            if case .message(let length) = event {
                #expect(harness.messages.first == Array(stream.prefix(length)), "\(name)")
                let decoded = stream.prefix(length).withUnsafeBytes { CBORMessage.decode($0, maxDepth: 16) }
                #expect(decoded != .notWellFormed, "\(name)")
            }
        }
    }

    @Test("an indefinite map that ends after a key is malformed to the framer too (fuzzing find)")
    func oddIndefiniteMap() {
        for hex in ["bf01ff", "bfbf01ffff", "d80cbfbfffff"] {
            var framer = CBORStreamFramer(maxMessageBytes: 4096, maxDepth: 16)
            let bytes = Hex.decode(hex)
            guard case .malformed = bytes.withUnsafeBytes({ framer.next(in: $0) }) else {
                Issue.record("\(hex) was not refused")
                continue
            }
        }
        var framer = CBORStreamFramer(maxMessageBytes: 4096, maxDepth: 16)
        let even = Hex.decode("bf0102bf0304ffa0ff")
        #expect(even.withUnsafeBytes { framer.next(in: $0) } == .message(length: even.count))
    }
}
