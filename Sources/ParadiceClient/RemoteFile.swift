#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadicePlan
import ParadiceWire

/// A device file opened through a backend. Its operations behave as the local ones would, errors
/// included (thrown as `Errno`).
public final class RemoteFile: @unchecked Sendable {
    public let client: ParadiceClient
    public let handle: UInt32
    public let path: String
    /// st_mode and st_rdev of the device node on the backend.
    public let mode: UInt32
    public let rdev: UInt64
    private var closed = false

    init(client: ParadiceClient, handle: UInt32, path: String, mode: UInt32, rdev: UInt64) {
        self.client = client
        self.handle = handle
        self.path = path
        self.mode = mode
        self.rdev = rdev
    }

    public func close() throws {
        guard !closed else { return }
        closed = true
        _ = try ParadiceClient.result(client.call(op: PD_CLOSE.code, handle: handle, body: BodyWriter()))
    }

    public func read(count: Int) throws -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_io(count: UInt64(count), offset: 0))
        let (n, data) = try ParadiceClient.result(client.call(op: PD_READ.code, handle: handle, body: w))
        return Array(data.prefix(Int(n)))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let data = try read(count: buffer.count)
        data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return data.count
    }

    public func pread(count: Int, offset: Int64) throws -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_io(count: UInt64(count), offset: offset))
        let (n, data) = try ParadiceClient.result(client.call(op: PD_PREAD.code, handle: handle, body: w))
        return Array(data.prefix(Int(n)))
    }

    @discardableResult
    public func write(_ bytes: some Collection<UInt8>) throws -> Int {
        var w = BodyWriter(capacity: 16 + bytes.count)
        w.append(pd_io(count: UInt64(bytes.count), offset: 0))
        w.append(bytes: bytes)
        return Int(try ParadiceClient.result(client.call(op: PD_WRITE.code, handle: handle, body: w)).0)
    }

    @discardableResult
    public func pwrite(_ bytes: some Collection<UInt8>, offset: Int64) throws -> Int {
        var w = BodyWriter(capacity: 16 + bytes.count)
        w.append(pd_io(count: UInt64(bytes.count), offset: offset))
        w.append(bytes: bytes)
        return Int(try ParadiceClient.result(client.call(op: PD_PWRITE.code, handle: handle, body: w)).0)
    }

    /// poll(2) on the remote file: the events that are ready, or 0 at the timeout.
    public func poll(events: Int16, timeout milliseconds: Int32) throws -> Int16 {
        var w = BodyWriter()
        w.append(pd_poll(events: Int32(events), timeout_ms: milliseconds))
        return Int16(truncatingIfNeeded: try ParadiceClient.result(client.call(op: PD_POLL.code, handle: handle, body: w)).0)
    }

    /// Asks for one PD_EVENT (delivered to `client.onEvent`) when any of `events` is ready.
    public func watch(events: Int16) throws {
        var w = BodyWriter()
        w.append(pd_poll(events: Int32(events), timeout_ms: -1))
        _ = try ParadiceClient.result(client.call(op: PD_WATCH.code, handle: handle, body: w))
    }

    /// O_ASYNC: while on, the backend pushes an event (to `client.onEvent`) each time the file becomes
    /// ready after it was used; a frontend raises SIGIO from it.
    public func setAsync(_ on: Bool) throws {
        var w = BodyWriter()
        w.append(pd_flags(flags: on ? 1 : 0, reserved: 0))
        _ = try ParadiceClient.result(client.call(op: PD_FASYNC.code, handle: handle, body: w))
    }

    public func seek(_ offset: Int64, whence: Int32 = SEEK_SET) throws -> Int64 {
        var w = BodyWriter()
        w.append(pd_llseek(offset: offset, whence: whence, reserved: 0))
        return try ParadiceClient.result(client.call(op: PD_LLSEEK.code, handle: handle, body: w)).0
    }

    public func fsync() throws {
        _ = try ParadiceClient.result(client.call(op: PD_FSYNC.code, handle: handle, body: BodyWriter()))
    }

    /// F_SETFL: O_NONBLOCK and O_APPEND.
    public func setFlags(_ flags: Int32) throws {
        var w = BodyWriter()
        w.append(pd_flags(flags: flags, reserved: 0))
        _ = try ParadiceClient.result(client.call(op: PD_SETFL.code, handle: handle, body: w))
    }

    /// ioctl(2) with an integer argument (or none).
    @discardableResult
    public func ioctl(_ command: UInt32, value: UInt = 0) throws -> Int32 {
        try ioctl(command, address: UInt64(value))
    }

    /// ioctl(2) with a pointer argument: the memory the spec grants is gathered from this process and
    /// the results are written back into it.
    @discardableResult
    public func ioctl(_ command: UInt32, _ argument: UnsafeMutableRawPointer?) throws -> Int32 {
        try ioctl(command, address: UInt64(UInt(bitPattern: argument)))
    }

    private func ioctl(_ command: UInt32, address: UInt64) throws -> Int32 {
        let memory = LocalMemory()
        var regions: [(address: UInt64, bytes: [UInt8])] = []
        // What the backend needed at this argument last time is sent up front (when readable), which
        // saves the round trips of asking; anything else it needs, it asks for.
        if address != 0, let shape = client.argumentShape(command) {
            for part in shape {
                guard let bytes = try? memory.read(address: address &+ part.offset, count: part.length) else { break }
                regions.append((address &+ part.offset, bytes))
            }
        }
        var asked: [(offset: UInt64, length: Int)] = []
        for _ in 0..<64 {
            var w = BodyWriter(capacity: 32 + regions.reduce(0) { $0 + $1.bytes.count + 16 })
            w.append(pd_ioctl(command: command, region_count: UInt32(regions.count), argument: address))
            for r in regions {
                w.append(pd_region(address: r.address, length: UInt32(r.bytes.count), reserved: 0))
                w.append(bytes: r.bytes)
                w.pad()
            }
            // This library's descriptor numbers are the backend's handles: nothing to translate.
            let reply = try client.call(op: PD_IOCTL.code, flags: UInt16(PD_IOCTL_TRANSLATED), handle: handle, body: w)
            if reply.op == PD_NEED.code {
                var reader = BodyReader(reply.body)
                let need = try reader.read(pd_need.self)
                for _ in 0..<need.region_count {
                    let r = try reader.read(pd_region.self)
                    if r.address >= address && r.address - address < 1 << 16 { asked.append((r.address - address, Int(r.length))) }
                    if regions.contains(where: { $0.address == r.address && $0.bytes.count >= Int(r.length) }) { continue }
                    guard let bytes = try? memory.read(address: r.address, count: Int(r.length)) else { throw Errno.fault }
                    regions.removeAll { $0.address == r.address }
                    regions.append((r.address, bytes))
                }
                continue
            }
            if !asked.isEmpty { client.rememberArgumentShape(command, asked) }
            var (result, reader) = try ParadiceClient.resultReader(reply)
            let done = try reader.read(pd_ioctl_done.self)
            for _ in 0..<done.region_count {
                let r = try reader.read(pd_region.self)
                let bytes = try reader.readBytes(Int(r.length))
                reader.skipPadding()
                let written = bytes.withUnsafeBytes { paradice_write_process(getpid(), $0.baseAddress, UInt(r.address), $0.count) }
                guard written == bytes.count else { throw Errno.fault }
            }
            return Int32(truncatingIfNeeded: result)
        }
        throw Errno.io
    }
}
