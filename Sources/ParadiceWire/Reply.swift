#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// The backend's answers, encoded as they travel (header included, ready for the socket).
public enum Reply {
    /// A pd_reply and its data: a failure travels as result -1 and its errno.
    public static func frame(_ request: UInt32, _ outcome: Result<Int64, Errno>, data: some Collection<UInt8> = [UInt8](),
                             op: UInt16 = PD_REPLY.code) -> [UInt8] {
        var w = BodyWriter(capacity: MemoryLayout<pd_reply>.size + data.count)
        switch outcome {
        case .success(let result): w.append(pd_reply(result: result, error: 0, reserved: 0))
        case .failure(let error): w.append(pd_reply(result: -1, error: error.rawValue, reserved: 0))
        }
        w.append(bytes: data)
        return w.frame(op: op, request: request)
    }

    /// A reply whose data the call writes in place, after the header and pd_reply: a read's bytes go to the
    /// socket with no copy. `fill` gets room for `capacity` bytes and says how many it wrote.
    public static func filled(_ request: UInt32, capacity: Int,
                              _ fill: (UnsafeMutableRawPointer) -> Result<Int, Errno>) -> [UInt8] {
        let headroom = Frame.headerSize + MemoryLayout<pd_reply>.size
        return [UInt8](unsafeUninitializedCapacity: headroom + capacity) { buffer, initialized in
            let outcome = fill(buffer.baseAddress! + headroom)
            let n = (try? outcome.get()) ?? 0
            var header = pd_header(length: UInt32(MemoryLayout<pd_reply>.size + n), op: PD_REPLY.code, flags: 0, request: request, handle: 0)
            var result: pd_reply
            switch outcome {
            case .success(let n): result = pd_reply(result: Int64(n), error: 0, reserved: 0)
            case .failure(let error): result = pd_reply(result: -1, error: error.rawValue, reserved: 0)
            }
            withUnsafeBytes(of: &header) { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
            withUnsafeBytes(of: &result) {
                UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[Frame.headerSize...]).copyMemory(from: $0)
            }
            initialized = headroom + n
        }
    }

    /// What a file is, after pd_reply (PD_OPEN, PD_FSTAT): zeros when fstat failed.
    /// `readUnit`: pd_stat.read_unit, how the file's reads may be split (0: not declared).
    public static func stat(_ st: Result<stat, Errno>, readUnit: Int = 0) -> [UInt8] {
        var w = BodyWriter()
        if case .success(let st) = st {
            w.append(pd_stat(mode: st.st_mode, read_unit: UInt32(readUnit), rdev: UInt64(st.st_rdev), size: UInt64(st.st_size)))
        } else {
            w.append(pd_stat())
        }
        return w.bytes
    }

    /// PD_READ_AHEAD's data after pd_reply: pd_read_ahead_done, then the bytes padded to 8.
    public static func readAhead(_ bytes: [UInt8]) -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_read_ahead_done(length: UInt32(bytes.count), reserved: 0))
        w.append(bytes: bytes)
        w.pad()
        return w.bytes
    }

    /// PD_LISTDIR's data: one pd_dirent and the name, padded to 8, per entry.
    public static func directory(_ entries: [(name: [UInt8], type: UInt8)]) -> [UInt8] {
        var w = BodyWriter()
        for entry in entries {
            w.append(pd_dirent(type: entry.type, reserved: 0, name_length: UInt16(truncatingIfNeeded: entry.name.count), reserved2: 0))
            w.append(bytes: entry.name)
            w.pad()
        }
        return w.bytes
    }

    /// Mirror contents a guest's mirrors take (a new mapping's first contents): a count, then each range
    /// and its bytes padded to 8. Nothing at all when there are none.
    public static func mirrorContents(_ ranges: [(mapping: UInt32, offset: Int, bytes: UnsafeRawBufferPointer)]) -> [UInt8] {
        guard !ranges.isEmpty else { return [] }
        var w = BodyWriter()
        w.append(pd_mapping_count(count: UInt32(ranges.count), reserved: 0))
        for r in ranges {
            w.append(pd_mapping_range(mapping: r.mapping, length: UInt32(r.bytes.count), offset: UInt64(r.offset)))
            w.append(r.bytes)
            w.pad()
        }
        return w.bytes
    }

    /// PD_EVENT: a watched handle became ready.
    public static func event(handle: UInt32, revents: Int16) -> [UInt8] {
        var body = BodyWriter()
        body.append(pd_event(revents: Int32(revents), reserved: 0))
        return body.frame(op: PD_EVENT.code, request: 0, handle: handle)
    }
}
