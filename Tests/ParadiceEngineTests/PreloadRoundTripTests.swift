import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Round trips an unmodified program's calls take, counted on the wire: a relay between `paradice run` and
/// the backend counts the frontend's frames of each op.
@Suite("round trips of unmodified programs", .serialized)
struct PreloadRoundTripTests {
    /// A descriptor inside an ioctl's argument: the first call learns where it is (PD_NEED names the slot), every
    /// later call of the command sends it translated (PD_IOCTL_SLOTS_AHEAD) and takes one round trip, not two.
    @Test func aKnownDescriptorSlotGoesWithoutANeedRound() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"])
        let program = try compile("irqfdslots", into: backend.folder)
        let relay = try FrameCountingRelay(to: backend.unixEndpoint, at: backend.folder + "/relay.sock")
        var ioctls: [Int] = []
        for calls in [2, 6] {
            let before = relay.count(of: PD_IOCTL.code)
            let result = try paradiceRun(relay.endpoint, [program, String(calls)])
            #expect(result.status == 0, "\(result.errors)")
            // The program sees its own descriptor number after each call, however it was sent.
            #expect(result.output.contains("kept \(calls)"), "\(result.output) \(result.errors)")
            ioctls.append(relay.count(of: PD_IOCTL.code) - before)
        }
        // Four more KVM_IRQFD calls: four more PD_IOCTL frames (eight with a PD_NEED round each).
        #expect(ioctls.count == 2 && ioctls[1] - ioctls[0] == 4, "PD_IOCTL frames for 2 and 6 calls: \(ioctls)")
    }

    /// A poll that finds a pty master (a `read stream` class) readable brings its bytes (PD_READ_AHEAD): the
    /// program's reads that follow, smaller than what came, take no round trip, and its later polls none
    /// while bytes are left. What it reads, and the hangup after, is what it reads natively.
    @Test func aPollThatFindsBytesBringsThem() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"])
        let program = try compile("readahead", into: backend.folder)
        let relay = try FrameCountingRelay(to: backend.unixEndpoint, at: backend.folder + "/relay.sock")
        var trips: [Int] = []
        for rounds in [2, 6] {
            let native = try run(program, ["pty", String(rounds)])
            #expect(native.status == 0 && native.output.contains("hangup poll 1 POLLHUP, read -1 Input/output error"), "\(native.output)")
            let programTrips = { relay.count(of: PD_POLL.code) + relay.count(of: PD_READ.code) - relay.topUps() }
            let before = programTrips()
            let forwarded = try paradiceRun(relay.endpoint, [program, "pty", String(rounds)])
            #expect(forwarded.status == 0, "\(forwarded.errors)")
            #expect(forwarded.output == native.output, "forwarded \(forwarded.output) native \(native.output)")
            trips.append(programTrips() - before)
        }
        // Four more chunks of five reads of 3 bytes, each read after a poll: four polls (forty frames without);
        // a read's top-up (slow reads on a loaded host) is not the program's round trip.
        #expect(trips.count == 2 && trips[1] - trips[0] == 4, "PD_POLL and PD_READ frames for 2 and 6 chunks: \(trips)")
    }

    /// Bytes a poll read ahead stay the parent's across fork: a copy in the child would be read twice. The
    /// parent reads part of a chunk, forks and reads the rest; the child reads only the next chunk, as natively.
    /// From the fork on nothing is read ahead, in either process: the parent's polls take none of the bytes the
    /// child then reads.
    @Test func bytesReadAheadAreReadOnceAcrossFork() throws {
        try expectReadAhead("fork", printsNativelyAndForwarded: "parent: read \"abc\"\nparent: read \"defghij\"\n"
            + "child: read \"klm\"\nchild: read \"xyz\"\nparent: poll 1 POLLIN\nparent: read \"!\"\n")
    }

    /// An exec keeps the forwarded descriptors without FD_CLOEXEC, with the bytes a poll read ahead of them,
    /// and closes the others: the new program reads the rest of a chunk and one written after, and the slave of
    /// a master opened O_CLOEXEC is hung up; an exec that fails first changes nothing. The same natively.
    @Test func descriptorsAndBytesReadAheadSurviveExec() throws {
        try expectReadAhead("exec", printsNativelyAndForwarded: "before exec: read \"abc\"\n"
            + "exec of a missing program: No such file or directory\nbefore exec: read \"de\"\n"
            + "after exec: read \"fghij\"\nafter exec: read \"klm\"\nafter exec: the slave of the close-on-exec master: hung up\n")
    }

    /// Programs/readahead.c in `mode` on a pty master: exactly `expected`, natively and forwarded.
    private func expectReadAhead(_ mode: String, printsNativelyAndForwarded expected: String) throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"])
        let program = try compile("readahead", into: backend.folder)
        let native = try run(program, [mode])
        #expect(native.status == 0 && native.output == expected, "\(native.output)")
        let forwarded = try paradiceRun(backend.unixEndpoint, [program, mode])
        #expect(forwarded.status == 0 && forwarded.output == expected, "\(forwarded.output) \(forwarded.errors)")
    }

    /// Shells' redirections hand a forwarded file to the program they start: dash execs from a vfork child,
    /// bash from a fork, and `exec 3< FILE` makes descriptor 3 by dup2 whatever the connection's number is.
    @Test func shellRedirectionsHandForwardedFilesToPrograms() throws {
        let backend = try BackendProcess(devices: ["/dev/zero"])
        let scripts = [
            ["/bin/dash", "-c", "exec 3< /dev/zero; head -c 5 <&3 | od -An -c"],
            ["/bin/dash", "-c", "head -c 5 < /dev/zero | od -An -c"],
            ["/bin/dash", "-c", "exec 3< /dev/zero; /nonexistent/program 2>/dev/null; exec 4<&3 3<&-; head -c 5 <&4 | od -An -c"],
            ["/bin/bash", "-c", "exec 3< /dev/zero; head -c 5 <&3 | od -An -c"],
            ["/bin/bash", "-c", "exec 3< /dev/zero; (head -c 5 <&3) | od -An -c"],
        ]
        for script in scripts {
            let native = try run(script[0], Array(script.dropFirst()))
            #expect(native.status == 0 && native.output.contains("\\0"), "\(script) natively: \(native.output)")
            let forwarded = try paradiceRun(backend.unixEndpoint, script)
            #expect(forwarded.status == 0 && forwarded.output == native.output, "\(script): \(forwarded.output) \(forwarded.errors)")
        }
    }

    /// A forked child keeps the files it inherited, as descriptors: when its parent closes its copy first,
    /// when its parent exits first; and a file the parent opens after the fork is not the child's, so its close
    /// releases the device at once. The same natively and forwarded (PD_FORK's ticket).
    @Test func aForkedChildHoldsWhatItInherited() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"])
        let program = try compile("forkshare", into: backend.folder)
        let expected = [
            "close": "child: the inherited master is pty the parent's\nparent: closed its copy first\n",
            "exit": "parent: exits first\nchild: the inherited master is pty the parent's\n",
            "after": "child: the inherited master is pty the parent's\n"
                + "parent: the slave of a master opened after the fork, once that closes: hung up\n",
        ]
        for (mode, output) in expected.sorted(by: { $0.key < $1.key }) {
            let native = try run(program, [mode])
            #expect(native.status == 0 && native.output == output, "\(mode) natively: \(native.output)")
            let forwarded = try paradiceRun(backend.unixEndpoint, [program, mode])
            #expect(forwarded.status == 0 && forwarded.output == output, "\(mode): \(forwarded.output) \(forwarded.errors)")
        }
    }

    /// A file whose class declares no read shape (here /dev/zero, of no class) is never read ahead: a poll and
    /// the read after it are two round trips.
    @Test func aFileWithoutAReadShapeIsNotReadAhead() throws {
        let backend = try BackendProcess(devices: ["/dev/zero"])
        let program = try compile("readahead", into: backend.folder)
        let relay = try FrameCountingRelay(to: backend.unixEndpoint, at: backend.folder + "/relay.sock")
        var trips: [Int] = []
        for rounds in [2, 6] {
            let before = relay.count(of: PD_POLL.code) + relay.count(of: PD_READ.code)
            let result = try paradiceRun(relay.endpoint, [program, "file", "/dev/zero", String(rounds)])
            #expect(result.status == 0 && result.output.contains("read \(rounds)"), "\(result.output) \(result.errors)")
            trips.append(relay.count(of: PD_POLL.code) + relay.count(of: PD_READ.code) - before)
        }
        #expect(trips.count == 2 && trips[1] - trips[0] == 8, "PD_POLL and PD_READ frames for 2 and 6 rounds: \(trips)")
    }
}

/// Relays unix-socket connections to a backend, counting the frames each guest sends by op. The first
/// `losing` connections are read and relayed nowhere, as QEMU's chardev sometimes loses a client's first
/// frame on its way to a virtio-serial port.
final class FrameCountingRelay: @unchecked Sendable {
    let endpoint: String
    private let listener: Int32
    private let target: String
    private let counts = NSLock()
    private var byOp: [UInt16: Int] = [:]
    private var toLose: Int
    private var lost: (bytes: Int, ended: Int) = (0, 0)
    private var lostDescriptors: [Int32] = []

    init(to backend: String, at path: String, losing: Int = 0) throws {
        toLose = losing
        target = String(backend.dropFirst("unix:".count))
        endpoint = "unix:" + path
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = unixAddress(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(listener, 16) == 0 else { let e = errno; close(listener); throw Errno(e) }
        Thread.detachNewThread { [self] in acceptForever() }
    }

    deinit { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    func count(of op: UInt16) -> Int { counts.withLock { byOp[op] ?? 0 } }
    /// What the lost connections sent, and how many of them their guest closed.
    var lostConnections: (bytes: Int, ended: Int) { counts.withLock { lost } }
    /// Ends the lost connections that are still open, as a backend that goes away would.
    func endLostConnections() { counts.withLock { for fd in lostDescriptors { shutdown(fd, Int32(SHUT_RDWR)) } } }
    /// PD_POLL frames that wait for nothing (timeout 0): a read's top-up of its read-ahead, which a read sends
    /// when it comes more than a moment after the poll's answer (a loaded host), not a poll of the program's.
    func topUps() -> Int { counts.withLock { polledWithoutWaiting } }
    private var polledWithoutWaiting = 0

    private func acceptForever() {
        while true {
            let guest = accept(listener, nil, nil)
            if guest < 0 { if errno == EINTR { continue } else { return } }
            _ = fcntl(guest, F_SETFD, FD_CLOEXEC)
            if counts.withLock({ () -> Bool in
                defer { toLose -= 1 }
                return toLose > 0
            }) {
                counts.withLock { lostDescriptors.append(guest) }
                Thread.detachNewThread { [self] in swallow(guest) }
                continue
            }
            let backend = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = unixAddress(target)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(backend, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard connected == 0 else { close(guest); close(backend); continue }
            Thread.detachNewThread { [self] in pump(from: guest, to: backend, counting: true) }
            Thread.detachNewThread { [self] in pump(from: backend, to: guest, counting: false) }
        }
    }

    /// Reads a lost connection until its guest closes it.
    private func swallow(_ guest: Int32) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(guest, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n > 0 { counts.withLock { lost.bytes += n }; continue }
            counts.withLock {
                if n == 0 { lost.ended += 1 }
                lostDescriptors.removeAll { $0 == guest }
            }
            close(guest)
            return
        }
    }

    /// Copies bytes until either side ends; the guest's side is cut into frames and counted.
    private func pump(from source: Int32, to sink: Int32, counting: Bool) {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        defer { shutdown(sink, Int32(SHUT_RDWR)); shutdown(source, Int32(SHUT_RDWR)) }
        while true {
            let n = read(source, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            var sent = 0
            while sent < n {
                let k = chunk[sent..<n].withUnsafeBytes { write(sink, $0.baseAddress, $0.count) }
                if k < 0 && errno == EINTR { continue }
                guard k > 0 else { return }
                sent += k
            }
            guard counting else { continue }
            pending += chunk[0..<n]
            let headerSize = MemoryLayout<pd_header>.size
            while pending.count >= headerSize {
                let header = pending.withUnsafeBytes { $0.loadUnaligned(as: pd_header.self) }
                guard pending.count >= headerSize + Int(header.length) else { break }
                let body = pending[headerSize..<(headerSize + Int(header.length))]
                let waitsForNothing = header.op == PD_POLL.code && body.count >= MemoryLayout<pd_poll>.size
                    && Array(body).withUnsafeBytes { $0.loadUnaligned(as: pd_poll.self).timeout_ms } == 0
                counts.withLock {
                    byOp[header.op, default: 0] += 1
                    if waitsForNothing { polledWithoutWaiting += 1 }
                }
                pending.removeFirst(headerSize + Int(header.length))
            }
        }
    }
}

private func unixAddress(_ path: String) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b } }
    return address
}

/// The backend's side of PD_IOCTL_SLOTS_AHEAD: descriptors a frontend translated without being asked count as
/// handles only when they are exactly where the plan has descriptors; any other guess is asked again.
@Suite("Session: descriptors translated ahead")
struct SessionSlotsAheadTests {
    @Test func aGuessCountsOnlyWhenItIsThePlansSlots() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (kvm, error) = guest.open("/dev/kvm")
        try #require(error == 0)
        let created = try #require(guest.result(PD_IOCTL, flags: UInt16(PD_IOCTL_TRANSLATED), handle: kvm,
                                                body: bytes(of: pd_ioctl(command: Ioctl.KVM_CREATE_VM, region_count: 0, argument: 0))))
        try #require(created.error == 0 && created.result > 0)
        let vm = UInt32(created.result)
        // KVM_IRQFD: struct kvm_irqfd (32 bytes), its descriptor `fd` first; here the VM's own handle.
        let argument: UInt64 = 0x10_0000
        var irqfd = [UInt8](repeating: 0, count: 32)
        irqfd.withUnsafeMutableBytes { $0.storeBytes(of: vm, as: UInt32.self) }
        let request = bytes(of: pd_ioctl(command: Ioctl.KVM_IRQFD, region_count: 1, argument: argument))
            + bytes(of: pd_region(address: argument, length: 32, reserved: 0)) + irqfd
        func ahead(_ slots: [UInt64]) -> [UInt8] {
            request + bytes(of: pd_slot_count(count: UInt32(slots.count), flags: 0))
                + slots.flatMap { bytes(of: pd_slot(address: $0, width: 4, direction: 1)) }
        }
        func answer(_ flags: UInt32, _ body: [UInt8]) throws -> UInt16 {
            try #require(guest.call(PD_IOCTL, flags: UInt16(flags), handle: vm, body: body)).op
        }
        // The plan's one slot: answered at once (the driver refuses a VM as an eventfd, as it would locally).
        #expect(try answer(PD_IOCTL_SLOTS_AHEAD, ahead([argument])) == PD_REPLY.code)
        // Elsewhere, one too many, none: asked again, as a frontend that translated nothing is.
        #expect(try answer(PD_IOCTL_SLOTS_AHEAD, ahead([argument + 4])) == PD_NEED.code)
        #expect(try answer(PD_IOCTL_SLOTS_AHEAD, ahead([argument, argument + 8])) == PD_NEED.code)
        #expect(try answer(PD_IOCTL_SLOTS_AHEAD, ahead([])) == PD_NEED.code)
        #expect(try answer(0, request) == PD_NEED.code)
    }
}
