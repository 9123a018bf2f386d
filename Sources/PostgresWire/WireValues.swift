import NIOCore

/// A parameter of a statement: its type and its value in the server's binary format (nil for SQL NULL).
public struct WireParameter: Sendable {
    /// The type's object id (``WireType``).
    public var type: UInt32
    public var value: ByteBuffer?

    public init(type: UInt32, value: ByteBuffer?) {
        self.type = type
        self.value = value
    }
}

/// Object ids of the built-in types the binary encoders here produce (`pg_type.oid`, fixed since PostgreSQL 7).
public enum WireType {
    public static let bool: UInt32 = 16
    public static let bytea: UInt32 = 17
    public static let int8: UInt32 = 20
    public static let int2: UInt32 = 21
    public static let text: UInt32 = 25
    public static let float8: UInt32 = 701
    public static let boolArray: UInt32 = 1000
    public static let byteaArray: UInt32 = 1001
    public static let int2Array: UInt32 = 1005
    public static let textArray: UInt32 = 1009
    public static let int8Array: UInt32 = 1016
    public static let float8Array: UInt32 = 1022

    /// The array type whose elements are of `element`, if it is one of the types above.
    public static func array(of element: UInt32) -> UInt32? {
        switch element {
        case bool: return boolArray
        case bytea: return byteaArray
        case int2: return int2Array
        case text: return textArray
        case int8: return int8Array
        case float8: return float8Array
        default: return nil
        }
    }
}

extension ByteBuffer {
    /// Appends a one-dimensional array in the binary array format (`array_recv`): dimensions, a null flag, the
    /// element type, then each element as a length (-1 for NULL) and its bytes.
    public mutating func writeWireArray(elementType: UInt32, _ elements: [ByteBuffer?]) {
        writeWireArray(elementType: elementType, count: elements.count) { buffer, index in
            guard var element = elements[index] else { return false }
            buffer.writeBuffer(&element)
            return true
        }
    }

    /// Appends a one-dimensional array whose elements `element` writes straight into this buffer (no buffer per
    /// element): it appends element `index`'s bytes and returns true, or writes nothing and returns false for
    /// NULL.
    public mutating func writeWireArray(elementType: UInt32, count: Int, element: (inout ByteBuffer, Int) -> Bool) {
        writeInteger(Int32(count == 0 ? 0 : 1))
        let nullFlagIndex = writerIndex
        writeInteger(Int32(0))
        writeInteger(elementType)
        guard count > 0 else { return }
        writeInteger(Int32(count))
        writeInteger(Int32(1))
        for index in 0..<count {
            let lengthIndex = writerIndex
            writeInteger(Int32(-1))
            if element(&self, index) {
                setInteger(Int32(writerIndex - lengthIndex - 4), at: lengthIndex)
            } else {
                setInteger(Int32(1), at: nullFlagIndex)
            }
        }
    }
}

/// One result row: its cells in the binary format the statements ask for, nil for NULL.
public struct WireRow: Sendable {
    public let cells: [ByteBuffer?]

    public var count: Int { cells.count }
    public subscript(index: Int) -> ByteBuffer? { cells[index] }
}
