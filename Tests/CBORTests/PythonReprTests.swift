import CBOR
import Testing

@Suite("Message rendering R() and Q()")
struct PythonReprTests {
    @Test("Q escapes like Python 2 repr")
    func quote() {
        #expect(String(decoding: PythonRepr.quote(Array("nope".utf8)), as: UTF8.self) == "'nope'")
        #expect(String(decoding: PythonRepr.quote(Array("fü".utf8)), as: UTF8.self) == #"'f\xc3\xbc'"#)
        #expect(String(decoding: PythonRepr.quote([0xff, 0x00]), as: UTF8.self) == #"'\xff\x00'"#)
        #expect(String(decoding: PythonRepr.quote(Array("a'b\\c\t\n\r".utf8)), as: UTF8.self) == #"'a\'b\\c\t\n\r'"#)
    }

    @Test("R renders every kind")
    func render() {
        let cases: [(CBORValue, String)] = [
            (.bytes("ws1"), "'ws1'"), (.text("ws1"), "'ws1'"), (5, "5"), (.int(-5), "-5"),
            (.negative(UInt64.max), "-18446744073709551616"), (.unsigned(UInt64.max), "18446744073709551615"),
            (.null, "None"), (true, "True"), (false, "False"),
            (.array(["foo", "x"]), "['foo', 'x']"), (.tuple(["foo"]), "('foo',)"), (.tuple([]), "()"),
            (.tuple([1, 2]), "(1, 2)"), (.map(CBORMap([(1, "a"), (.null, 2.5)])), "{1: 'a', None: 2.5}"),
            (
                .uuid(CBORUUID(high: 0x0123_4567_89ab_cdef, low: 0x0123_4567_89ab_cdef)),
                "UUID('01234567-89ab-cdef-0123-456789abcdef')"
            ),
            (.tagged(1000, [1, .text("x")]), "Tag(1000, [1, 'x'])"), (.simple(16), "simple(16)"),
        ]
        for (value, expected) in cases {
            #expect(PythonRepr.renderString(value) == expected)
        }
    }

    @Test("floats render like Python's repr")
    func floats() {
        let cases: [(Double, String)] = [
            (2.0, "2.0"), (-5.5, "-5.5"), (1e16, "1e+16"), (1e15, "1000000000000000.0"),
            (9.1e15, "9100000000000000.0"), (0.0001, "0.0001"), (1e-5, "1e-05"), (0.1, "0.1"),
            (1.2345678901234568e+17, "1.2345678901234568e+17"), (.nan, "nan"), (.infinity, "inf"),
            (-.infinity, "-inf"), (0, "0.0"), (-0.0, "-0.0"), (123.456, "123.456"),
            (Double.leastNonzeroMagnitude, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"), (300.0, "300.0"), (1.5e-4, "0.00015"),
        ]
        for (value, expected) in cases {
            #expect(PythonRepr.formatFloat(value) == expected, "\(value)")
        }
    }

    @Test("value equality ignores string kind, int/float, map order; not tuple vs array")
    func valueEquality() {
        #expect(CBORValue.bytes("a").valueEquals(.text("a")))
        #expect(CBORValue.int(2).valueEquals(.float(2.0)))
        #expect(CBORValue.int(-2).valueEquals(.float(-2.0)))
        #expect(!CBORValue.int(2).valueEquals(.float(2.5)))
        #expect(!CBORValue.array([1]).valueEquals(.tuple([1])))
        #expect(
            CBORValue.map(CBORMap([("a", 1), ("b", 2)])).valueEquals(.map(CBORMap([(.text("b"), 2.0), ("a", 1)]))))
        #expect(!CBORValue.map(CBORMap([("a", 1)])).valueEquals(.map(CBORMap([("a", 2)]))))
    }
}
