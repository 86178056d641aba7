import CParadice
import Foundation
import ParadiceClient
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real backend for one hostile test, a witness guest that uses it throughout, and what the backend held
/// once the witness was served: after the hostile guest is gone it must hold that again.
final class HostileBench {
    let backend: BackendProcess
    let witness: ParadiceClient
    let witnessPty: ForwardedPty
    private(set) var baseline: Footprint
    /// Threads the backend's pool may keep parked after a burst (WorkerPool's maxIdle).
    static let parkedThreads = 8
    /// Resident memory the allocator may keep after a burst: its arenas and their fragments.
    static let residentSlackKiB = 8 << 10

    init(devices: [String] = ["/dev/ptmx", "/dev/pts/*", "/dev/zero"], tcp: Bool = false, shm: Bool = false,
         sessionLeader: Bool = false, extra: [String] = []) throws {
        backend = try BackendProcess(devices: devices, tcp: tcp, shm: shm, sessionLeader: sessionLeader,
                                     extra: extra + ["--log-level", "info"])
        witness = try backend.connect("witness")
        witnessPty = try ForwardedPty(witness)
        baseline = Footprint(pid: backend.pid)
        try expectServed()
        _ = backend.waitUntil(seconds: 10) {
            // The pool parks its threads, and a new guest's connection closes, a moment after the reply.
            let now = Footprint(pid: backend.pid)
            defer { baseline = now }
            return now.descriptors == baseline.descriptors && now.threads == baseline.threads
        }
    }

    /// Threads and resident memory are meaningless under ThreadSanitizer (its shadow memory, its own
    /// thread): scripts/tsan.sh says so, and then only descriptors must come back.
    static let measuresMemory = ProcessInfo.processInfo.environment["PARADICE_TEST_SANITIZED"] == nil
    /// The crowds (thousands of guests, connections, random frames) are a tenth as large under a
    /// sanitizer, which makes every thread and allocation costly; the ordinary run keeps their full size.
    static let crowd = measuresMemory ? 1 : 10

    var pid: Int32 { backend.pid }
    var now: Footprint { Footprint(pid: backend.pid) }

    /// The witness is still served (an ioctl, and a blocking read a worker answers), and so is a new guest.
    func expectServed(_ context: String = "") throws {
        let ws = Buffer(8)
        try witnessPty.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer)
        #expect(write(witnessPty.slave, "ok", 2) == 2, "\(context)")
        #expect(try witnessPty.master.read(count: 16) == Array("ok".utf8), "\(context)")
        let newcomer = try backend.connect("newcomer")
        let master = try newcomer.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        try master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer)
        newcomer.disconnect()
    }

    /// Waits (polling, up to a generous bound) until the backend holds what it held at the baseline: the
    /// same descriptors, its threads but the pool's parked ones, its memory but the allocator's slack.
    func expectBackToBaseline(_ context: String, peak: Footprint? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let started = Date()
        // A bound for a loaded machine (CI runs beside other tenants and VMs): a backend that settles returns
        // at once; one that holds something never does.
        let settled = backend.waitUntil(seconds: 90) {
            let f = now
            return f.descriptors == baseline.descriptors
                && (!Self.measuresMemory || (f.threads <= baseline.threads + Self.parkedThreads
                                             && f.residentKiB <= baseline.residentKiB + Self.residentSlackKiB))
        }
        let after = now
        print("HostileGuest \(context): baseline \(baseline)\(peak.map { "; peak \($0)" } ?? ""); after \(after)"
              + " (settled in \(String(format: "%.2f", Date().timeIntervalSince(started))) s)")
        #expect(settled, "\(context): \(after), baseline \(baseline); \(settled ? "" : holdings())", sourceLocation: sourceLocation)
        #expect(backend.isRunning, "\(context): the backend died", sourceLocation: sourceLocation)
        try expectServed(context)
    }

    /// What the backend holds, for a failure's message: its descriptors' targets and its threads' wait channels.
    func holdings() -> String {
        let fds = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).sorted().map { fd -> String in
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? "?"
            return "\(fd)→\(target)"
        }
        let threads = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []).map {
            (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/wchan", encoding: .utf8)) ?? "?"
        }
        return "descriptors: \(fds.joined(separator: " ")); threads waiting in: \(threads.sorted().joined(separator: " "))"
    }

    /// The largest footprint seen while `condition` keeps changing it: sampled until two samples agree.
    func peak(seconds: Double = 10) -> Footprint {
        var highest = now
        var previous = now
        _ = backend.waitUntil(seconds: seconds) {
            usleep(100_000)
            let f = now
            if f.residentKiB > highest.residentKiB { highest.residentKiB = f.residentKiB }
            highest.threads = max(highest.threads, f.threads)
            highest.descriptors = max(highest.descriptors, f.descriptors)
            defer { previous = f }
            return abs(f.residentKiB - previous.residentKiB) < 512 && f.threads == previous.threads
        }
        return highest
    }

    func logCount(_ text: String) -> Int { backend.log.components(separatedBy: text).count - 1 }
}

/// A pty opened through raw frames: the backend's handle of the master, and the slave opened here.
func rawPty(_ guest: RawGuest) throws -> (handle: UInt32, slave: Int32) {
    let (handle, error) = guest.open("/dev/ptmx")
    guard error == 0 else { throw Errno(error) }
    let argument: UInt64 = 0x10_0000
    // TIOCGPTN: an out-only int, named as an out region (no bytes); the reply carries it.
    let ask = bytes(of: pd_ioctl(command: Ioctl.TIOCGPTN, region_count: 1, argument: argument))
        + bytes(of: pd_region(address: argument, length: 4, reserved: PD_REGION_OUT))
    guard let reply = guest.call(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: handle, body: ask) else { throw Errno.ioError }
    var reader = BodyReader(reply.body)
    let r = try reader.read(pd_reply.self)
    guard r.error == 0 else { throw Errno(r.error) }
    let done = try reader.read(pd_ioctl_done.self)
    guard done.region_count == 1 else { throw Errno.ioError }
    _ = try reader.read(pd_region.self)
    let number = try reader.read(UInt32.self)
    // TIOCSPTLCK with 0: unlock.
    let unlock = bytes(of: pd_ioctl(command: Ioctl.TIOCSPTLCK, region_count: 1, argument: argument))
        + bytes(of: pd_region(address: argument, length: 4, reserved: 0)) + [0, 0, 0, 0, 0, 0, 0, 0]
    guard guest.result(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: handle, body: unlock)?.error == 0 else { throw Errno.ioError }
    let slave = Glibc.open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
    guard slave >= 0 else { throw Errno.current }
    return (handle, slave)
}

// In the serialized chain of the driver-VM suites: its thousands of connections, forks and floods would
// otherwise run beside their timing comparisons with native and starve the VM (DriverVMSuites).
extension DriverVMSuites {
@Suite("HostileGuest", .serialized)
struct HostileGuestTests {
    /// The body sizes of each op's structure.
    static let structured: [(pd_op, Int)] = [
        (PD_OPEN, MemoryLayout<pd_open>.size), (PD_READ, MemoryLayout<pd_io>.size), (PD_PREAD, MemoryLayout<pd_io>.size),
        (PD_WRITE, MemoryLayout<pd_io>.size), (PD_PWRITE, MemoryLayout<pd_io>.size), (PD_IOCTL, MemoryLayout<pd_ioctl>.size),
        (PD_POLL, MemoryLayout<pd_poll>.size), (PD_WATCH, MemoryLayout<pd_poll>.size), (PD_LLSEEK, MemoryLayout<pd_llseek>.size),
        (PD_SETFL, MemoryLayout<pd_flags>.size), (PD_FASYNC, MemoryLayout<pd_flags>.size), (PD_MMAP, MemoryLayout<pd_mmap>.size),
        (PD_MUNMAP, MemoryLayout<pd_munmap>.size), (PD_INTERRUPT, MemoryLayout<pd_interrupt_request>.size),
    ]

    @Test func truncatedFramesAndBodiesEndOnlyTheirOwnSession() throws {
        let bench = try HostileBench()
        // A body shorter than its op's structure: the session ends, with one line naming the op.
        for (op, size) in Self.structured {
            let guest = try RawGuest(bench.backend.unixEndpoint)
            #expect(guest.hello())
            let (handle, error) = guest.open("/dev/ptmx")
            #expect(error == 0)
            guest.send(RawGuest.frame(op: op.code, request: 7, handle: handle, body: [UInt8](repeating: 0xA5, count: size - 1)))
            #expect(guest.closedByBackend(), "op \(op.rawValue)")
        }
        #expect(bench.backend.waitUntil { bench.logCount("malformed frame: session ended") == Self.structured.count })
        #expect(bench.backend.log.contains("op=PD_MMAP"))
        #expect(bench.backend.log.contains("reason=body too short for pd_mmap"))
        // A short handshake, and frames cut off by the guest's end: header halves, bodies halves.
        let shortHello = try RawGuest(bench.backend.unixEndpoint)
        shortHello.send(RawGuest.frame(op: PD_HELLO.code, request: 0, body: [1, 2, 3]))
        #expect(shortHello.closedByBackend())
        for cut in [1, 8, 15, 16, 17, 40] {
            let guest = try RawGuest(bench.backend.unixEndpoint)
            #expect(guest.hello())
            let whole = RawGuest.frame(op: PD_OPEN.code, request: 3, body: bytes(of: pd_open(flags: O_RDWR, mode: 0)) + Array("/dev/ptmx".utf8))
            guest.send(Array(whole.prefix(cut)))
        }
        try bench.expectBackToBaseline("truncated frames")
    }

    @Test func countsAndLengthsPastTheFrameEndTheSessionOverTCPToo() throws {
        let bench = try HostileBench(tcp: true)
        let region = MemoryLayout<pd_region>.size
        let cases: [(name: String, flags: UInt16, body: [UInt8])] = [
            // The frame that aborted the backend: a u32 region count and nothing after it.
            ("4G regions", 0, bytes(of: pd_ioctl(command: Ioctl.TIOCGWINSZ, region_count: .max, argument: 0x1000))),
            ("a region longer than the frame", 0, bytes(of: pd_ioctl(command: Ioctl.TIOCSWINSZ, region_count: 1, argument: 0x1000))
                + bytes(of: pd_region(address: 0x1000, length: .max, reserved: 0)) + [1, 2, 3, 4, 5, 6, 7, 8]),
            ("more regions than any plan", 0, bytes(of: pd_ioctl(command: Ioctl.TIOCSWINSZ, region_count: 5000, argument: 0x1000))
                + [UInt8](repeating: 0, count: 5000 * region)),
            ("4G mapping ranges", UInt16(PD_IOCTL_MAPPINGS), bytes(of: pd_ioctl(command: Ioctl.TIOCGWINSZ, region_count: 0, argument: 0x1000))
                + bytes(of: pd_mapping_count(count: .max, reserved: 0))),
            ("a mapping range longer than the frame", UInt16(PD_IOCTL_MAPPINGS),
                bytes(of: pd_ioctl(command: Ioctl.TIOCGWINSZ, region_count: 0, argument: 0x1000)) + bytes(of: pd_mapping_count(count: 1, reserved: 0))
                + bytes(of: pd_mapping_range(mapping: 1, length: 1 << 30, offset: 0))),
        ]
        for endpoint in [bench.backend.endpoint, bench.backend.unixEndpoint] {
            for c in cases {
                let guest = try RawGuest(endpoint)
                #expect(guest.hello())
                let (handle, error) = guest.open("/dev/ptmx")
                #expect(error == 0)
                guest.send(RawGuest.frame(op: PD_IOCTL.code, flags: c.flags, request: 9, handle: handle, body: c.body))
                #expect(guest.closedByBackend(), "\(c.name) over \(endpoint)")
            }
        }
        // PD_MUNMAP's ranges, on a real mapping.
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let zero = guest.open("/dev/zero")
        let mapping = guest.result(PD_MMAP, handle: zero.handle, body: bytes(of: pd_mmap(offset: 0, length: 8192, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED)))
        #expect(mapping?.error == 0)
        guest.send(RawGuest.frame(op: PD_MUNMAP.code, request: 11, handle: zero.handle,
                                  body: bytes(of: pd_munmap(mapping: UInt32(mapping?.result ?? 0), reserved: 0)) + bytes(of: pd_mapping_count(count: .max, reserved: 0))))
        #expect(guest.closedByBackend())
        // A header announcing more than the largest frame.
        let huge = try RawGuest(bench.backend.endpoint)
        #expect(huge.hello())
        huge.send(RawGuest.frame(op: PD_WRITE.code, request: 1, handle: 1, body: [], length: .max))
        #expect(huge.closedByBackend())
        #expect(bench.backend.waitUntil { bench.logCount("malformed frame: session ended") == 2 * cases.count + 2 })
        #expect(bench.backend.log.contains("over the limit"))
        try bench.expectBackToBaseline("counts past the frame")
    }

    @Test func mirrorBytesOutsideTheirMappingAreDropped() throws {
        // A file served as a tty: its TIOCGWINSZ plans, and the driver answers ENOTTY after the mirror
        // bytes went in. Its shared mapping shows what reached it, in the file.
        let path = NSTemporaryDirectory() + "paradice-mirror-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 8192)))
        defer { unlink(path) }
        let bench = try HostileBench(devices: ["/dev/ptmx", "/dev/pts/*", path + "=tty"])
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let (handle, error) = guest.open(path)
        #expect(error == 0)
        let mapped = guest.result(PD_MMAP, handle: handle, body: bytes(of: pd_mmap(offset: 0, length: 8192, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED)))
        #expect(mapped?.error == 0)
        let mapping = UInt32(truncatingIfNeeded: mapped?.result ?? 0)
        let ranges: [(mapping: UInt32, offset: UInt64, bytes: [UInt8])] = [
            (mapping, 8, Array("abcd".utf8)),                         // inside: written
            (mapping, 8190, [0xCC, 0xCC, 0xCC, 0xCC]),                // across the end
            (mapping, 1 << 63, [0xCC]),                               // negative as an Int
            (mapping, .max - 1, [0xCC, 0xCC, 0xCC, 0xCC]),            // wraps around
            (mapping, 0, [UInt8](repeating: 0xCC, count: 8200)),      // longer than the mapping
            (77, 0, [0xCC]),                                          // no such mapping
        ]
        var body = bytes(of: pd_ioctl(command: Ioctl.TIOCGWINSZ, region_count: 1, argument: 0x1000))
            + bytes(of: pd_region(address: 0x1000, length: 8, reserved: PD_REGION_OUT))
            + bytes(of: pd_mapping_count(count: UInt32(ranges.count), reserved: 0))
        for r in ranges {
            body += bytes(of: pd_mapping_range(mapping: r.mapping, length: UInt32(r.bytes.count), offset: r.offset)) + r.bytes
            while body.count % 8 != 0 { body.append(0) }
        }
        #expect(guest.result(PD_IOCTL, flags: UInt16(PD_IOCTL_MAPPINGS), handle: handle, body: body)?.error == ENOTTY)
        var expected = [UInt8](repeating: 0, count: 8192)
        expected.replaceSubrange(8..<12, with: Array("abcd".utf8))
        #expect(FileManager.default.contents(atPath: path).map { [UInt8]($0) } == expected)
        // The session goes on.
        #expect(guest.result(PD_FSTAT, handle: handle)?.error == 0)
    }

    @Test func mmapsTheSpecRefusesGetItsErrnoAndOthersMap() throws {
        // A file served as an ALSA device: alsa.spec refuses mmaps from the lowest status/control offset
        // on (ENXIO, before anything is mapped); below it the file maps.
        let path = NSTemporaryDirectory() + "paradice-mmap-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 8192)))
        defer { unlink(path) }
        let bench = try HostileBench(devices: ["/dev/ptmx", "/dev/pts/*", path + "=alsa"])
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let (handle, error) = guest.open(path)
        #expect(error == 0)
        func map(_ offset: UInt64, _ length: UInt64 = 4096) -> Int32? {
            guest.result(PD_MMAP, handle: handle, body: bytes(of: pd_mmap(offset: offset, length: length, prot: PROT_READ, flags: MAP_SHARED)))?.error
        }
        #expect(map(0) == 0)
        #expect(map(0x8000_0000 - 4096) == 0)
        #expect(map(0x8000_0000) == ENXIO)          // SNDRV_PCM_MMAP_OFFSET_STATUS_OLD
        #expect(map(0x8300_0000, 8192) == ENXIO)    // CONTROL_NEW
        #expect(map(1 << 40) == ENXIO)
        #expect(guest.result(PD_FSTAT, handle: handle)?.error == 0)
    }

    @Test func unknownOpsAndBadOrStaleHandlesGetTheErrnoOfALocalCall() throws {
        let bench = try HostileBench()
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        // Ops no frontend sends: ENOSYS, and the session goes on.
        for op: UInt16 in [0, 25, 99, 0x7F, PD_REPLY.code, PD_NEED.code, PD_EVENT.code, 0xFFFF, PD_HELLO.code] {
            guest.send(RawGuest.frame(op: op, request: 5, body: [1, 2, 3]))
            let reply = guest.receive()
            #expect(reply.flatMap(RawGuest.decode)?.error == ENOSYS, "op \(op)")
        }
        // A focus on a name no guest has, an empty one, or one with a NUL: ENOENT, ENOENT, EINVAL; the session goes on.
        for (body, error) in [([UInt8](repeating: 0xFF, count: 300), ENOENT), ([], ENOENT), ([0x61, 0, 0x62], EINVAL)] {
            guest.send(RawGuest.frame(op: PD_FOCUS.code, request: 6, body: body))
            #expect(guest.receive().flatMap(RawGuest.decode)?.error == error, "\(body.prefix(4))")
        }
        // Handles this guest never had, and one it closed: EBADF for every op on a file.
        let (stale, _) = guest.open("/dev/ptmx")
        #expect(guest.result(PD_CLOSE, handle: stale)?.error == 0)
        #expect(guest.result(PD_CLOSE, handle: stale)?.error == EBADF)
        let io = bytes(of: pd_io(count: 8, offset: 0))
        let onAFile: [(pd_op, [UInt8])] = [
            (PD_READ, io), (PD_PREAD, io), (PD_WRITE, io + [1, 2]), (PD_FSTAT, []), (PD_FSYNC, []), (PD_SHARE, []),
            (PD_IOCTL, bytes(of: pd_ioctl(command: Ioctl.TIOCGWINSZ, region_count: 0, argument: 0x1000))),
            (PD_POLL, bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: 0))), (PD_WATCH, bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: 0))),
            (PD_LLSEEK, bytes(of: pd_llseek(offset: 0, whence: SEEK_SET, reserved: 0))), (PD_SETFL, bytes(of: pd_flags(flags: 0, reserved: 0))),
            (PD_FASYNC, bytes(of: pd_flags(flags: 1, reserved: 0))),
            (PD_MMAP, bytes(of: pd_mmap(offset: 0, length: 4096, prot: PROT_READ, flags: MAP_SHARED))),
        ]
        for handle: UInt32 in [0, stale, 4242, .max] {
            for (op, body) in onAFile {
                #expect(guest.result(op, handle: handle, body: body)?.error == EBADF, "op \(op.rawValue) handle \(handle)")
            }
        }
        #expect(guest.result(PD_MUNMAP, body: bytes(of: pd_munmap(mapping: 77, reserved: 0)))?.error == EINVAL)
        // Paths no local open accepts, and dots that a pattern's `*` would match.
        #expect(guest.open("").error == ENOENT)
        #expect(guest.open("/dev/" + String(repeating: "p", count: 5000)).error == ENAMETOOLONG)
        #expect(guest.open("/dev/ptmx\0/etc/passwd").error == EINVAL)
        #expect(guest.open("/dev/pts/..", flags: O_RDONLY).error == ENOENT)
        #expect(guest.open("/dev/pts/.", flags: O_RDONLY).error == ENOENT)
        #expect(guest.result(PD_READLINK, body: [])?.error == ENOENT)
        #expect(guest.result(PD_LISTDIR, body: Array("/dev\0".utf8))?.error == EINVAL)
        // Bad values inside a well-formed mapping request.
        let zero = guest.open("/dev/zero")
        #expect(guest.result(PD_MMAP, handle: zero.handle, body: bytes(of: pd_mmap(offset: 0, length: 0, prot: PROT_READ, flags: MAP_SHARED)))?.error == EINVAL)
        #expect(guest.result(PD_MMAP, handle: zero.handle, body: bytes(of: pd_mmap(offset: .max - 10, length: 4096, prot: PROT_READ, flags: MAP_SHARED)))?.error == EINVAL)
        // Guest addresses at the end of the address space, next to a region the guest did send: the
        // backend asks for the memory (or faults it) and never wraps around while looking for it.
        let (pty, _) = guest.open("/dev/ptmx")
        for argument: UInt64 in [.max - 7, .max - 3, .max, 0x8000_0000_0000 - 4] {
            let body = bytes(of: pd_ioctl(command: Ioctl.TIOCSWINSZ, region_count: 1, argument: argument))
                + bytes(of: pd_region(address: 0, length: 8, reserved: 0)) + [UInt8](repeating: 0, count: 8)
            let reply = guest.call(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: pty, body: body)
            #expect(reply?.op == PD_NEED.code || reply.flatMap(RawGuest.decode)?.error == EFAULT, "argument \(argument)")
        }
        // After all of it the session still works: nothing above was a reason to end it.
        let (handle, error) = guest.open("/dev/ptmx")
        #expect(error == 0)
        #expect(guest.result(PD_FSTAT, handle: handle)?.error == 0)
        #expect(bench.logCount("malformed frame") == 0)
        guest.send(RawGuest.frame(op: PD_BYE.code, request: guest.newRequest()))
        #expect(guest.closedByBackend())
        try bench.expectBackToBaseline("unknown ops and bad handles")
    }

    /// PD_FORK's tickets: one is claimed once, with its table's token, and holds the files the parent held
    /// when it was issued; one nobody claims is dropped after --fork-timeout; a process has at most 64 out.
    @Test func forkTicketsAreClaimedOnceWithTheirTokenAndExpire() throws {
        let bench = try HostileBench(extra: ["--fork-timeout", "2"])
        let parent = try RawGuest(bench.backend.unixEndpoint)
        let session = try #require(parent.handshake("parent"))
        let (handle, error) = parent.open("/dev/ptmx")
        try #require(error == 0)
        let ticket = try #require(parent.result(PD_FORK))
        #expect(ticket.error == 0 && ticket.result > 0 && ticket.result != Int64(session.session))
        let id = UInt32(truncatingIfNeeded: ticket.result)
        // The file the parent closes after the fork stays the child's.
        #expect(parent.result(PD_CLOSE, handle: handle)?.error == 0)
        // Another token, or a guessed ticket: refused, and the ticket is still there for the child.
        #expect(try RawGuest(bench.backend.unixEndpoint).handshake(join: id, token: session.token ^ 1) == nil)
        #expect(try RawGuest(bench.backend.unixEndpoint).handshake(join: id &+ 1000, token: session.token) == nil)
        let child = try RawGuest(bench.backend.unixEndpoint)
        #expect(child.handshake("child", join: id, token: session.token) != nil)
        #expect(child.result(PD_FSTAT, handle: handle)?.error == 0)
        #expect(try RawGuest(bench.backend.unixEndpoint).handshake(join: id, token: session.token) == nil, "claimed twice")
        // Without a ticket (a child forked past the frontend's fork), a child joins the live session as it is.
        let late = try RawGuest(bench.backend.unixEndpoint)
        #expect(late.handshake("late child", join: session.session, token: session.token) != nil)
        #expect(late.result(PD_FSTAT, handle: handle)?.error == EBADF)
        // A ticket no child claims: its references go after the timeout.
        let (second, _) = parent.open("/dev/ptmx")
        let unclaimed = try #require(parent.result(PD_FORK))
        #expect(parent.result(PD_CLOSE, handle: second)?.error == 0)
        #expect(bench.backend.waitUntil(seconds: 20) { bench.backend.log.contains("a forked child did not claim its parent's files: dropped") },
                "\(bench.backend.log)")
        #expect(try RawGuest(bench.backend.unixEndpoint).handshake(join: UInt32(truncatingIfNeeded: unclaimed.result), token: session.token) == nil)
        // At most 64 out at once: EAGAIN after, and the session goes on.
        let errors = (0..<65).map { _ in parent.result(PD_FORK)?.error }
        #expect(errors.prefix(64).allSatisfy { $0 == 0 } && errors.last == EAGAIN, "\(errors)")
        #expect(parent.result(PD_FSTAT, handle: handle)?.error == EBADF)
        try bench.expectServed()
    }

    /// A fork or exec that failed gives its ticket back: the files only it held close at once, no child can
    /// claim it after, and a ticket of another table, or one given back already, is EINVAL.
    @Test func aForkTicketGivenBackReleasesItsFiles() throws {
        let bench = try HostileBench()
        let parent = try RawGuest(bench.backend.unixEndpoint)
        let session = try #require(parent.handshake("parent"))
        let pty = try rawPty(parent)
        defer { close(pty.slave) }
        let ticket = try #require(parent.result(PD_FORK))
        try #require(ticket.error == 0)
        let id = UInt32(truncatingIfNeeded: ticket.result)
        #expect(parent.result(PD_CLOSE, handle: pty.handle)?.error == 0)
        var slave = pollfd(fd: pty.slave, events: Int16(POLLIN), revents: 0)
        #expect(poll(&slave, 1, 200) == 0, "the ticket holds the master")
        let other = try RawGuest(bench.backend.unixEndpoint)
        #expect(other.hello())
        #expect(other.result(PD_FORK, handle: id)?.error == EINVAL, "another table's ticket")
        #expect(parent.result(PD_FORK, handle: id)?.error == 0)
        #expect(poll(&slave, 1, 10_000) == 1 && slave.revents & Int16(POLLHUP) != 0, "the master closed with the ticket")
        #expect(parent.result(PD_FORK, handle: id)?.error == EINVAL, "given back twice")
        #expect(try RawGuest(bench.backend.unixEndpoint).handshake(join: id, token: session.token) == nil)
        try bench.expectServed()
    }

    /// A ticket outlives its session, so unclaimed ones count with the sessions toward --max-sessions: a
    /// guest that opens, forks and goes, again and again, holds no more than that many sessions could.
    @Test func unclaimedForkTicketsCountAsSessions() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"], extra: ["--max-sessions", "4"])
        func forking() throws -> (RawGuest, Int32?) {
            let guest = try RawGuest(backend.unixEndpoint)
            #expect(guest.hello())
            _ = guest.open("/dev/ptmx")
            return (guest, guest.result(PD_FORK)?.error)
        }
        // Sessions 1 and 2 get a ticket each; the third session would make five of four.
        var guests = [try forking(), try forking(), try forking()]
        #expect(guests.map(\.1) == [0, 0, EAGAIN], "\(backend.log)")
        // The first two go, their tickets stay: a fourth guest's PD_FORK is EAGAIN still.
        guests.removeFirst(2)
        let fourth = try forking()
        #expect(fourth.1 == EAGAIN, "\(backend.log)")
        _ = guests
    }

    @Test func hugeReadCountsReserveButDoNotTakeMemory() throws {
        let bench = try HostileBench()
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let pty = try rawPty(guest)
        defer { close(pty.slave) }
        // Reads of 2^64 bytes on a blocking pty with nothing to read: each is capped at what a reply can
        // carry, the budget admits a few, the rest are EAGAIN at once.
        var requests: [UInt32] = []
        for _ in 0..<20 {
            let request = guest.newRequest()
            requests.append(request)
            guest.send(RawGuest.frame(op: PD_READ.code, request: request, handle: pty.handle, body: bytes(of: pd_io(count: .max, offset: 0))))
        }
        var refused = 0
        while refused < 19, let frame = guest.receive(seconds: 5) {
            if RawGuest.decode(frame)?.error == EAGAIN { refused += 1 }
        }
        #expect(refused == 19)   // 64 MiB of reads in flight: the first read (80 MiB) always passes, then none
        let peak = bench.peak()
        if HostileBench.measuresMemory { #expect(peak.residentKiB < bench.baseline.residentKiB + HostileBench.residentSlackKiB, "\(peak)") }
        #expect(write(pty.slave, "data", 4) == 4)
        let answer = guest.receive()
        #expect(answer.flatMap(RawGuest.decode)?.result == 4)
        #expect(answer.map { Array($0.body.suffix(4)) } == Array("data".utf8))
        #expect(bench.backend.log.contains("limit=read bytes in flight"))
        guest.send(RawGuest.frame(op: PD_BYE.code, request: guest.newRequest()))
        #expect(guest.closedByBackend())
        try bench.expectBackToBaseline("huge read counts", peak: peak)
    }

    @Test func anIoctlNeedRoundDrivenForeverLeavesTheBackendBounded() throws {
        let bench = try HostileBench()
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let (handle, _) = guest.open("/dev/ptmx")
        // TIOCSWINSZ reads 8 guest bytes the guest never sends: each resend (none, or the wrong address) is
        // asked again, for ever. Each round is answered and costs nothing once answered.
        var needs = 0
        for round in 0..<10_000 {
            let wrong = round % 2 == 0 ? [] : bytes(of: pd_region(address: 0x2000, length: 8, reserved: 0)) + [UInt8](repeating: 1, count: 8)
            let body = bytes(of: pd_ioctl(command: Ioctl.TIOCSWINSZ, region_count: round % 2 == 0 ? 0 : 1, argument: 0x1000)) + wrong
            guard let reply = guest.call(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: handle, body: body) else { break }
            if reply.op == PD_NEED.code { needs += 1 }
        }
        #expect(needs == 10_000)
        #expect(guest.result(PD_FSTAT, handle: handle)?.error == 0)
        let peak = bench.now
        guest.send(RawGuest.frame(op: PD_BYE.code, request: guest.newRequest()))
        #expect(guest.closedByBackend())
        try bench.expectBackToBaseline("10,000 NEED rounds", peak: peak)
    }

    @Test func aGuestThatNeverReadsItsRepliesHoldsBoundedMemory() throws {
        let bench = try HostileBench()
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let (zero, error) = guest.open("/dev/zero")
        #expect(error == 0)
        // Reads of 1 MiB each on a blocking file, none of whose replies is read: the backend fills its read
        // budget, then its socket; then it stops reading this guest, whose own sends stop.
        var sent = 0
        while sent < 20_000, guest.send(RawGuest.frame(op: PD_READ.code, request: guest.newRequest(), handle: zero,
                                                       body: bytes(of: pd_io(count: 1 << 20, offset: 0))), wait: false) {
            sent += 1
        }
        let peak = bench.peak()
        print("HostileGuest unread replies: \(sent) reads of 1 MiB sent before the backend stopped reading")
        // The read budget (64 MiB) plus what the sockets and the allocator hold.
        if HostileBench.measuresMemory { #expect(peak.residentKiB <= bench.baseline.residentKiB + (64 << 10) + 2 * HostileBench.residentSlackKiB, "\(peak)") }
        if HostileBench.measuresMemory { #expect(peak.threads <= bench.baseline.threads + 64 + 2, "\(peak)") }   // the session's worker limit
        try bench.expectServed("while a guest does not read")
        shutdown(guest.fd, Int32(SHUT_RDWR))
        try bench.expectBackToBaseline("a guest that never reads", peak: peak)
    }

    @Test func halfFramesHeldOpenCostWhatTheyCarry() throws {
        let bench = try HostileBench()
        // 100 guests announce the largest frame and send 1 KiB of it; one sends 8 MiB of it.
        var guests: [RawGuest] = []
        for i in 0..<101 {
            let guest = try RawGuest(bench.backend.unixEndpoint)
            #expect(guest.hello())
            let carried = i == 100 ? 8 << 20 : 1024
            guest.send(RawGuest.frame(op: PD_WRITE.code, request: 1, handle: 1, body: [UInt8](repeating: 7, count: carried), length: PD_MAX_FRAME))
            guests.append(guest)
        }
        let peak = bench.peak()
        // Per guest: its receive buffer, its body so far, its thread's stack; not the 80 MiB announced.
        if HostileBench.measuresMemory { #expect(peak.residentKiB <= bench.baseline.residentKiB + (48 << 10), "\(peak)") }
        try bench.expectServed("with half-frames held open")
        guests.removeAll()
        try bench.expectBackToBaseline("101 half-frames", peak: peak)
    }

    @Test func thousandsOfConnectionsOpenedAndDropped() throws {
        let bench = try HostileBench()
        var rng = SeededGenerator(seed: 10)
        for batch in 0..<(30 / HostileBench.crowd) {
            var guests: [RawGuest] = []
            for i in 0..<100 {
                let guest = try RawGuest(bench.backend.unixEndpoint)
                switch (batch + i) % 4 {
                case 0: break                                  // connects, says nothing
                case 1: guest.hello()
                case 2: guest.hello(); _ = guest.open("/dev/ptmx")
                default: guest.send((0..<64).map { _ in UInt8.random(in: 0...255, using: &rng) })
                }
                guests.append(guest)
            }
            guests.removeAll()
        }
        try bench.expectBackToBaseline("3,000 connections")
    }

    @Test func aThousandGuestsThatOpenDevicesAndDie() throws {
        let bench = try HostileBench()
        var peak = bench.now
        for _ in 0..<(20 / HostileBench.crowd) {
            var guests: [RawGuest] = []
            for i in 0..<50 {
                let guest = try RawGuest(bench.backend.unixEndpoint)
                #expect(guest.hello("doomed"))
                let (handle, error) = guest.open("/dev/ptmx")
                #expect(error == 0)
                // Half of them die inside a blocking read, which a worker serves.
                if i % 2 == 0 {
                    guest.send(RawGuest.frame(op: PD_READ.code, request: 99, handle: handle, body: bytes(of: pd_io(count: 4096, offset: 0))))
                }
                guests.append(guest)
            }
            let f = bench.now
            if f.descriptors > peak.descriptors { peak = f }
            guests.removeAll()   // dead: no PD_BYE
        }
        try bench.expectBackToBaseline("1,000 guests that died", peak: peak)
        #expect(bench.logCount("closed the guest's files") >= 1000 / HostileBench.crowd)
    }

    @Test func guestsThatDieWhileEventsArePushedToThem() throws {
        let bench = try HostileBench()
        // /dev/zero is always ready: with fasync on, every read re-arms it and the backend pushes an event,
        // so that guests die while their session's watcher is sending.
        for _ in 0..<(500 / HostileBench.crowd) {
            let guest = try RawGuest(bench.backend.unixEndpoint)
            guard guest.hello("eventful") else {
                Issue.record("no handshake: \(bench.backend.log.suffix(3000))")
                break
            }
            let zero = guest.open("/dev/zero", flags: O_RDWR | O_NONBLOCK).handle
            guest.send(RawGuest.frame(op: PD_FASYNC.code, request: guest.newRequest(), handle: zero, body: bytes(of: pd_flags(flags: 1, reserved: 0))))
            for _ in 0..<30 {
                guest.send(RawGuest.frame(op: PD_READ.code, request: guest.newRequest(), handle: zero, body: bytes(of: pd_io(count: 1, offset: 0))))
            }
        }
        try bench.expectBackToBaseline("500 guests that died amid events")
    }

    @Test func aForwardedTerminalNeverBecomesTheBackendsOwn() throws {
        // A backend that leads its session (as under a service manager) and a guest that makes its pty the
        // controlling terminal, then hangs it up: before TIOCSCTTY was refused, the hangup's SIGHUP killed
        // the backend, and the terminal's keyboard signals reached it.
        let bench = try HostileBench(sessionLeader: true)
        #expect(getsid(bench.pid) == bench.pid)
        let guest = try RawGuest(bench.backend.unixEndpoint)
        #expect(guest.hello())
        let pty = try rawPty(guest)
        let number = try #require(FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(pty.slave)").split(separator: "/").last)
        close(pty.slave)
        let slave = guest.open("/dev/pts/\(number)")
        #expect(slave.error == 0)
        for handle in [slave.handle, pty.handle] {
            for (command, argument): (UInt32, UInt64) in [(0x540E, 0), (0x540E, 1), (0x5422, 0), (0x541D, 0)] {   // TIOCSCTTY, TIOCNOTTY, TIOCCONS
                let body = bytes(of: pd_ioctl(command: command, region_count: 0, argument: argument))
                #expect(guest.result(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: handle, body: body)?.error == EPERM)
            }
        }
        #expect(guest.result(PD_CLOSE, handle: pty.handle)?.error == 0)   // the hangup
        #expect(guest.result(PD_FSTAT, handle: slave.handle)?.error == 0)
        shutdown(guest.fd, Int32(SHUT_RDWR))
        try bench.expectBackToBaseline("a hung-up terminal")
    }

    @Test func limitsRefuseWithTheirErrnoAndOneLogLine() throws {
        let bench = try HostileBench(extra: ["--max-sessions", "3", "--max-open-files", "4", "--max-mapped-bytes", "64K",
                                             "--max-requests-in-flight", "4", "--max-workers", "2", "--handshake-timeout", "1"])
        // Sessions: the witness and two more (each admitted once the bench's newcomer has gone); the next
        // connection is answered EUSERS and closed, with one log line.
        func admitted() -> RawGuest? {
            var guest: RawGuest?
            _ = bench.backend.waitUntil(seconds: 10) {
                guest = try? RawGuest(bench.backend.unixEndpoint)
                return guest?.hello() == true
            }
            return guest
        }
        let first = try #require(admitted())
        var second = admitted()
        #expect(second != nil)
        let before = bench.logCount("connection refused: too many sessions")
        let refused = try RawGuest(bench.backend.unixEndpoint)
        #expect(refused.receive().flatMap(RawGuest.decode)?.error == EUSERS)
        #expect(refused.closedByBackend())
        #expect(throws: (any Error).self) { try bench.backend.connect("one too many") }
        #expect(bench.backend.waitUntil { bench.logCount("connection refused: too many sessions") == before + 2 })
        second = nil
        #expect(admitted() != nil)

        // Open files: four, then EMFILE; one closed, one more.
        var handles: [UInt32] = []
        for _ in 0..<4 { handles.append(first.open("/dev/ptmx").handle) }
        #expect(first.open("/dev/ptmx").error == EMFILE)
        #expect(first.open("/dev/zero").error == EMFILE)
        #expect(first.result(PD_CLOSE, handle: handles.removeLast())?.error == 0)
        #expect(first.open("/dev/ptmx").error == 0)
        #expect(bench.logCount("limit=open files") == 1)
        for h in handles { _ = first.result(PD_CLOSE, handle: h) }

        // Mapped bytes: 64 KiB, then ENOMEM; one unmapped, room again.
        let zero = first.open("/dev/zero").handle
        let map = bytes(of: pd_mmap(offset: 0, length: 32 << 10, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED))
        let a = first.result(PD_MMAP, handle: zero, body: map)
        #expect(a?.error == 0)
        #expect(first.result(PD_MMAP, handle: zero, body: map)?.error == 0)
        #expect(first.result(PD_MMAP, handle: zero, body: bytes(of: pd_mmap(offset: 0, length: 4096, prot: PROT_READ, flags: MAP_SHARED)))?.error == ENOMEM)
        #expect(first.result(PD_MUNMAP, body: bytes(of: pd_munmap(mapping: UInt32(a?.result ?? 0), reserved: 0)))?.error == 0)
        #expect(first.result(PD_MMAP, handle: zero, body: map)?.error == 0)
        #expect(bench.logCount("limit=mapped bytes") == 1)

        // Calls in flight: two workers run blocking reads, two more wait for them, the fifth is EAGAIN.
        let pty = try rawPty(first)
        defer { close(pty.slave) }
        var reads: Set<UInt32> = []
        for _ in 0..<5 {
            let request = first.newRequest()
            reads.insert(request)
            first.send(RawGuest.frame(op: PD_READ.code, request: request, handle: pty.handle, body: bytes(of: pd_io(count: 1, offset: 0))))
        }
        let busy = first.receive()
        #expect(busy.flatMap(RawGuest.decode)?.error == EAGAIN)
        reads.remove(busy?.request ?? 0)
        // Each byte written answers one read; the waiting ones then get a worker.
        let deadline = Date().addingTimeInterval(20)
        while !reads.isEmpty && Date() < deadline {
            _ = write(pty.slave, "x", 1)
            if let frame = first.receive(seconds: 0.2), RawGuest.decode(frame)?.result == 1 { reads.remove(frame.request) }
        }
        #expect(reads.isEmpty)
        #expect(bench.logCount("limit=requests in flight") == 1)
        #expect(bench.logCount("limit=worker threads (later calls wait)") == 1)

        // A connection that never says hello does not hold a session for ever.
        let silent = try RawGuest(bench.backend.unixEndpoint)
        #expect(silent.closedByBackend(seconds: 10))
        #expect(bench.backend.log.contains("waited=1 s [ParadiceEngine] connection without a handshake"))
    }

    @Test func randomFramesNeverTakeTheBackendDown() throws {
        // Real traffic to mutate: what a client sends for a pty's setup, its ioctls, reads, writes and polls.
        let recorded = try RecordedTraffic.capture()
        #expect(recorded.count >= 10)
        let bench = try HostileBench(devices: ["/dev/ptmx", "/dev/zero"])
        var rng = SeededGenerator(seed: 0x5EED_0010)
        let opens = recorded.filter { $0.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt16.self) } == PD_OPEN.code }
        let interesting: [UInt32] = [0, 1, 2, 7, 8, 16, 255, 4096, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF]
        let interesting64: [UInt64] = [0, 1, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, .max, .max - 7,
                                       0x8000_0000_0000 - 4, 0x7FFF_FFFF_F000]
        var sentFrames = 0
        var sessions = 0
        var guest: RawGuest?
        while sentFrames < 8000 / HostileBench.crowd {
            if guest == nil {
                guard let next = try? RawGuest(bench.backend.unixEndpoint) else {
                    Issue.record("the backend stopped accepting after \(sentFrames) frames:\n\(bench.backend.log.suffix(12000))")
                    break
                }
                guest = next
                sessions += 1
                guard guest!.hello("random") else { guest = nil; continue }
                // The recorded opens first, so that the recorded handles name files of this session.
                for open in opens where !send(open, to: guest!) { guest = nil; break }
                if guest == nil { continue }
            }
            var frame = recorded[Int.random(in: 0..<recorded.count, using: &rng)]
            let isIoctl = frame.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt16.self) } == PD_IOCTL.code
            switch Int.random(in: 0..<(isIoctl ? 10 : 9), using: &rng) {
            case 9:   // an ioctl's argument at an edge of the address space, its first region next to it or at 0
                let argument = interesting64.randomElement(using: &rng)!
                frame.withUnsafeMutableBytes { $0.storeBytes(of: argument, toByteOffset: Frame.headerSize + 8, as: UInt64.self) }
                if frame.count >= Frame.headerSize + 32 {
                    let address = [0, 1, argument &- 8, argument, argument &+ 8].randomElement(using: &rng)!
                    frame.withUnsafeMutableBytes { $0.storeBytes(of: address, toByteOffset: Frame.headerSize + 16, as: UInt64.self) }
                }
            case 8:   // an address, offset or count of 64 bits at its edges
                if frame.count >= Frame.headerSize + 8 {
                    let slots = (frame.count - Frame.headerSize) / 8
                    let at = Frame.headerSize + 8 * Int.random(in: 0..<slots, using: &rng)
                    frame.withUnsafeMutableBytes { $0.storeBytes(of: interesting64.randomElement(using: &rng)!, toByteOffset: at, as: UInt64.self) }
                }
            case 0:   // flip a few bits anywhere
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let i = Int.random(in: 0..<frame.count, using: &rng)
                    frame[i] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
                }
            case 1:   // cut the body, and say so in the header
                let keep = Int.random(in: Frame.headerSize...frame.count, using: &rng)
                frame = Array(frame.prefix(keep))
                frame.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(keep - Frame.headerSize), toByteOffset: 0, as: UInt32.self) }
            case 2:   // a length that lies
                let lie = Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt32(frame.count - Frame.headerSize) &+ UInt32.random(in: 1...64, using: &rng)
                frame.withUnsafeMutableBytes { $0.storeBytes(of: lie, toByteOffset: 0, as: UInt32.self) }
            case 3:   // an interesting number where a count, length or flag sits
                if frame.count >= Frame.headerSize + 4 {
                    let slots = (frame.count - Frame.headerSize) / 4
                    let at = Frame.headerSize + 4 * Int.random(in: 0..<slots, using: &rng)
                    frame.withUnsafeMutableBytes { $0.storeBytes(of: interesting.randomElement(using: &rng)!, toByteOffset: at, as: UInt32.self) }
                }
            case 4:   // another op, another handle, other flags
                frame.withUnsafeMutableBytes {
                    $0.storeBytes(of: UInt16.random(in: 0...24, using: &rng), toByteOffset: 4, as: UInt16.self)
                    $0.storeBytes(of: UInt16.random(in: 0...3, using: &rng), toByteOffset: 6, as: UInt16.self)
                    $0.storeBytes(of: UInt32.random(in: 0...6, using: &rng), toByteOffset: 12, as: UInt32.self)
                }
            case 5:   // noise
                let length = Int.random(in: 0...256, using: &rng)
                frame = RawGuest.frame(op: UInt16.random(in: 0...24, using: &rng), flags: UInt16.random(in: 0...3, using: &rng), request: 1,
                                       handle: UInt32.random(in: 0...4, using: &rng), body: (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) })
            default: break   // as recorded
            }
            sentFrames += 1
            // A frame whose length lies takes the frames after it for its body: the rest of this session
            // would be one long frame, so the next frames go to a new one.
            let inStep = frame.count >= Frame.headerSize
                && Int(frame.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) == frame.count - Frame.headerSize
            if !send(frame, to: guest!) || !inStep { guest = nil }
        }
        guest = nil
        print("HostileGuest random frames: \(sentFrames) frames over \(sessions) sessions, \(bench.logCount("malformed frame")) malformed")
        #expect(bench.backend.isRunning)
        try bench.expectBackToBaseline("\(sentFrames) random frames")
    }

    /// Sends a frame while reading whatever comes back; false once the backend ended the session.
    private func send(_ frame: [UInt8], to guest: RawGuest) -> Bool {
        var offset = 0
        let deadline = Date().addingTimeInterval(10)
        while offset < frame.count && Date() < deadline {
            let n = frame.withUnsafeBytes { Glibc.send(guest.fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 { offset += n; continue }
            if n < 0 && errno != EAGAIN && errno != EINTR { return false }
            if !drain(guest, wait: 10) { return false }
        }
        return drain(guest, wait: 0)
    }

    /// Reads what arrived (waiting up to `wait` ms for something); false at the end of the connection.
    private func drain(_ guest: RawGuest, wait: Int32) -> Bool {
        var p = pollfd(fd: guest.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, wait) > 0 else { return true }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = recv(guest.fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if n == 0 { return false }
            if n < 0 { return errno == EAGAIN || errno == EINTR }
        }
    }
}
}

/// Frames a real client sent to a real backend, recorded by a relay between them.
enum RecordedTraffic {
    static func capture() throws -> [[UInt8]] {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/zero"])
        let relayPath = backend.folder + "/relay.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in relayPath.utf8.enumerated() { raw[i] = b } }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        listen(listener, 1)
        defer { close(listener) }
        let log = TrafficLog()
        let relay = Thread {
            let client = accept(listener, nil, nil)
            guard client >= 0, let upstream = try? RawGuest(backend.unixEndpoint) else { return }
            var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: upstream.fd, events: Int16(POLLIN), revents: 0)]
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while poll(&fds, 2, 5000) > 0 {
                if fds[0].revents != 0 {
                    let n = recv(client, &chunk, chunk.count, 0)
                    if n <= 0 { break }
                    log.append(chunk[0..<n])
                    _ = upstream.send(Array(chunk[0..<n]))
                }
                if fds[1].revents != 0 {
                    let n = recv(upstream.fd, &chunk, chunk.count, 0)
                    if n <= 0 { break }
                    _ = chunk.withUnsafeBytes { Glibc.send(client, $0.baseAddress!, n, Int32(MSG_NOSIGNAL)) }
                }
            }
            close(client)
            log.finish()
        }
        relay.start()
        do {
            let client = try ParadiceClient.connect("unix:" + relayPath, name: "recorded")
            let pty = try ForwardedPty(client)
            let ws = Buffer(8)
            ws[0, as: UInt16.self] = 24
            try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer)
            try pty.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer)
            let count = Buffer(4)
            try pty.master.ioctl(Ioctl.FIONREAD, count.pointer)
            _ = try pty.master.write(Array("hello\n".utf8))
            _ = write(pty.slave, "back", 4)
            _ = try pty.master.poll(events: Int16(POLLIN), timeout: 1000)
            _ = try pty.master.read(count: 64)
            try pty.master.watch(events: Int16(POLLIN))
            try pty.master.setFlags(O_NONBLOCK)
            _ = try? pty.master.seek(0)
            _ = try? pty.master.fsync()
            let zero = try client.open("/dev/zero", flags: O_RDWR)
            _ = try zero.read(count: 32)
            _ = try zero.pwrite([1, 2, 3], offset: 0)
            try zero.close()
            pty.closeSlave()
            client.disconnect()
        }
        #expect(log.waitFinished())
        return log.frames()
    }
}

final class TrafficLog: @unchecked Sendable {
    private let lock = NSCondition()
    private var bytes: [UInt8] = []
    private var done = false
    func append(_ more: ArraySlice<UInt8>) { lock.lock(); bytes += more; lock.unlock() }
    func finish() { lock.lock(); done = true; lock.broadcast(); lock.unlock() }
    func waitFinished() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let deadline = Date().addingTimeInterval(10)
        while !done && lock.wait(until: deadline) {}
        return done
    }

    /// The stream cut into frames, each header and body.
    func frames() -> [[UInt8]] {
        lock.lock()
        defer { lock.unlock() }
        var out: [[UInt8]] = []
        var at = 0
        while at + Frame.headerSize <= bytes.count {
            let length = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) })
            guard at + Frame.headerSize + length <= bytes.count else { break }
            out.append(Array(bytes[at..<(at + Frame.headerSize + length)]))
            at += Frame.headerSize + length
        }
        return out
    }
}
