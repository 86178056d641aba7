import CParadice
import Foundation
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// PD_INTERRUPT: a guest's caller got a signal while its call waits in the backend. A call blocked in the
/// driver ends with EINTR, as the driver's wait gives it; one waiting for a thread is answered EINTR unrun;
/// anything else (done, unknown, another call, another session's) is left alone. On real ptys, through a
/// real backend, with raw frames (and, for the frontend core's pd_interrupt, Programs/interrupt.c).
@Suite("interrupting a forwarded call", .serialized)
struct InterruptTests {
    static func interrupt(_ request: UInt32, extra: [UInt8] = []) -> [UInt8] {
        RawGuest.frame(op: PD_INTERRUPT.code, request: 0, body: bytes(of: pd_interrupt_request(request: request, reserved: 0)) + extra)
    }

    static func read(_ request: UInt32, _ handle: UInt32) -> [UInt8] {
        RawGuest.frame(op: PD_READ.code, request: request, handle: handle, body: bytes(of: pd_io(count: 16, offset: 0)))
    }

    /// The answer to `request` (the next frame must be it), as (result, errno, data).
    static func answer(_ guest: RawGuest, _ request: UInt32, sourceLocation: SourceLocation = #_sourceLocation) -> (Int64, Int32, [UInt8])? {
        guard let frame = guest.receive() else {
            Issue.record("no answer to request \(request)", sourceLocation: sourceLocation)
            return nil
        }
        #expect(frame.op == PD_REPLY.code && frame.request == request, "frame \(frame.op) for \(frame.request), wanted \(request)",
                sourceLocation: sourceLocation)
        guard let (result, error) = RawGuest.decode(frame) else { return nil }
        return (result, error, Array(frame.body.dropFirst(MemoryLayout<pd_reply>.size)))
    }

    /// The backend's threads asleep in a tty read (n_tty_read waits in wait_woken, as a socket's recv does:
    /// counted against a baseline taken while the guests are idle).
    static func sleepingReads(_ backend: BackendProcess) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(backend.pid)/task")) ?? []
        return tasks.filter {
            (try? String(contentsOfFile: "/proc/\(backend.pid)/task/\($0)/wchan", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "wait_woken"
        }.count
    }

    @Test func aBlockedReadEndsWithEintrAndNothingIsLost() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (master, slave) = try rawPty(guest)
        defer { close(slave) }
        let idle = Self.sleepingReads(backend)

        // Blocked in the driver, then interrupted: EINTR, and no data.
        let first = guest.newRequest()
        #expect(guest.send(Self.read(first, master)))
        #expect(backend.waitUntil { Self.sleepingReads(backend) == idle + 1 }, "the read sleeps in the driver")
        #expect(guest.send(Self.interrupt(first)))
        let interrupted = Self.answer(guest, first)
        #expect(interrupted?.0 == -1 && interrupted?.1 == EINTR && interrupted?.2.isEmpty == true)
        #expect(backend.waitUntil { Self.sleepingReads(backend) == idle })

        // A byte written as the interrupt goes is read once: by the interrupted read (the device answered
        // first) or by the next one, never by both, never by neither.
        var received: [UInt8] = []
        let second = guest.newRequest()
        #expect(guest.send(Self.read(second, master)))
        #expect(backend.waitUntil { Self.sleepingReads(backend) == idle + 1 })
        #expect(write(slave, "x", 1) == 1)
        #expect(guest.send(Self.interrupt(second)))
        if let (result, error, data) = Self.answer(guest, second) {
            #expect(result == Int64(data.count) || (result == -1 && error == EINTR))
            received += data
        }
        #expect(write(slave, "y", 1) == 1)
        for _ in 0..<2 where received.count < 2 {
            let next = guest.newRequest()
            #expect(guest.send(Self.read(next, master)))
            received += Self.answer(guest, next)?.2 ?? []
        }
        #expect(received == Array("xy".utf8))
        // Nothing more to read: a poll that does not wait sees no input.
        let poll = guest.result(PD_POLL, handle: master, body: bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: 0)))
        #expect(poll?.result == 0)

        // Bytes past the structure are ignored, as in every op: the interrupt works.
        let third = guest.newRequest()
        #expect(guest.send(Self.read(third, master)))
        #expect(backend.waitUntil { Self.sleepingReads(backend) == idle + 1 })
        #expect(guest.send(Self.interrupt(third, extra: [UInt8](repeating: 0xA5, count: 40))))
        #expect(Self.answer(guest, third)?.1 == EINTR)
    }

    @Test func anInterruptOfNoCallInFlightChangesNothing() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (master, slave) = try rawPty(guest)
        defer { close(slave) }
        // Unknown requests, and one answered already: no reply, no effect. The next frame is the next answer.
        let stat = guest.newRequest()
        #expect(guest.send(RawGuest.frame(op: PD_FSTAT.code, request: stat, handle: master)))
        #expect(Self.answer(guest, stat)?.0 == 0)
        for request in [0, 999_999, stat, UInt32.max] { #expect(guest.send(Self.interrupt(request))) }
        let again = guest.newRequest()
        #expect(guest.send(RawGuest.frame(op: PD_FSTAT.code, request: again, handle: master)))
        #expect(Self.answer(guest, again)?.0 == 0)
        // A call the session serves on its own thread is done before the interrupt that follows it is read.
        let winsize = guest.newRequest()
        let ask = bytes(of: pd_ioctl(command: Ioctl.TIOCGWINSZ, region_count: 1, argument: 0x1000))
            + bytes(of: pd_region(address: 0x1000, length: 8, reserved: PD_REGION_OUT))
        #expect(guest.send(RawGuest.frame(op: PD_IOCTL.code, flags: UInt16(PD_IOCTL_TRANSLATED), request: winsize, handle: master, body: ask)
                           + Self.interrupt(winsize)))
        let ioctl = Self.answer(guest, winsize)
        #expect(ioctl?.0 == 0 && ioctl?.1 == 0)
        // An interrupt of a request not yet made does not wait for it.
        let future = guest.newRequest()
        #expect(guest.send(Self.interrupt(future)))
        #expect(guest.send(Self.read(future, master)))
        #expect(write(slave, "k", 1) == 1)
        let read = Self.answer(guest, future)
        #expect(read?.0 == 1 && read?.2 == Array("k".utf8))
    }

    @Test func anInterruptEndsOnlyItsOwnCallOfItsOwnSession() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let a = try RawGuest(backend.unixEndpoint), b = try RawGuest(backend.unixEndpoint)
        #expect(a.hello("a") && b.hello("b"))
        let (a1, slaveA1) = try rawPty(a)
        let (a2, slaveA2) = try rawPty(a)
        let (b1, slaveB1) = try rawPty(b)
        defer { [slaveA1, slaveA2, slaveB1].forEach { close($0) } }
        let idle = Self.sleepingReads(backend)
        // The same request number in both sessions.
        #expect(a.send(Self.read(100, a1)) && a.send(Self.read(101, a2)) && b.send(Self.read(100, b1)))
        #expect(backend.waitUntil { Self.sleepingReads(backend) == idle + 3 })
        #expect(a.send(Self.interrupt(100)))
        #expect(Self.answer(a, 100)?.1 == EINTR)
        // B's request 100 and A's 101 still wait in their drivers: each reads what comes.
        #expect(write(slaveB1, "b", 1) == 1)
        #expect(Self.answer(b, 100)?.2 == Array("b".utf8))
        #expect(write(slaveA2, "c", 1) == 1)
        #expect(Self.answer(a, 101)?.2 == Array("c".utf8))
    }

    @Test func aCallWaitingForAThreadIsAnsweredWithoutRunning() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], extra: ["--max-workers", "1"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (first, slave1) = try rawPty(guest)
        let (second, slave2) = try rawPty(guest)
        defer { close(slave1); close(slave2) }
        // The session's one thread is held by a read; the next read waits for it, and is interrupted there.
        #expect(guest.send(Self.read(1, first) + Self.read(2, second) + Self.interrupt(2)))
        #expect(Self.answer(guest, 2)?.1 == EINTR)
        #expect(write(slave2, "w", 1) == 1)   // for nobody yet: the interrupted read never runs
        #expect(guest.send(Self.interrupt(1)))
        #expect(Self.answer(guest, 1)?.1 == EINTR)
        #expect(guest.send(Self.read(3, second)))
        #expect(Self.answer(guest, 3)?.2 == Array("w".utf8))
    }

    @Test func malformedInterruptsEndOnlyTheirSessionAndAFloodIsServed() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let witness = try RawGuest(backend.unixEndpoint)
        #expect(witness.hello("witness"))
        let (master, slave) = try rawPty(witness)
        defer { close(slave) }
        for length in 0..<MemoryLayout<pd_interrupt_request>.size {
            let guest = try RawGuest(backend.unixEndpoint)
            #expect(guest.hello())
            guest.send(RawGuest.frame(op: PD_INTERRUPT.code, request: 0, body: [UInt8](repeating: 0xA5, count: length)))
            #expect(guest.closedByBackend(), "\(length) bytes")
        }
        #expect(backend.waitUntil { backend.log.components(separatedBy: "reason=body too short for pd_interrupt_request").count - 1 == 8 })

        // The witness floods interrupts around a blocked read: the read ends once, with EINTR; the session goes on.
        let idle = Self.sleepingReads(backend)
        #expect(witness.send(Self.read(7, master)))
        #expect(backend.waitUntil { Self.sleepingReads(backend) == idle + 1 })
        var flood: [UInt8] = []
        var generator = SeededGenerator(seed: 12)
        for i in 0..<20_000 { flood += Self.interrupt(i % 100 == 0 ? 7 : UInt32(truncatingIfNeeded: generator.next())) }
        #expect(witness.send(flood))
        let stat = witness.newRequest()
        #expect(witness.send(RawGuest.frame(op: PD_FSTAT.code, request: stat, handle: master)))
        var answers: [UInt32: Int] = [:]
        while let frame = witness.receive() {
            answers[frame.request, default: 0] += 1
            if frame.request == stat { break }
        }
        #expect(answers == [7: 1, stat: 1])
        #expect(write(slave, "f", 1) == 1)
        #expect(witness.send(Self.read(8, master)))
        #expect(Self.answer(witness, 8)?.2 == Array("f".utf8))
        #expect(backend.isRunning)
    }

    /// The frontend core's pd_interrupt from another thread, as a daemon serving a guest kernel's node calls
    /// it: a blocked read, an interrupt between NEED rounds, one before the call, one after it.
    @Test func theCoresInterruptFromAnotherThread() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], extra: ["--max-workers", "1"])
        let program = try compileWithCore("interrupt", into: backend.folder)
        let r = try run(program, [backend.endpoint])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.split(separator: "\n").map(String.init) == [
            "granted 1 0",
            "read-interrupted -1 \(EINTR)",
            "read-after 1 0 a",
            "need-round-interrupted -1 \(EINTR)",
            "termios-unchanged 1 0",
            "held-read-interrupted -1 \(EINTR)",
            "late-interrupt-ignored 1 0 z",
            "interrupted-before-start -1 \(EINTR)",
            "read-last 1 0 q",
        ])
    }
}
