import CParadice

/// One protocol frame: the header fields and the body bytes.
public struct Frame: Sendable {
    public var op: UInt16
    public var flags: UInt16
    public var request: UInt32
    public var handle: UInt32
    public var body: [UInt8]

    public init(op: UInt16, flags: UInt16 = 0, request: UInt32 = 0, handle: UInt32 = 0, body: [UInt8] = []) {
        self.op = op
        self.flags = flags
        self.request = request
        self.handle = handle
        self.body = body
    }

    public static let headerSize = MemoryLayout<pd_header>.size

    /// The frame as it travels: header then body.
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.headerSize + body.count)
        var header = pd_header(length: UInt32(body.count), op: op, flags: flags, request: request, handle: handle)
        withUnsafeBytes(of: &header) { out.append(contentsOf: $0) }
        out.append(contentsOf: body)
        return out
    }
}

extension pd_op {
    public var code: UInt16 { UInt16(rawValue) }
}

/// Builds a frame body from the C structs of paradice_wire.h and raw bytes.
public struct BodyWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func append<T>(_ value: T) {
        var v = value
        withUnsafeBytes(of: &v) { bytes.append(contentsOf: $0) }
    }

    public mutating func append(bytes more: some Collection<UInt8>) { bytes.append(contentsOf: more) }

    public mutating func append(_ buffer: UnsafeRawBufferPointer) { bytes.append(contentsOf: buffer) }

    /// Pads to the next multiple of 8, as every variable part of the protocol is.
    public mutating func pad() {
        while bytes.count % 8 != 0 { bytes.append(0) }
    }
}

/// A malformed frame from the other side.
public struct ProtocolError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "protocol error: \(message)" }
}

/// Reads C structs and bytes from a frame body, bounds-checked.
public struct BodyReader {
    public let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    public mutating func read<T>(_ type: T.Type) throws -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw ProtocolError("body too short for \(T.self)") }
        let value = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return value
    }

    public mutating func readBytes(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else { throw ProtocolError("body too short for \(count) bytes") }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    public mutating func readRest() -> ArraySlice<UInt8> {
        defer { offset = bytes.count }
        return bytes[offset...]
    }

    public mutating func skipPadding() {
        offset = min(bytes.count, (offset + 7) / 8 * 8)
    }
}
