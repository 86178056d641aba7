#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceFrontendCore
import ParadiceSystem
import ParadiceTransport

/// A device file opened through a backend. Its operations behave as the local ones would, errors
/// included (thrown as `Errno`). Every operation runs in the frontend core, which checks each reply.
public final class RemoteFile: Sendable {
    public let client: ParadiceClient
    public let handle: UInt32
    public let path: String
    /// st_mode and st_rdev of the device node on the backend.
    public let mode: UInt32
    public let rdev: UInt64

    private let closed = LockedValue(false)
    /// Guest memory the backend asked for behind pointers in earlier ioctls on this file: a driver may
    /// keep such memory and fill it later (a buffer queued for capture, filled when dequeued), so a reply may
    /// write there too. The core keeps it under its own lock.
    let lent: CoreLent
    /// PD_NEED answers one ioctl follows before it fails (EIO): an argument `d` levels deep needs `d`,
    /// plus one for descriptors and one for mirrors (the core's PD_MAX_NEED_ROUNDS requests in all).
    public static let needRoundLimit = Int(PD_MAX_NEED_ROUNDS) - 1

    init(client: ParadiceClient, handle: UInt32, path: String, mode: UInt32, rdev: UInt64) {
        self.client = client
        self.handle = handle
        self.path = path
        self.mode = mode
        self.rdev = rdev
        self.lent = CoreLent()
    }

    private var connection: UnsafeMutablePointer<pd_connection> { client.core.pointer }

    public func close() throws {
        let first = closed.withLock { c -> Bool in
            defer { c = true }
            return !c
        }
        guard first else { return }
        try simple(PD_CLOSE, body: nil, length: 0)
    }

    public func read(count: Int) throws -> [UInt8] {
        try read(count: count, positional: false, offset: 0)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var broken: Int32 = 0
        let n = pd_file_read(connection, handle, buffer.baseAddress, buffer.count, 0, 0, &broken)
        guard n >= 0 else { throw client.failure(broken) }
        return Int(n)
    }

    public func pread(count: Int, offset: Int64) throws -> [UInt8] {
        try read(count: count, positional: true, offset: offset)
    }

    private func read(count: Int, positional: Bool, offset: Int64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(count, 0))
        var broken: Int32 = 0
        let n = bytes.withUnsafeMutableBytes {
            pd_file_read(connection, handle, $0.baseAddress, $0.count, positional ? 1 : 0, offset, &broken)
        }
        guard n >= 0 else { throw client.failure(broken) }
        bytes.removeLast(bytes.count - Int(n))
        return bytes
    }

    @discardableResult
    public func write(_ bytes: some Collection<UInt8>) throws -> Int {
        try write(Array(bytes), positional: false, offset: 0)
    }

    @discardableResult
    public func pwrite(_ bytes: some Collection<UInt8>, offset: Int64) throws -> Int {
        try write(Array(bytes), positional: true, offset: offset)
    }

    private func write(_ bytes: [UInt8], positional: Bool, offset: Int64) throws -> Int {
        var broken: Int32 = 0
        let n = bytes.withUnsafeBytes {
            pd_file_write(connection, handle, $0.baseAddress, $0.count, positional ? 1 : 0, offset, &broken)
        }
        guard n >= 0 else { throw client.failure(broken) }
        return Int(n)
    }

    /// A request whose answer is a result (and nothing the client reads).
    @discardableResult
    private func simple(_ op: pd_op, body: UnsafeRawPointer?, length: Int) throws -> Int64 {
        var broken: Int32 = 0
        let result = pd_file_simple(connection, handle, UInt16(op.rawValue), body, length, nil, 0, &broken)
        guard result >= 0 else { throw client.failure(broken) }
        return result
    }

    private func simple<Body>(_ op: pd_op, _ body: Body) throws -> Int64 {
        try withUnsafeBytes(of: body) { try simple(op, body: $0.baseAddress, length: $0.count) }
    }

    /// poll(2) on the remote file: the events that are ready, or 0 at the timeout.
    public func poll(events: Int16, timeout milliseconds: Int32) throws -> Int16 {
        Int16(truncatingIfNeeded: try simple(PD_POLL, pd_poll(events: Int32(events), timeout_ms: milliseconds)))
    }

    /// Asks for one PD_EVENT (delivered to `client.onEvent`) when any of `events` is ready.
    public func watch(events: Int16) throws {
        client.startEventReader()
        _ = try simple(PD_WATCH, pd_poll(events: Int32(events), timeout_ms: -1))
    }

    /// The level of `level` now or, when none of it holds, a watch for `events` whose PD_EVENT (to
    /// `client.onEvent`) reports whatever comes after the look: the ready events, or 0 when watching.
    /// One round trip (PD_WATCH_LEVEL) where the backend grants it.
    public func watch(events: Int16, unlessReady level: Int16) throws -> Int16 {
        client.startEventReader()
        var broken: Int32 = 0
        let result = pd_file_watch_level(connection, handle, events, level, &broken)
        guard result >= 0 else { throw client.failure(broken) }
        return Int16(truncatingIfNeeded: result)
    }

    /// O_ASYNC: while on, the backend pushes an event (to `client.onEvent`) each time the file becomes
    /// ready after it was used; a frontend raises SIGIO from it.
    public func setAsync(_ on: Bool) throws {
        if on { client.startEventReader() }
        _ = try simple(PD_FASYNC, pd_flags(flags: on ? 1 : 0, reserved: 0))
    }

    public func seek(_ offset: Int64, whence: Int32 = SEEK_SET) throws -> Int64 {
        try simple(PD_LLSEEK, pd_llseek(offset: offset, whence: whence, reserved: 0))
    }

    public func fsync() throws {
        try simple(PD_FSYNC, body: nil, length: 0)
    }

    /// F_SETFL: O_NONBLOCK and O_APPEND.
    public func setFlags(_ flags: Int32) throws {
        _ = try simple(PD_SETFL, pd_flags(flags: flags, reserved: 0))
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

    /// The core executes the backend's plan over this process's memory. This client's descriptor numbers
    /// are the backend's handles: nothing to translate.
    private func ioctl(_ command: UInt32, address: UInt64) throws -> Int32 {
        var broken: Int32 = 0
        let handles = pd_descriptors(context: nil, numbers_are_handles: 1, handle_for: nil, adopt: nil)
        let result = withUnsafePointer(to: handles) { descriptors in
            withUnsafePointer(to: pd_self_memory) { memory in
                var target = pd_target(connection: connection, handle: handle, lent: lent.pointer, memory: memory,
                                       descriptors: descriptors, interruption: nil)
                return pd_file_ioctl(&target, command, address, &broken)
            }
        }
        guard result >= 0 else { throw client.failure(broken) }
        return Int32(truncatingIfNeeded: result)
    }
}

extension RemoteFile {
    /// mmap(2) of the remote file: a mirror in this process's memory, which the core keeps in step with
    /// the device's mapping at the sync points the class's plug-in names (docs/protocol.md, "Mappings
    /// across machines"). Unmap it with `unmap`, not munmap alone: the backend holds the device's mapping.
    public func map(length: Int, protection: Int32 = PROT_READ | PROT_WRITE, flags: Int32 = MAP_SHARED,
                    offset: Int64 = 0) throws -> UnsafeMutableRawPointer {
        var memory = pd_self_memory
        memory.map = { _, hint, length, fixed in
            let at = mmap(UnsafeMutableRawPointer(bitPattern: UInt(hint)), Int(length), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | (fixed != 0 ? MAP_FIXED : 0), -1, 0)
            guard let at, at != UnsafeMutableRawPointer(bitPattern: -1) else { return UInt64.max }
            return UInt64(UInt(bitPattern: at))
        }
        memory.unmap = { _, address, length in _ = munmap(UnsafeMutableRawPointer(bitPattern: UInt(address)), Int(length)) }
        let at = withUnsafePointer(to: memory) { memory in
            var target = pd_target(connection: client.core.pointer, handle: handle, lent: lent.pointer, memory: memory,
                                   descriptors: nil, interruption: nil)
            return pd_file_map(&target, 0, UInt64(length), protection, flags, offset)
        }
        guard at != UInt64.max, let pointer = UnsafeMutableRawPointer(bitPattern: UInt(at)) else { throw Errno.current }
        return pointer
    }

    /// munmap(2) of a mirror `map` made: the changes of a writable shared one reach the device first.
    public func unmap(_ address: UnsafeMutableRawPointer, length: Int) throws {
        _ = withUnsafePointer(to: pd_self_memory) { memory in
            pd_file_unmap(client.core.pointer, memory, UInt64(UInt(bitPattern: address)))
        }
        try Syscall.munmap(address, length)
    }
}

/// A file's lent-memory record in the core (struct pd_lent), which guards it with its own lock.
final class CoreLent: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<pd_lent>
    init() {
        pointer = .allocate(capacity: 1)
        pd_lent_init(pointer)
    }
    deinit {
        pd_lent_destroy(pointer)
        pointer.deallocate()
    }
}
