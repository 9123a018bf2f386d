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
        writeInteger(Int32(elements.isEmpty ? 0 : 1))
        writeInteger(Int32(elements.contains { $0 == nil } ? 1 : 0))
        writeInteger(elementType)
        guard !elements.isEmpty else { return }
        writeInteger(Int32(elements.count))
        writeInteger(Int32(1))
        for element in elements {
            if var element {
                writeInteger(Int32(element.readableBytes))
                writeBuffer(&element)
            } else {
                writeInteger(Int32(-1))
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
