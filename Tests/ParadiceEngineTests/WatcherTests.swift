import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The backend's descriptors and threads, read from /proc.
extension BackendProcess {
    func descriptors() -> [Int32: String] {
        var found: [Int32: String] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? [] {
            guard let n = Int32(name), let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)")
            else { continue }
            found[n] = target
        }
        return found
    }

    /// Whether one of the backend's threads sleeps in poll(2) or ppoll(2) on `count` descriptors
    /// (/proc/PID/task/TID/syscall names the call and its arguments while the thread is blocked).
    func threadBlockedInPoll(on count: Int) -> Bool {
        for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            guard let line = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/syscall", encoding: .utf8) else { continue }
            let fields = line.split(separator: " ")
            if fields.count > 2, fields[0] == "7" || fields[0] == "271", fields[2] == "0x\(String(count, radix: 16))" { return true }
        }
        return false
    }
}

/// Events in the order the client delivered them, and a wait for one.
final class OrderedEvents: @unchecked Sendable {
    private let condition = NSCondition()
    private var events: [(handle: UInt32, revents: Int16)] = []

    func add(_ handle: UInt32, _ revents: Int16) {
        condition.lock()
        events.append((handle, revents))
        condition.broadcast()
        condition.unlock()
    }

    /// Every event up to and including the first for `handle`; nil if none came within `seconds` (a
    /// bound for a failure, not a measurement).
    func until(_ handle: UInt32, seconds: Double = 10) -> [(handle: UInt32, revents: Int16)]? {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let i = events.firstIndex(where: { $0.handle == handle }) { return Array(events[...i]) }
            guard condition.wait(until: deadline) else { return nil }
        }
    }
}

@Suite("watches", .serialized)
struct WatcherTests {
    /// A close while the backend's watcher polls the file: the watcher holds the file, so its descriptor
    /// cannot close and be reused under the poll (the old watcher polled the bare number, saw it closed
    /// or reopened as another file, and pushed an event for the closed handle). The close still ends the
    /// watch at once: the descriptor is gone when the close is answered.
    @Test func aCloseDuringAWatchNeverPollsAReusedDescriptor() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*", "/dev/zero"])
        let client = try backend.connect()
        let events = OrderedEvents()
        client.onEvent = { handle, revents in events.add(handle, revents) }

        let before = backend.descriptors()
        let watched = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)   // nothing to read: it stays unready
        let number = try #require(backend.descriptors().keys.filter { before[$0] == nil }.min())
        try watched.watch(events: Int16(POLLIN))
        // The watcher sleeps in poll on its wake-up descriptor and the pty.
        #expect(backend.waitUntil(seconds: 10) { backend.threadBlockedInPoll(on: 2) })

        try watched.close()
        #expect(backend.descriptors()[number] == nil, "the watched file is still open after its close was answered")
        // The next open takes the lowest free number, the watched file's, and its handle too.
        let reuse = try client.open("/dev/zero", flags: O_RDONLY)
        #expect(reuse.handle == watched.handle)
        #expect(backend.descriptors()[number] == "/dev/zero")

        // A watch on a file that is ready at once: its event comes after any the closed watch produced.
        let marker = try client.open("/dev/zero", flags: O_RDONLY)
        try marker.watch(events: Int16(POLLIN))
        let seen = try #require(events.until(marker.handle), "no event for a ready file")
        #expect(!seen.contains { $0.handle == watched.handle }, "an event for a closed handle: \(seen)")
    }

    /// An event the backend pushes while no call is in flight is delivered without one.
    @Test func anEventComesWithNoCallInFlight() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let events = OrderedEvents()
        client.onEvent = { handle, revents in events.add(handle, revents) }
        try pty.master.watch(events: Int16(POLLIN))
        #expect(write(pty.slave, "x", 1) == 1)
        let seen = try #require(events.until(pty.master.handle))
        #expect(seen.last!.revents & Int16(POLLIN) != 0)
    }

    /// PD_WATCH_LEVEL on a ready file: the reply is the level, and no watch is armed (nor the event that
    /// would repeat it). Two files ready at once are watched after it, one after the other: a watch armed by
    /// the level watch would fire in the same round as the first, so its event would come before the
    /// second's.
    @Test func aLevelThatHoldsIsTheReplyAndArmsNoWatch() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*", "/dev/zero"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let events = OrderedEvents()
        client.onEvent = { handle, revents in events.add(handle, revents) }
        #expect(write(pty.slave, "x", 1) == 1)
        #expect(backend.waitUntil(seconds: 10) { (try? pty.master.poll(events: Int16(POLLIN), timeout: 0)) ?? 0 != 0 })

        let level = try pty.master.watch(events: Int16(POLLIN), unlessReady: Int16(POLLIN))
        #expect(level & Int16(POLLIN) != 0, "the reply is not the level: \(level)")
        let first = try client.open("/dev/zero", flags: O_RDONLY), second = try client.open("/dev/zero", flags: O_RDONLY)
        try first.watch(events: Int16(POLLIN))
        _ = try #require(events.until(first.handle), "no event for a ready file")
        try second.watch(events: Int16(POLLIN))
        let all = try #require(events.until(second.handle), "no event for a ready file")
        #expect(!all.contains { $0.handle == pty.master.handle }, "an event repeats the level the reply said: \(all)")
    }

    /// PD_WATCH_LEVEL on a file that is not ready: 0, and the watch is armed, so that what comes next is
    /// an event. The level looked at is the caller's own: the watch's other events do not answer it (a
    /// pty master is writable, not readable), they fire as the watch's event.
    @Test func aLevelThatDoesNotHoldArmsTheWatch() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let events = OrderedEvents()
        client.onEvent = { handle, revents in events.add(handle, revents) }
        #expect(try pty.master.watch(events: Int16(POLLIN), unlessReady: Int16(POLLIN)) == 0)
        #expect(write(pty.slave, "x", 1) == 1)
        let seen = try #require(events.until(pty.master.handle), "no event after the level watch")
        #expect(seen.last!.revents & Int16(POLLIN) != 0)

        let other = try ForwardedPty(client)
        defer { other.closeSlave() }
        #expect(try other.master.watch(events: Int16(POLLIN | POLLOUT), unlessReady: Int16(POLLIN)) == 0)
        let fired = try #require(events.until(other.master.handle), "no event for the watch's other events")
        #expect(fired.last!.revents & Int16(POLLOUT) != 0)
    }

    /// A PD_WATCH_LEVEL body too short for pd_watch (a plain pd_poll) ends the session; an unknown handle is
    /// EBADF, as for a plain watch.
    @Test func aLevelWatchIsCheckedLikeAnyFrame() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        let (handle, error) = guest.open("/dev/ptmx")
        #expect(error == 0)
        let watch = bytes(of: pd_watch(events: Int32(POLLIN), timeout_ms: -1, level: Int32(POLLIN), reserved: 0))
        let unknown = guest.result(PD_WATCH, flags: UInt16(PD_WATCH_LEVEL), handle: handle + 40, body: watch)
        #expect(unknown?.error == EBADF)
        let writable = guest.result(PD_WATCH, flags: UInt16(PD_WATCH_LEVEL), handle: handle,
                                    body: bytes(of: pd_watch(events: Int32(POLLOUT), timeout_ms: -1, level: Int32(POLLOUT), reserved: 0)))
        #expect(writable.map { $0.result & Int64(POLLOUT) != 0 && $0.error == 0 } == true, "\(String(describing: writable))")
        guest.send(RawGuest.frame(op: PD_WATCH.code, flags: UInt16(PD_WATCH_LEVEL), request: 9, handle: handle,
                                  body: bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: -1))))
        #expect(guest.closedByBackend())
        #expect(backend.waitUntil { backend.log.contains("reason=body too short for pd_watch") }, "\(backend.log)")
    }
}
