#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceWire

/// Pushes readiness events for a session's watched handles. A watch fires once (PD_WATCH); an
/// fasync watch fires again after the guest next touches the file.
final class Watcher: @unchecked Sendable {
    private unowned let session: Session
    private let lock = Lock()
    private var watches: [UInt32: (events: Int16, persistent: Bool, armed: Bool)] = [:]
    private var wakeFD: Int32 = -1
    private var running = false
    private var stopped = false

    init(session: Session) { self.session = session }

    func watch(_ handle: UInt32, events: Int16, persistent: Bool) {
        lock.withLock {
            watches[handle] = (events, persistent, true)
            if !running && !stopped {
                running = true
                wakeFD = paradice_eventfd()
                // The thread keeps its session alive: it may still be sending an event when the session ends.
                let owner = session
                startThread { [self] in withExtendedLifetime(owner) { loop() } }
            }
        }
        wake()
    }

    func forget(_ handle: UInt32) {
        let had = lock.withLock { watches.removeValue(forKey: handle) != nil }
        if had { wake() }
    }

    /// The guest used the file: a persistent watch may fire again.
    func rearm(_ handle: UInt32) {
        let changed = lock.withLock { () -> Bool in
            guard var w = watches[handle], w.persistent, !w.armed else { return false }
            w.armed = true
            watches[handle] = w
            return true
        }
        if changed { wake() }
    }

    func stop() {
        let fd = lock.withLock { () -> Int32 in
            stopped = true
            watches.removeAll()
            return running ? wakeFD : -1
        }
        if fd >= 0 { wake() }
    }

    private func wake() {
        let fd = lock.withLock { wakeFD }
        if fd >= 0 { var one: UInt64 = 1; _ = Glibc.write(fd, &one, 8) }
    }

    private func loop() {
        defer { lock.withLock { Glibc.close(wakeFD); wakeFD = -1; running = false } }
        while true {
            let (done, entries) = lock.withLock { () -> (Bool, [(UInt32, Int32, Int16)]) in
                if stopped { return (true, []) }
                let list = watches.filter { $0.value.armed }.compactMap { h, w -> (UInt32, Int32, Int16)? in
                    guard let file = session.file(h) else { return nil }
                    return (h, file.fd, w.events)
                }
                return (false, list)
            }
            if done { return }
            var fds = [pollfd(fd: lock.withLock { wakeFD }, events: Int16(POLLIN), revents: 0)]
            fds += entries.map { pollfd(fd: $0.1, events: $0.2, revents: 0) }
            let n = Glibc.poll(&fds, nfds_t(fds.count), -1)
            if n < 0 && errno != EINTR { return }
            if fds[0].revents != 0 { var v: UInt64 = 0; _ = Glibc.read(fds[0].fd, &v, 8) }
            for (index, entry) in entries.enumerated() where fds[index + 1].revents != 0 {
                let revents = fds[index + 1].revents
                lock.withLock {
                    guard var w = watches[entry.0] else { return }
                    if w.persistent { w.armed = false; watches[entry.0] = w } else { watches[entry.0] = nil }
                }
                var body = BodyWriter()
                body.append(pd_event(revents: Int32(revents), reserved: 0))
                session.send(Frame(op: PD_EVENT.code, handle: entry.0, body: body.bytes))
            }
        }
    }
}
