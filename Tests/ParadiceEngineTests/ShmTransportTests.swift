import CParadice
import Foundation
import ParadiceClient
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The device tests of the other transports over shared-memory rings (shm:PATH): the client library and
/// the preload both dial it through the frontend core.
@Suite("devices over shared-memory rings", .serialized)
struct ShmDeviceTests {
    @Test func aPtyThroughTheClientAndStty() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], shm: true)
        #expect(backend.endpoint.hasPrefix("shm:"))
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let ws = Buffer(8)
        ws[0, as: UInt16.self] = 7
        try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer)
        let back = Buffer(8)
        try pty.master.ioctl(Ioctl.TIOCGWINSZ, back.pointer)
        #expect(back[0, as: UInt16.self] == 7)
        // A read a worker answers once the slave writes, and large writes through the rings.
        #expect(write(pty.slave, "ok", 2) == 2)
        #expect(try pty.master.read(count: 16) == Array("ok".utf8))
        let native = try NativePty()
        let all = try paradiceRun(backend.endpoint, ["stty", "-F", native.slavePath, "-a"])
        #expect(all.status == 0, "\(all.errors)")
        #expect(all.output.contains("speed 38400 baud"))
    }

    @Test func tunAddsAndDeletesAnInterfaceOnTheBackend() throws {
        let namespace = "pdshm\(getpid())"
        try #require(run("/usr/sbin/ip", ["netns", "add", namespace]).status == 0)
        defer { _ = try? run("/usr/sbin/ip", ["netns", "del", namespace]) }
        let backend = try BackendProcess(devices: ["/dev/net/tun"], shm: true, namespace: namespace)
        let add = try paradiceRun(backend.endpoint, ["ip", "tuntap", "add", "dev", "pds0", "mode", "tun"])
        #expect(add.status == 0, "\(add.errors)")
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pds0"]).status == 0)
        let del = try paradiceRun(backend.endpoint, ["ip", "tuntap", "del", "dev", "pds0", "mode", "tun"])
        #expect(del.status == 0, "\(del.errors)")
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pds0"]).status != 0)
    }

    @Test func kvmSystemIoctlsAndTheDevicesOwnMappingWhoseDescriptorTakesTheSetupSocket() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"], shm: true, extra: ["--share-mappings"])
        let client = try backend.connect()
        let kvm = try client.open("/dev/kvm", flags: O_RDWR)
        #expect(try kvm.ioctl(Ioctl.KVM_GET_API_VERSION) == 12)
        // PD_SHARE's descriptor travels on the setup socket, named by its frame's position in the ring.
        let program = try compile("mapping", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("KVM_RUN -1 EINTR"))
    }

    @Test func loopGetFreeAndTheErrnoOfAnUnboundDevice() throws {
        let backend = try BackendProcess(devices: ["/dev/loop-control", "/dev/loop*"], shm: true)
        let client = try backend.connect()
        let control = try client.open("/dev/loop-control", flags: O_RDWR)
        let free = try control.ioctl(Ioctl.LOOP_CTL_GET_FREE)
        #expect(free >= 0)
        let loop = try client.open("/dev/loop\(free)", flags: O_RDWR)
        #expect(throws: Errno(ENXIO)) { try loop.ioctl(Ioctl.LOOP_GET_STATUS64, Buffer(232).pointer) }
    }

    @Test func descriptorsAcrossDupForkAndExec() throws {
        // A forked child drops its copy of the parent's rings (unmapped, never written) and dials its own.
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], shm: true)
        let program = try compile("lifecycle", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("exec child ok"))
        #expect(result.output.contains("lifecycle ok"))
    }
}

/// Peers that break the rings' rules, against a real backend: each ends only its own session, with one
/// log line, and the backend comes back to what it held.
@Suite("hostile peers of shared-memory rings", .serialized)
struct ShmHostilePeerTests {
    /// Whether the backend hung up this guest's rings (their setup socket) within `seconds`.
    func hungUp(_ bridge: RingBridge, seconds: Int32 = 10) -> Bool {
        var p = pollfd(fd: bridge.ring.pointee.setup_fd, events: 0, revents: 0)
        while true {
            let r = poll(&p, 1, seconds * 1000)
            if r < 0 && errno == EINTR { continue }
            return r == 1 && p.revents & Int16(POLLHUP) != 0
        }
    }

    @Test func indicesPastTheCapacityEndTheSession() throws {
        let bench = try HostileBench(shm: true)
        for (name, head, tail) in [("head past the capacity", UInt32(1 << 30), UInt32(0)),
                                   ("head behind the tail", UInt32(0) &- 1, UInt32(0))] {
            let guest = try RawGuest(bench.backend.endpoint)
            #expect(guest.hello())
            let bridge = try #require(guest.bridge)
            // The guest's own ring (0): the backend reads its head; its tail the backend keeps to itself.
            paradice_ring_poke(bridge.ring, 0, head, tail)
            // Rung whether or not the backend sleeps: a spurious wake-up is the peer's to make.
            var one: UInt64 = 1
            _ = write(bridge.ring.pointee.bells.0, &one, 8)
            #expect(hungUp(bridge), "\(name)")
        }
        #expect(bench.backend.waitUntil { bench.logCount("reason=ring receive: Protocol error") == 2 }, "\(bench.backend.log)")
        try bench.expectServed("after broken indices")
        try bench.expectBackToBaseline("broken ring indices")
    }

    @Test func garbageThroughTheRingEndsTheSession() throws {
        let bench = try HostileBench(shm: true)
        let guest = try RawGuest(bench.backend.endpoint)
        #expect(guest.hello())
        guest.send(RawGuest.frame(op: PD_OPEN.code, request: 3, body: [], length: .max))
        #expect(guest.closedByBackend())
        let random = try RawGuest(bench.backend.endpoint)
        #expect(random.hello())
        var generator = SystemRandomNumberGenerator()
        random.send((0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) })
        #expect(random.closedByBackend())
        try bench.expectServed("after garbage")
        try bench.expectBackToBaseline("garbage through the rings")
    }

    @Test func aPeerThatStopsConsumingThenDiesHoldsOnlyItsOwnSession() throws {
        let bench = try HostileBench(shm: true)
        let guest = try RawGuest(bench.backend.endpoint)
        #expect(guest.hello())
        let (zero, error) = guest.open("/dev/zero")
        #expect(error == 0)
        // Reads of 64 KiB whose replies it never takes: the backend's ring fills and its sends wait.
        var sent = 0
        while sent < 20_000, guest.send(RawGuest.frame(op: PD_READ.code, request: guest.newRequest(), handle: zero,
                                                       body: bytes(of: pd_io(count: 64 << 10, offset: 0))), wait: false) {
            sent += 1
        }
        print("ShmHostilePeer: \(sent) reads sent before the rings stopped taking them")
        try bench.expectServed("while a peer does not consume")
        // It dies: its end of everything closes, the backend's blocked sends end with the session.
        shutdown(guest.fd, Int32(SHUT_RDWR))
        try bench.expectBackToBaseline("a peer that stopped consuming and died")
    }
}
