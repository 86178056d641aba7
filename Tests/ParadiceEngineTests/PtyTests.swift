import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A forwarded pty master and the slave opened natively on the same machine.
struct ForwardedPty {
    let master: RemoteFile
    let number: UInt32
    let slave: Int32

    init(_ client: ParadiceClient) throws {
        master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        let n = Buffer(4)
        try master.ioctl(Ioctl.TIOCGPTN, n.pointer)
        number = n[0, as: UInt32.self]
        let unlock = Buffer(4)
        try master.ioctl(Ioctl.TIOCSPTLCK, unlock.pointer)
        slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        guard slave >= 0 else { throw Errno.current }
    }

    func closeSlave() { close(slave) }
}

@Suite("pty through the backend", .serialized)
struct PtyTests {
    @Test func windowSizeTravelsBothWays() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let ws = Buffer(8)
        ws[0, as: UInt16.self] = 40    // rows
        ws[2, as: UInt16.self] = 100   // columns
        try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer)
        // The kernel's own view, through the slave opened natively.
        let native = Buffer(8)
        #expect(paradice_ioctl(pty.slave, UInt(Ioctl.TIOCGWINSZ), UInt(bitPattern: native.pointer)) == 0)
        #expect(native[0, as: UInt16.self] == 40 && native[2, as: UInt16.self] == 100)
        let back = Buffer(8)
        try pty.master.ioctl(Ioctl.TIOCGWINSZ, back.pointer)
        #expect(back.bytes == native.bytes)
    }

    @Test func termiosThroughAForwardedSlave() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let slave = try client.open("/dev/pts/\(pty.number)", flags: O_RDWR | O_NOCTTY)
        let termios = Buffer(36)
        try slave.ioctl(Ioctl.TCGETS, termios.pointer)
        let native = Buffer(36)
        #expect(paradice_ioctl(pty.slave, UInt(Ioctl.TCGETS), UInt(bitPattern: native.pointer)) == 0)
        #expect(termios.bytes == native.bytes)
        // Raw mode: clear ICANON and ECHO in c_lflag.
        termios[12, as: UInt32.self] &= ~UInt32(0x2 | 0x8)
        try slave.ioctl(Ioctl.TCSETS, termios.pointer)
        #expect(paradice_ioctl(pty.slave, UInt(Ioctl.TCGETS), UInt(bitPattern: native.pointer)) == 0)
        #expect(native[12, as: UInt32.self] & 0xA == 0)
        try slave.close()
    }

    @Test func bytesAndFionreadAndPoll() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        // Nothing to read yet: poll times out.
        #expect(try pty.master.poll(events: Int16(POLLIN), timeout: 50) == 0)
        // Native slave → forwarded master.
        #expect(write(pty.slave, "hello", 5) == 5)
        #expect(try pty.master.poll(events: Int16(POLLIN), timeout: 2000) & Int16(POLLIN) != 0)
        let count = Buffer(4)
        try pty.master.ioctl(Ioctl.FIONREAD, count.pointer)
        #expect(count[0, as: Int32.self] == 5)
        #expect(String(decoding: try pty.master.read(count: 100), as: UTF8.self) == "hello")
        // Forwarded master → native slave.
        #expect(try pty.master.write(Array("ping\n".utf8)) == 5)
        var incoming = [UInt8](repeating: 0, count: 64)
        var p = pollfd(fd: pty.slave, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 2000) == 1)
        let n = read(pty.slave, &incoming, 64)
        #expect(String(decoding: incoming[0..<max(n, 0)], as: UTF8.self) == "ping\n")
    }

    @Test func watchPushesAnEventWhenDataArrives() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let events = EventLog()
        client.onEvent = { handle, revents in events.add(handle, revents) }
        try pty.master.watch(events: Int16(POLLIN))
        #expect(write(pty.slave, "x", 1) == 1)
        // Events are read by whichever call is waiting: keep one in flight until it shows up.
        let deadline = Date().addingTimeInterval(3)
        while events.isEmpty && Date() < deadline { _ = try pty.master.poll(events: Int16(POLLIN), timeout: 20) }
        #expect(events.first?.0 == pty.master.handle)
        #expect((events.first?.1 ?? 0) & Int16(POLLIN) != 0)
    }

    @Test func fasyncPushesAnEventEachTimeTheFileBecomesReady() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let events = EventLog()
        client.onEvent = { handle, revents in events.add(handle, revents) }
        try pty.master.setAsync(true)
        #expect(write(pty.slave, "a", 1) == 1)
        let deadline = Date().addingTimeInterval(3)
        while events.count == 0 && Date() < deadline { _ = try pty.master.poll(events: Int16(POLLPRI), timeout: 20) }
        #expect(events.count >= 1)
        _ = try pty.master.read(count: 8)   // using the file re-arms it
        #expect(write(pty.slave, "b", 1) == 1)
        let again = Date().addingTimeInterval(3)
        while events.count < 2 && Date() < again { _ = try pty.master.poll(events: Int16(POLLPRI), timeout: 20) }
        #expect(events.count >= 2)
        try pty.master.setAsync(false)
    }

    @Test func seekSyncAndPositionalIoGiveTheDriversErrno() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        #expect(throws: Errno(ESPIPE)) { try pty.master.seek(0) }
        #expect(throws: Errno(ESPIPE)) { try pty.master.pread(count: 4, offset: 0) }
        #expect(throws: Errno(ESPIPE)) { try pty.master.pwrite([1], offset: 0) }
        #expect(throws: Errno(EINVAL)) { try pty.master.fsync() }
        // O_NONBLOCK set through F_SETFL: an empty read is EAGAIN, not a wait.
        try pty.master.setFlags(O_NONBLOCK)
        #expect(throws: Errno(EAGAIN)) { try pty.master.read(count: 4) }
    }

    @Test func unexportedPathsAndUnknownIoctls() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        #expect(throws: Errno(ENOENT)) { try client.open("/etc/passwd", flags: O_RDONLY) }
        let master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        #expect(throws: Errno(ENOTTY)) { try master.ioctl(0x5499) }
        #expect(backend.waitUntil { backend.log.contains("unknown ioctl") })
        #expect(throws: Errno(EBADF)) { try client.adopt(handle: 9999).ioctl(Ioctl.TIOCGWINSZ, Buffer(8).pointer) }
        #expect(throws: Errno(EFAULT)) { try master.ioctl(Ioctl.TIOCSWINSZ, UnsafeMutableRawPointer(bitPattern: 0x10)) }
    }
}

final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(UInt32, Int16)] = []
    func add(_ h: UInt32, _ r: Int16) { lock.lock(); entries.append((h, r)); lock.unlock() }
    var isEmpty: Bool { lock.lock(); defer { lock.unlock() }; return entries.isEmpty }
    var first: (UInt32, Int16)? { lock.lock(); defer { lock.unlock() }; return entries.first }
    var count: Int { lock.lock(); defer { lock.unlock() }; return entries.count }
}
