#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// A guest's request as its frame said it, every structure, count and length already checked against
/// the bytes the frame carried. A frame that is not what its op says does not decode (ProtocolError: its
/// session ends); a value no local call would accept (a path with a NUL) decodes, with the errno a local
/// call gives for it, and is answered.
public enum Request: Sendable {
    case open(flags: Int32, mode: UInt32, path: GuestPath)
    case close
    /// PD_READ, or PD_PREAD with its offset.
    case read(count: UInt64, offset: Int64?)
    /// PD_WRITE, or PD_PWRITE with its offset.
    case write(data: ArraySlice<UInt8>, offset: Int64?)
    /// PD_IOCTL: decoded where its regions are planned (the planner's limits bound their count).
    case ioctl(Frame)
    /// PD_POLL; with PD_READ_AHEAD, at most how many bytes to read when the file is readable.
    case poll(events: Int16, timeoutMilliseconds: Int32, readAhead: Int?)
    case seek(offset: Int64, whence: Int32)
    case fsync
    case fstat
    case setStatusFlags(Int32)
    case fasync(enabled: Bool)
    /// PD_WATCH; with PD_WATCH_LEVEL, the events whose level the reply reports first.
    /// With PD_READ_AHEAD as well, at most how many bytes to read when the level is readable.
    case watch(events: Int16, level: Int16?, readAhead: Int?)
    case share
    case map(offset: UInt64, length: UInt64, protection: Int32)
    /// PD_MUNMAP with the final contents of the guest's writable mirror. Those are checked here too, but
    /// their verdict waits: an unknown mapping is EINVAL whatever follows it, as the kernel's munmap of
    /// an address that is not mapped, and only a known one's malformed contents end the session.
    case unmap(mapping: UInt32, contents: Result<[MirrorBytes], ProtocolError>)
    case readLink(path: GuestPath)
    case listDirectory(path: GuestPath)
    /// PD_INTERRUPT: the guest's caller of that request (of this session) got a signal. No reply.
    case interrupt(request: UInt32)
    /// PD_FOCUS: make the guest so named the foreground of the `foreground` exports (a control request).
    case focus(guest: GuestPath)
    /// PD_FORK: the guest process is forking; the reply's ticket lets its child hold what it holds now.
    case fork
    /// An op no frontend sends (PD_HELLO again, a reply's op, a number past the protocol's): ENOSYS.
    case unknown(op: UInt16)
}

/// A path as a local call would take it, or the errno such a call gives. Paths travel without their NUL:
/// one inside is no path a program could have passed.
public typealias GuestPath = Result<String, Errno>

/// Bytes of a mirrored mapping at an offset in it.
public struct MirrorBytes: Sendable {
    public var mapping: UInt32
    public var offset: UInt64
    public var bytes: ArraySlice<UInt8>
}

/// One decoded frame: who asked (the request number the reply carries), about which handle, and what.
public struct RequestFrame: Sendable {
    public var op: UInt16
    public var id: UInt32
    public var handle: UInt32
    public var request: Request

    /// Decodes a frame of the session's request ops (not PD_HELLO, which opens it, nor PD_BYE, which ends it).
    public init(_ frame: Frame) throws(ProtocolError) {
        op = frame.op
        id = frame.request
        handle = frame.handle
        do { request = try Self.decode(frame) } catch let error as ProtocolError { throw error } catch {
            throw ProtocolError("\(error)")
        }
    }

    private static func decode(_ frame: Frame) throws -> Request {
        var reader = BodyReader(frame.body)
        switch frame.op {
        case PD_OPEN.code:
            let open = try reader.read(pd_open.self)
            return .open(flags: open.flags, mode: open.mode, path: guestPath(reader.readRest()))
        case PD_CLOSE.code: return .close
        case PD_READ.code, PD_PREAD.code:
            let io = try reader.read(pd_io.self)
            return .read(count: io.count, offset: frame.op == PD_PREAD.code ? io.offset : nil)
        case PD_WRITE.code, PD_PWRITE.code:
            let io = try reader.read(pd_io.self)
            return .write(data: reader.readRest(), offset: frame.op == PD_PWRITE.code ? io.offset : nil)
        case PD_IOCTL.code: return .ioctl(frame)
        case PD_POLL.code:
            let poll = try reader.read(pd_poll.self)
            return .poll(events: Int16(truncatingIfNeeded: poll.events), timeoutMilliseconds: poll.timeout_ms,
                         readAhead: try readAhead(&reader, frame.flags))
        case PD_LLSEEK.code:
            let seek = try reader.read(pd_llseek.self)
            return .seek(offset: seek.offset, whence: seek.whence)
        case PD_FSYNC.code: return .fsync
        case PD_FSTAT.code: return .fstat
        case PD_SETFL.code: return .setStatusFlags(try reader.read(pd_flags.self).flags)
        case PD_FASYNC.code: return .fasync(enabled: try reader.read(pd_flags.self).flags != 0)
        case PD_WATCH.code where frame.flags & UInt16(PD_WATCH_LEVEL) != 0:
            let watch = try reader.read(pd_watch.self)
            return .watch(events: Int16(truncatingIfNeeded: watch.events), level: Int16(truncatingIfNeeded: watch.level),
                          readAhead: try readAhead(&reader, frame.flags))
        case PD_WATCH.code: return .watch(events: Int16(truncatingIfNeeded: try reader.read(pd_poll.self).events), level: nil, readAhead: nil)
        case PD_SHARE.code: return .share
        case PD_MMAP.code:
            let map = try reader.read(pd_mmap.self)
            return .map(offset: map.offset, length: map.length, protection: map.prot)
        case PD_MUNMAP.code:
            let unmap = try reader.read(pd_munmap.self)
            let contents = Result { () throws(ProtocolError) -> [MirrorBytes] in try mirrorBytes(&reader, optional: true) }
            return .unmap(mapping: unmap.mapping, contents: contents)
        case PD_READLINK.code: return .readLink(path: guestPath(frame.body[...]))
        case PD_LISTDIR.code: return .listDirectory(path: guestPath(frame.body[...]))
        case PD_INTERRUPT.code: return .interrupt(request: try reader.read(pd_interrupt_request.self).request)
        case PD_FOCUS.code: return .focus(guest: guestPath(frame.body[...]))
        case PD_FORK.code: return .fork
        default: return .unknown(op: frame.op)
        }
    }

    /// PD_READ_AHEAD's pd_read_ahead, which the flag says follows (a body without it is malformed), capped
    /// at PD_MAX_READ_AHEAD.
    private static func readAhead(_ reader: inout BodyReader, _ flags: UInt16) throws -> Int? {
        guard flags & UInt16(PD_READ_AHEAD) != 0 else { return nil }
        return Int(min(try reader.read(pd_read_ahead.self).read_max, PD_MAX_READ_AHEAD))
    }

    /// A guest path as a local open would take it, or the errno such an open gives.
    public static func guestPath(_ bytes: ArraySlice<UInt8>) -> GuestPath {
        if bytes.isEmpty { return .failure(.noSuchFileOrDirectory) }
        if bytes.count >= Int(PATH_MAX) { return .failure(.fileNameTooLong) }
        if bytes.contains(0) { return .failure(.invalidArgument) }
        return .success(String(decoding: bytes, as: UTF8.self))
    }
}

/// A pd_mapping_count and that many ranges, each with its bytes padded to 8: the count is checked against
/// what is left of the frame before anything is sized by it. `optional`: nothing at all is no ranges.
public func mirrorBytes(_ reader: inout BodyReader, optional: Bool) throws(ProtocolError) -> [MirrorBytes] {
    if optional && reader.remaining < MemoryLayout<pd_mapping_count>.size { return [] }
    do {
        let count = try reader.read(pd_mapping_count.self)
        try reader.expect(Int(count.count), of: pd_mapping_range.self)
        var out: [MirrorBytes] = []
        out.reserveCapacity(Int(count.count))
        for _ in 0..<count.count {
            let range = try reader.read(pd_mapping_range.self)
            out.append(MirrorBytes(mapping: range.mapping, offset: range.offset, bytes: try reader.readBytes(Int(range.length))))
            reader.skipPadding()
        }
        return out
    } catch let error as ProtocolError { throw error } catch { throw ProtocolError("\(error)") }
}

/// PD_HELLO: the guest's version, what it is, and the session it joins if it is a forked child.
public struct Hello: Sendable {
    public var header: pd_hello
    public var name: String

    public init(_ frame: Frame) throws(ProtocolError) {
        var reader = BodyReader(frame.body)
        do { header = try reader.read(pd_hello.self) } catch let error as ProtocolError { throw error } catch {
            throw ProtocolError("\(error)")
        }
        name = String(decoding: reader.readRest(), as: UTF8.self)
    }

    /// This backend speaks the guest's protocol.
    public var isCompatible: Bool { header.magic == PD_MAGIC && header.major == PD_VERSION_MAJOR }
}

extension BodyReader {
    /// Throws unless `count` structures of `T` fit in what is left: a count is checked against the frame
    /// before anything is allocated for it or looped over.
    public mutating func expect<T>(_ count: Int, of type: T.Type) throws {
        guard count <= remaining / MemoryLayout<T>.size else {
            throw ProtocolError("\(count) × \(T.self) in \(remaining) bytes")
        }
    }
}
