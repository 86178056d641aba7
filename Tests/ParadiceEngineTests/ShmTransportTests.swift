import CParadice
import Foundation
import ParadiceClient
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

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
        // Random bytes whose first word, the header's length, is over PD_MAX_FRAME: one time in fifty a
        // random word is a length up to 80 MiB, a half frame the backend rightly waits for (HostileGuest's
        // half-frame test holds those), and the session would not end.
        let length = UInt32.random(in: (PD_MAX_FRAME + 1)...UInt32.max, using: &generator)
        random.send(bytes(of: length) + (4..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) })
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
