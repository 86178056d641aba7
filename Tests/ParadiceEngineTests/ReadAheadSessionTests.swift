import CParadice
import Foundation
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The backend's side of PD_READ_AHEAD, frame by frame: what a poll or a level watch of a readable file
/// brings, how much, of which files, and that the file's own reads stay as they were.
@Suite("Session: read-ahead", .serialized)
struct ReadAheadSessionTests {
    /// The bytes a reply read ahead (pd_read_ahead_done's), with the reply's result.
    private func readAhead(_ frame: Frame?) throws -> (result: Int64, bytes: [UInt8]) {
        let frame = try #require(frame)
        var reader = BodyReader(frame.body)
        let reply = try reader.read(pd_reply.self)
        let done = try reader.read(pd_read_ahead_done.self)
        return (reply.result, Array(try reader.readBytes(Int(done.length))))
    }

    private func pollBody(_ readMax: UInt32, timeout: Int32) -> [UInt8] {
        bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: timeout)) + bytes(of: pd_read_ahead(read_max: readMax, reserved: 0))
    }

    private func watchBody(_ readMax: UInt32) -> [UInt8] {
        bytes(of: pd_watch(events: Int32(POLLIN), timeout_ms: -1, level: Int32(POLLIN), reserved: 0))
            + bytes(of: pd_read_ahead(read_max: readMax, reserved: 0))
    }

    /// A pty master opened blocking: the slave's bytes come with the poll that finds them, no more than asked,
    /// the rest with the next level watch; then nothing is ready and the watch is armed. The master is still
    /// blocking afterwards: a read sleeps until the slave writes.
    @Test func aReadableTtyBringsItsBytesInOrder() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (master, error) = guest.open("/dev/ptmx")
        try #require(error == 0)
        let stat = try #require(guest.call(PD_FSTAT, handle: master))
        var statReader = BodyReader(stat.body)
        _ = try statReader.read(pd_reply.self)
        #expect(try statReader.read(pd_stat.self).read_unit == 1)   // tty.spec: read stream
        let argument: UInt64 = 0x1000
        func ioctl(_ command: UInt32) throws -> [UInt8] {
            let body = bytes(of: pd_ioctl(command: command, region_count: 1, argument: argument))
                + bytes(of: pd_region(address: argument, length: 4, reserved: 0)) + [0, 0, 0, 0, 0, 0, 0, 0]
            let frame = try #require(guest.call(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: master, body: body))
            var reader = BodyReader(frame.body)
            try #require(try reader.read(pd_reply.self).error == 0)
            let done = try reader.read(pd_ioctl_done.self)
            guard done.region_count > 0 else { return [] }
            _ = try reader.read(pd_region.self)
            return Array(try reader.readBytes(4))
        }
        _ = try ioctl(Ioctl.TIOCSPTLCK)
        let number = try ioctl(Ioctl.TIOCGPTN).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        let slave = Glibc.open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        try #require(slave >= 0)
        defer { Glibc.close(slave) }
        #expect(write(slave, "hello world", 11) == 11)

        let first = try readAhead(guest.call(PD_POLL, flags: UInt16(PD_READ_AHEAD), handle: master, body: pollBody(4, timeout: 10_000)))
        #expect(first.result & Int64(POLLIN) != 0 && first.bytes == Array("hell".utf8), "\(first)")
        let rest = try readAhead(guest.call(PD_WATCH, flags: UInt16(PD_WATCH_LEVEL | PD_READ_AHEAD), handle: master, body: watchBody(1 << 20)))
        #expect(rest.result & Int64(POLLIN) != 0 && rest.bytes == Array("o world".utf8), "\(rest)")
        let none = try readAhead(guest.call(PD_WATCH, flags: UInt16(PD_WATCH_LEVEL | PD_READ_AHEAD), handle: master, body: watchBody(64)))
        #expect(none.result == 0 && none.bytes.isEmpty, "\(none)")

        // Still blocking: the read waits in the driver for the slave's next bytes (and the armed watch fires).
        let request = guest.newRequest()
        #expect(guest.send(RawGuest.frame(op: PD_READ.code, request: request, handle: master, body: bytes(of: pd_io(count: 64, offset: 0)))))
        #expect(write(slave, "later", 5) == 5)
        var answer: Frame?
        while let frame = guest.receive(), answer == nil { if frame.request == request { answer = frame } }
        let read = try #require(answer)
        #expect(RawGuest.decode(read)?.result == 5 && Array(read.body.dropFirst(MemoryLayout<pd_reply>.size)) == Array("later".utf8))
    }

    /// A file of no read shape is never read ahead, readable or not; its pd_stat says so.
    @Test func aFileWithoutAReadShapeBringsNothing() throws {
        let backend = try BackendProcess(devices: ["/dev/zero"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (zero, error) = guest.open("/dev/zero", flags: O_RDONLY)
        try #require(error == 0)
        let polled = try readAhead(guest.call(PD_POLL, flags: UInt16(PD_READ_AHEAD), handle: zero, body: pollBody(64, timeout: 0)))
        #expect(polled.result & Int64(POLLIN) != 0 && polled.bytes.isEmpty)
        let watched = try readAhead(guest.call(PD_WATCH, flags: UInt16(PD_WATCH_LEVEL | PD_READ_AHEAD), handle: zero, body: watchBody(64)))
        #expect(watched.result & Int64(POLLIN) != 0 && watched.bytes.isEmpty)
    }

    /// The flag without its pd_read_ahead is a malformed frame: the session ends.
    @Test func theFlagWithoutItsBodyEndsTheSession() throws {
        let backend = try BackendProcess(devices: ["/dev/zero"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (zero, error) = guest.open("/dev/zero", flags: O_RDONLY)
        try #require(error == 0)
        #expect(guest.send(RawGuest.frame(op: PD_POLL.code, flags: UInt16(PD_READ_AHEAD), request: guest.newRequest(), handle: zero,
                                          body: bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: 0)))))
        #expect(guest.closedByBackend())
    }
}
