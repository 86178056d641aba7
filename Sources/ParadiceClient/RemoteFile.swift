#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadicePlan
import ParadiceTransport
import ParadiceWire

/// A device file opened through a backend. Its operations behave as the local ones would, errors
/// included (thrown as `Errno`).
public final class RemoteFile: Sendable {
    public let client: ParadiceClient
    public let handle: UInt32
    public let path: String
    /// st_mode and st_rdev of the device node on the backend.
    public let mode: UInt32
    public let rdev: UInt64

    private struct State {
        var closed = false
        /// Guest memory the backend asked for in earlier ioctls on this file (the newest
        /// `grantLimit`): a driver may keep such memory and fill it later (a buffer queued for capture,
        /// returned at DQBUF), so a reply may write there too.
        var granted: [(address: UInt64, length: Int)] = []
    }

    private let state = LockedValue(State())
    static let grantLimit = 256
    /// PD_NEED rounds one ioctl may take: an argument `d` levels deep needs `d`, and no spec nests
    /// deeper than a few. A backend still asking after this many never converges; the call fails (EIO).
    public static let needRoundLimit = 16

    init(client: ParadiceClient, handle: UInt32, path: String, mode: UInt32, rdev: UInt64) {
        self.client = client
        self.handle = handle
        self.path = path
        self.mode = mode
        self.rdev = rdev
    }

    public func close() throws {
        let first = state.withLock { s -> Bool in
            defer { s.closed = true }
            return !s.closed
        }
        guard first else { return }
        _ = try ParadiceClient.result(client.call(op: PD_CLOSE.code, handle: handle, body: BodyWriter()))
    }

    public func read(count: Int) throws -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_io(count: UInt64(max(count, 0)), offset: 0))
        return try received(ParadiceClient.result(client.call(op: PD_READ.code, handle: handle, body: w)), asked: count)
    }

    /// The bytes of a read's reply: as many as the result says, never more than were asked for or came.
    private func received(_ reply: (Int64, ArraySlice<UInt8>), asked count: Int) throws -> [UInt8] {
        let (n, data) = reply
        guard n >= 0, n <= Int64(max(count, 0)), n <= Int64(data.count) else {
            throw client.badReply("a read of \(count) bytes answered \(n) with \(data.count)")
        }
        return Array(data.prefix(Int(n)))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let data = try read(count: buffer.count)
        data.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return data.count
    }

    public func pread(count: Int, offset: Int64) throws -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_io(count: UInt64(count), offset: offset))
        return try received(ParadiceClient.result(client.call(op: PD_PREAD.code, handle: handle, body: w)), asked: count)
    }

    @discardableResult
    public func write(_ bytes: some Collection<UInt8>) throws -> Int {
        var w = BodyWriter(capacity: 16 + bytes.count)
        w.append(pd_io(count: UInt64(bytes.count), offset: 0))
        w.append(bytes: bytes)
        return try written(ParadiceClient.result(client.call(op: PD_WRITE.code, handle: handle, body: w)).0, of: bytes.count)
    }

    @discardableResult
    public func pwrite(_ bytes: some Collection<UInt8>, offset: Int64) throws -> Int {
        var w = BodyWriter(capacity: 16 + bytes.count)
        w.append(pd_io(count: UInt64(bytes.count), offset: offset))
        w.append(bytes: bytes)
        return try written(ParadiceClient.result(client.call(op: PD_PWRITE.code, handle: handle, body: w)).0, of: bytes.count)
    }

    private func written(_ n: Int64, of count: Int) throws -> Int {
        guard n >= 0, n <= Int64(count) else { throw client.badReply("a write of \(count) bytes answered \(n)") }
        return Int(n)
    }

    /// poll(2) on the remote file: the events that are ready, or 0 at the timeout.
    public func poll(events: Int16, timeout milliseconds: Int32) throws -> Int16 {
        var w = BodyWriter()
        w.append(pd_poll(events: Int32(events), timeout_ms: milliseconds))
        return Int16(truncatingIfNeeded: try ParadiceClient.result(client.call(op: PD_POLL.code, handle: handle, body: w)).0)
    }

    /// Asks for one PD_EVENT (delivered to `client.onEvent`) when any of `events` is ready.
    public func watch(events: Int16) throws {
        client.startEventReader()
        var w = BodyWriter()
        w.append(pd_poll(events: Int32(events), timeout_ms: -1))
        _ = try ParadiceClient.result(client.call(op: PD_WATCH.code, handle: handle, body: w))
    }

    /// O_ASYNC: while on, the backend pushes an event (to `client.onEvent`) each time the file becomes
    /// ready after it was used; a frontend raises SIGIO from it.
    public func setAsync(_ on: Bool) throws {
        if on { client.startEventReader() }
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


    /// Guest memory a call may write: what the reply writes must lie inside it.
    struct Grants {
        var spans: [(address: UInt64, length: Int)] = []

        /// Whether [address, address + length) lies inside the union of the spans.
        func cover(_ address: UInt64, _ length: Int) -> Bool {
            guard length > 0 else { return true }
            let (end, overflow) = address.addingReportingOverflow(UInt64(length))
            guard !overflow else { return false }
            var reached = address
            for s in spans.sorted(by: { $0.address < $1.address }) where s.length > 0 {
                let sEnd = s.address &+ UInt64(s.length)
                if sEnd < s.address { continue }
                if s.address > reached { break }
                if sEnd > reached { reached = sEnd }
                if reached >= end { return true }
            }
            return false
        }
    }

    /// The largest body an ioctl request may have: each gathered region takes its bytes, its header and
    /// padding.
    private static let requestBudget = Int(PD_MAX_FRAME) - MemoryLayout<pd_ioctl>.size

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
        // Memory behind pointers that the backend asked for: a driver may keep it past the call.
        var lent: [(address: UInt64, length: Int)] = []
        for round in 0...Self.needRoundLimit {
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
                guard round < Self.needRoundLimit else {
                    throw client.badReply("ioctl 0x\(String(command, radix: 16)) still asked for memory after \(Self.needRoundLimit) rounds")
                }
                let needed = try neededRegions(reply, command: command)
                var budget = regions.reduce(Self.requestBudget) { $0 - $1.bytes.count - MemoryLayout<pd_region>.size - 8 }
                for r in needed {
                    if r.address >= address && r.address - address < 1 << 16 {
                        asked.append((r.address - address, r.length))
                    } else {
                        lent.append(r)
                    }
                    if regions.contains(where: { $0.address == r.address && $0.bytes.count >= r.length }) { continue }
                    budget -= r.length + MemoryLayout<pd_region>.size + 8
                    guard budget >= 0 else {
                        throw client.badReply("ioctl 0x\(String(command, radix: 16)) asked for more memory than a request carries")
                    }
                    guard let bytes = try? memory.read(address: r.address, count: r.length) else { throw Errno.fault }
                    regions.removeAll { $0.address == r.address }
                    regions.append((r.address, bytes))
                }
                continue
            }
            if !asked.isEmpty { client.rememberArgumentShape(command, asked) }
            let (result, reader) = try ParadiceClient.resultReader(reply)
            let grants = state.withLock { s -> Grants in
                Grants(spans: regions.map { ($0.address, $0.bytes.count) } + s.granted)
            }
            let writes = try scattered(reader, grants: grants, pointedAt: pointers(in: regions, argument: address), command: command)
            for (target, bytes) in writes {
                let written = bytes.withUnsafeBytes { paradice_write_process(getpid(), $0.baseAddress, UInt(target), $0.count) }
                guard written == bytes.count else { throw Errno.fault }
            }
            if !lent.isEmpty {
                state.withLock { s in
                    for r in lent where !s.granted.contains(where: { $0.address == r.address && $0.length == r.length }) {
                        s.granted.append(r)
                    }
                    if s.granted.count > Self.grantLimit { s.granted.removeFirst(s.granted.count - Self.grantLimit) }
                }
            }
            return Int32(truncatingIfNeeded: result)
        }
        throw client.badReply("ioctl 0x\(String(command, radix: 16)) took more than \(Self.needRoundLimit) rounds")
    }

    /// The regions a PD_NEED asks for, every count checked against the frame. Slots (descriptors to
    /// translate) and mirrors do not concern this client: it sends handles already and keeps no mirrors.
    private func neededRegions(_ frame: Frame, command: UInt32) throws -> [(address: UInt64, length: Int)] {
        var reader = BodyReader(frame.body)
        guard let need = try? reader.read(pd_need.self) else { throw client.badReply("a PD_NEED too short for pd_need") }
        let size = UInt64(need.region_count) * UInt64(MemoryLayout<pd_region>.size)
            + UInt64(need.slot_count) * UInt64(MemoryLayout<pd_slot>.size)
            + UInt64(need.mapping_count) * UInt64(MemoryLayout<pd_mapping_range>.size)
        guard size <= UInt64(reader.remaining) else {
            throw client.badReply("a PD_NEED of \(need.region_count) regions, \(need.slot_count) slots and \(need.mapping_count) mappings in \(frame.body.count) bytes")
        }
        var regions: [(address: UInt64, length: Int)] = []
        regions.reserveCapacity(Int(need.region_count))
        for _ in 0..<need.region_count {
            let r = try reader.read(pd_region.self)
            regions.append((r.address, Int(r.length)))
        }
        return regions
    }

    /// Where the program pointed this call: the argument, and every pointer-sized value inside the bytes
    /// it sent. A driver writes through those and nowhere else, so a reply may start a region there
    /// (one the backend never asked to see, such as an out-only argument).
    private func pointers(in regions: [(address: UInt64, bytes: [UInt8])], argument: UInt64) -> Set<UInt64> {
        var found: Set<UInt64> = argument == 0 ? [] : [argument]
        for r in regions where r.bytes.count >= 8 && r.bytes.count <= 1 << 16 {
            r.bytes.withUnsafeBytes { raw in
                for offset in stride(from: 0, through: raw.count - 8, by: 4) {
                    let value = raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                    if value != 0 { found.insert(value) }
                }
            }
        }
        return found
    }

    /// The writes a PD_REPLY to PD_IOCTL carries, each checked: counts against the frame, and every
    /// region inside memory the call handed over (what it sent or was asked for, or lent this file
    /// before) or starting where it pointed. Nothing is written unless all of them pass.
    private func scattered(_ reader: consuming BodyReader, grants: Grants, pointedAt: Set<UInt64>,
                           command: UInt32) throws -> [(UInt64, ArraySlice<UInt8>)] {
        let what = "ioctl 0x\(String(command, radix: 16))"
        guard let done = try? reader.read(pd_ioctl_done.self) else { throw client.badReply("\(what): a reply too short for pd_ioctl_done") }
        guard UInt64(done.region_count) * UInt64(MemoryLayout<pd_region>.size)
                + UInt64(done.slot_count) * UInt64(MemoryLayout<pd_slot>.size)
                + UInt64(done.mapping_count) * UInt64(MemoryLayout<pd_mapping_range>.size) <= UInt64(reader.remaining) else {
            throw client.badReply("\(what): \(done.region_count) regions, \(done.slot_count) slots, \(done.mapping_count) mappings in \(reader.remaining) bytes")
        }
        var writes: [(UInt64, ArraySlice<UInt8>)] = []
        for _ in 0..<done.region_count {
            guard let r = try? reader.read(pd_region.self), let bytes = try? reader.readBytes(Int(r.length)) else {
                throw client.badReply("\(what): a region past the end of the reply")
            }
            reader.skipPadding()
            guard grants.cover(r.address, bytes.count) || pointedAt.contains(r.address) else {
                throw client.badReply("\(what): a write of \(bytes.count) bytes at 0x\(String(r.address, radix: 16)), memory the call did not hand over")
            }
            writes.append((r.address, bytes))
        }
        // New handles sit in the regions just checked; mirrors this client keeps none of.
        guard (try? reader.readBytes(Int(done.slot_count) * MemoryLayout<pd_slot>.size)) != nil else {
            throw client.badReply("\(what): slots past the end of the reply")
        }
        for _ in 0..<done.mapping_count {
            guard let m = try? reader.read(pd_mapping_range.self), (try? reader.readBytes(Int(m.length))) != nil else {
                throw client.badReply("\(what): a mapping range past the end of the reply")
            }
            reader.skipPadding()
        }
        return writes
    }
}
