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

    public static let headerSize = 16   // MemoryLayout<pd_header>.size

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

/// Builds a frame body from the C structs of paradice_wire.h and raw bytes. Room for the header is
/// kept in front, so that the finished frame goes to the socket without another copy.
@frozen
public struct BodyWriter {
    @usableFromInline var storage: [UInt8]

    @inlinable
    public init(capacity: Int = 64) {
        storage = []
        storage.reserveCapacity(Frame.headerSize + capacity)
        storage.append(contentsOf: repeatElement(0, count: Frame.headerSize))
    }

    /// The body written so far.
    @inlinable
    public var bytes: [UInt8] { Array(storage[Frame.headerSize...]) }
    @inlinable
    public var count: Int { storage.count - Frame.headerSize }

    /// The whole frame: header filled in, then the body.
    @inlinable
    public consuming func frame(op: UInt16, flags: UInt16 = 0, request: UInt32, handle: UInt32 = 0) -> [UInt8] {
        var header = pd_header(length: UInt32(storage.count - Frame.headerSize), op: op, flags: flags, request: request, handle: handle)
        withUnsafeBytes(of: &header) { h in
            storage.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: h.baseAddress!, byteCount: h.count) }
        }
        return storage
    }

    @inlinable
    public mutating func append<T>(_ value: T) {
        var v = value
        withUnsafeBytes(of: &v) { storage.append(contentsOf: $0) }
    }

    @inlinable
    public mutating func append(bytes more: some Collection<UInt8>) { storage.append(contentsOf: more) }

    @inlinable
    public mutating func append(_ buffer: UnsafeRawBufferPointer) { storage.append(contentsOf: buffer) }

    /// Pads to the next multiple of 8, as every variable part of the protocol is.
    @inlinable
    public mutating func pad() {
        while storage.count % 8 != 0 { storage.append(0) }
    }
}

/// A malformed frame from the other side.
public struct ProtocolError: Error, Sendable, CustomStringConvertible {
    public var message: String
    @inlinable public init(_ message: String) { self.message = message }
    public var description: String { "protocol error: \(message)" }
}

/// Reads C structs and bytes from a frame body, bounds-checked.
@frozen
public struct BodyReader {
    public let bytes: [UInt8]
    public var offset = 0

    @inlinable
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    @inlinable
    public var remaining: Int { bytes.count - offset }

    @inlinable
    public mutating func read<T>(_ type: T.Type) throws -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw ProtocolError("body too short for \(T.self)") }
        let value = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return value
    }

    @inlinable
    public mutating func readBytes(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else { throw ProtocolError("body too short for \(count) bytes") }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    @inlinable
    public mutating func readRest() -> ArraySlice<UInt8> {
        defer { offset = bytes.count }
        return bytes[offset...]
    }

    @inlinable
    public mutating func skipPadding() {
        offset = min(bytes.count, (offset + 7) / 8 * 8)
    }
}
