#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem
import ParadiceTransport
import ParadiceWire

/// Pushes readiness events for a session's watched handles. A watch fires once (PD_WATCH); an
/// fasync watch fires again after the guest next touches the file.
///
/// The poll holds a reference to each file it polls, so a descriptor stays open (its number cannot be
/// reused by another open) until the poll has returned; a close or a stop wakes the poll and waits for
/// it to let go, so the device is released when the close is answered.
///
/// Every registration and every touch of a persistent watch gets a new generation. A readiness that
/// poll reports for a one-shot watch is sent only if the watch still has the generation that was
/// polled: one renewed while poll ran belongs to a guest that has cleared its side since and waits for
/// the renewed watch, so the old readiness (maybe consumed, maybe not what it now asks for) is dropped
/// and the renewed watch is polled afresh. Deleting the renewed watch there instead lost the guest's
/// wake-up. A persistent watch touched while poll ran sends the readiness and stays armed.
final class Watcher: @unchecked Sendable {
    private unowned let session: Session

    private struct State {
        var watches: [UInt32: (events: Int16, persistent: Bool, armed: Bool, generation: UInt64)] = [:]
        var generations: UInt64 = 0
        /// Handles the poll under way holds a file reference for.
        var polled: Set<UInt32> = []
        var running = false
        var stopped = false
    }

    private let state = ConditionLock(State())
    /// Wakes the poll. Made once, with the loop's thread, and closed only when the watcher goes (after
    /// the loop has ended): a number that is written to is never one that was closed and reused.
    private var wakeFD: Int32 = -1

    init(session: Session) { self.session = session }

    deinit { if wakeFD >= 0 { try? Syscall.close(wakeFD) } }

    func watch(_ handle: UInt32, events: Int16, persistent: Bool) {
        state.withLock { s in
            s.generations += 1
            s.watches[handle] = (events, persistent, true, s.generations)
            if !s.running && !s.stopped {
                s.running = true
                if wakeFD < 0 { wakeFD = (try? Syscall.eventfd()) ?? -1 }
                // The thread keeps its session alive: it may still be sending an event as the session ends.
                let owner = session
                startThread { [self] in withExtendedLifetime(owner) { loop() } }
            }
        }
        wake()
    }

    /// The guest closed the handle (or stopped watching it): once this returns, the poll holds no
    /// reference to its file.
    func forget(_ handle: UInt32) {
        let polled = state.withLock { s -> Bool in
            s.watches.removeValue(forKey: handle)
            return s.polled.contains(handle)
        }
        guard polled else { return }
        wake()
        state.withLock(waitingFor: { s in s.polled.contains(handle) ? nil : () })
    }

    /// The guest used the file: a persistent watch may fire again.
    func rearm(_ handle: UInt32) {
        let changed = state.withLock { s -> Bool in
            guard var w = s.watches[handle], w.persistent else { return false }
            s.generations += 1
            w.generation = s.generations   // a poll running now reports what was ready before the touch
            let wasArmed = w.armed
            w.armed = true
            s.watches[handle] = w
            return !wasArmed
        }
        if changed { wake() }
    }

    /// Ends the loop and waits for it: after this, the watcher holds no file and sends nothing.
    func stop() {
        let running = state.withLock { s -> Bool in
            s.stopped = true
            s.watches.removeAll()
            return s.running
        }
        guard running else { return }
        wake()
        state.withLock(waitingFor: { s in s.running ? nil : () })
    }

    private func wake() {
        let fd = state.withLock { _ in wakeFD }
        if fd >= 0 { var one: UInt64 = 1; _ = try? Syscall.write(fd, &one, 8) }
    }

    private func loop() {
        defer {
            state.withLock { s in s.running = false; s.polled = [] }
            state.broadcast()
        }
        let wakeFD = state.withLock { _ in self.wakeFD }
        while true {
            // The files themselves, not their numbers: each stays open while it is polled.
            var entries: [(handle: UInt32, file: OpenFile, events: Int16, generation: UInt64)] = []
            let stopped = state.withLock { s -> Bool in
                if s.stopped { return true }
                for (h, w) in s.watches where w.armed {
                    if let file = session.file(h) { entries.append((h, file, w.events, w.generation)) }
                }
                s.polled = Set(entries.map(\.handle))
                return false
            }
            if stopped { return }
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            fds += entries.map { pollfd(fd: $0.file.fd, events: $0.events, revents: 0) }
            // Not retried on EINTR: the loop comes round again and polls the watches as they are by then.
            let polled = attempt { () throws(Errno) in try Syscall.poll(&fds, fds.count, -1) }
            let failed = if case .failure(let error) = polled { error != .interrupted } else { false }
            if fds[0].revents != 0 { var v: UInt64 = 0; _ = try? Syscall.read(wakeFD, &v, 8) }
            // Events only for handles still watched: a watch forgotten during the poll gets none.
            let fired = state.withLock { s -> [(UInt32, Int16)] in
                var fired: [(UInt32, Int16)] = []
                for (index, entry) in entries.enumerated() where fds[index + 1].revents != 0 {
                    guard var w = s.watches[entry.handle] else { continue }
                    if w.persistent {
                        // Touched while poll ran: it fires again for what comes after the touch.
                        if w.generation == entry.generation { w.armed = false; s.watches[entry.handle] = w }
                    } else {
                        guard w.generation == entry.generation else { continue }   // renewed: polled again next round
                        s.watches[entry.handle] = nil
                    }
                    fired.append((entry.handle, fds[index + 1].revents))
                }
                return fired
            }
            // Let go of the files before saying so: a close waiting in `forget` finds its file closed.
            entries.removeAll()
            state.withLock { s in s.polled = [] }
            state.broadcast()
            if failed { return }
            for (handle, revents) in fired {
                session.send(Reply.event(handle: handle, revents: revents))
            }
        }
    }
}
