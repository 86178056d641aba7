#if canImport(Glibc)
import Glibc
#endif

/// Where a session's calls that may sleep in the driver run: threads of the backend's pool, within the
/// session's limits, interrupted when the guest goes away (Session.teardown) or when its caller got a
/// signal (PD_INTERRUPT).
extension Session {
    /// Runs an operation that may sleep in the driver on a thread of the backend's pool, so that this
    /// guest's other requests and every other guest go on. The thread is interrupted if the guest goes away.
    /// Past the session's `workerThreads` the call waits for one of its threads; past `requestsInFlight`
    /// it fails with EAGAIN, as a kernel out of request slots answers. The body makes its driver call in the
    /// window it is given, where an interrupt can reach it.
    func offload(_ request: UInt32, _ body: @escaping @Sendable (DriverWindow) -> Void) {
        enum Admission { case cancelled, refused, start(UInt64), queued }
        let work = PendingWork(body)
        let limits = self.limits
        // The call counts as running from now: a teardown waits for it even before a thread takes it.
        let admission = lock.withLock { () -> Admission in
            guard !cancelled else { return .cancelled }
            guard workers.count < limits.requestsInFlight else { return .refused }
            nextWorker &+= 1
            workers.updateValue(WorkerCall(request: request), forKey: nextWorker)
            guard running < limits.workerThreads else {
                waiting.append((nextWorker, work))
                return .queued
            }
            running += 1
            return .start(nextWorker)
        }
        switch admission {
        case .cancelled: work.drop()
        case .refused:
            work.drop()
            reachedLimit("requests in flight", limits.requestsInFlight, .resourceTemporarilyUnavailable)
            fail(request, .resourceTemporarilyUnavailable)
        case .queued: reachedLimit("worker threads (later calls wait)", limits.workerThreads, nil)
        case .start(let token): start(token, work)
        }
    }

    /// Runs the call on a thread of the pool, then, on the same thread, the session's calls that waited for one.
    private func start(_ token: UInt64, _ work: PendingWork) {
        backend.workers.run { [self] in
            var call: (token: UInt64, work: PendingWork)? = (token, work)
            var reusable = true
            while let (token, work) = call {
                enum Start { case run, cancelled, interrupted(UInt32) }
                let start = lock.withLock { () -> Start in
                    guard !cancelled, let entry = workers[token] else { return .cancelled }
                    if entry.interrupted { return .interrupted(entry.request) }
                    workers[token]?.thread = pthread_self()
                    return .run
                }
                switch start {
                case .run: work.run(DriverWindow(session: self, token: token))
                case .cancelled: work.drop()
                case .interrupted(let request):
                    // Interrupted before it started: what the driver's wait answers a pending signal, without the call.
                    work.drop()
                    fail(request, .interrupted)
                }
                // Only a cancelled session leaves a signal behind for its workers (an interrupt's is taken as
                // its call leaves the driver): a thread that saw no cancellation here is given the next call.
                (call, reusable) = lock.withLock { () -> ((token: UInt64, work: PendingWork)?, Bool) in
                    workers.removeValue(forKey: token)
                    if !cancelled && !waiting.isEmpty { return (waiting.removeFirst(), true) }
                    running -= 1
                    return (nil, !cancelled)
                }
            }
            return reusable
        }
    }

    /// PD_INTERRUPT: the guest's caller of `request` got a signal. A call of this session that waits for a
    /// thread is answered EINTR without running; one that runs is marked, and its thread is signalled
    /// whenever it is inside the driver's system call until the call is over, so that the driver's wait
    /// returns and the call answers EINTR as the driver gives it (or the device's answer, if it came first).
    /// A request done or unknown, or answered on the session's own thread already: nothing happens.
    func interrupt(_ request: UInt32) {
        let (queued, running) = lock.withLock { () -> ([PendingWork], [UInt64]) in
            var queued: [PendingWork] = []
            var running: [UInt64] = []
            // At most `requestsInFlight` calls to look through: a flood of interrupts costs what it carries.
            for (token, call) in workers where call.request == request && !call.interrupted {
                if let at = waiting.firstIndex(where: { $0.token == token }) {
                    queued.append(waiting.remove(at: at).work)
                    workers.removeValue(forKey: token)
                } else {
                    workers[token]?.interrupted = true
                    running.append(token)
                }
            }
            return (queued, running)
        }
        for work in queued {
            work.drop()
            fail(request, .interrupted)
        }
        // One pool thread per running call at most, so no more than the session's `workerThreads`.
        for token in running {
            backend.workers.run { [self] in
                keepInterrupting(token)
                return true   // this thread is never signalled itself
            }
        }
    }

    /// Signals the call's thread whenever it is inside the driver's system call, until the call is over. A
    /// signal that lands just before the thread enters the system call is handled there and lost on the
    /// call, which then sleeps as if none came: one is not enough, so it is repeated, less and less often.
    private func keepInterrupting(_ token: UInt64) {
        var pause: UInt32 = 200
        while lock.withLock({ () -> Bool in
            guard !cancelled, let call = workers[token] else { return false }   // a teardown interrupts it from now on
            if call.inDriver, let thread = call.thread {
                pthread_kill(thread, interruptSignal)
                workers[token]?.signalled = true
            }
            return true
        }) {
            usleep(pause)
            pause = min(pause * 2, 50_000)
        }
    }

    /// The call's thread is out of the driver: no interrupt signals it from now on, and one sent while it was
    /// inside but not yet delivered is taken here, so that the thread goes on (to the reply, to other calls)
    /// with no signal pending.
    fileprivate func leftDriver(_ token: UInt64) {
        let signalled = lock.withLock { () -> Bool in
            workers[token]?.inDriver = false
            return workers[token]?.signalled ?? false
        }
        if signalled { takePendingInterrupt() }
    }
}

/// A call on a worker thread, from its admission until it is answered.
struct WorkerCall {
    /// The guest's request it answers: what PD_INTERRUPT names.
    let request: UInt32
    /// The thread that runs it, once one does.
    var thread: pthread_t?
    /// The guest interrupted it.
    var interrupted = false
    /// Its thread is inside the driver's system call (DriverWindow): the only time an interrupt signals it.
    var inDriver = false
    /// An interrupt signalled its thread: the signal is taken before the thread goes on.
    var signalled = false

    init(request: UInt32) { self.request = request }
}

/// The stretch of a call in which it is inside the driver's system call. On a worker thread it is the only
/// time the guest's PD_INTERRUPT signals the thread, so that nothing else the call does (a plug-in's own
/// calls, the reply's send) sees the signal. A call the session's own thread makes runs `inline`: frames are
/// served in order, so an interrupt naming it comes once it is over.
struct DriverWindow: Sendable {
    fileprivate let session: Session?
    fileprivate let token: UInt64

    static let inline = DriverWindow(session: nil, token: 0)

    func run<T>(_ systemCall: () -> T) -> T {
        guard let session else { return systemCall() }
        session.lock.withLock { session.workers[token]?.inDriver = true }
        defer { session.leftDriver(token) }
        return systemCall()
    }
}

/// A worker's call, dropped as soon as it has run: what it holds (its open file) is released before the
/// session counts the worker finished, so a session torn down after its workers (at PD_BYE) has closed
/// the device by then, not whenever the thread's closure happens to go.
final class PendingWork: @unchecked Sendable {
    private var body: (@Sendable (DriverWindow) -> Void)?
    init(_ body: @escaping @Sendable (DriverWindow) -> Void) { self.body = body }
    func run(_ window: DriverWindow) {
        body?(window)
        body = nil
    }

    func drop() { body = nil }
}

/// Bytes of a session's read budget, held by one read's call for as long as the call exists.
final class ReadReservation: @unchecked Sendable {
    let session: Session
    let count: Int
    init(_ session: Session, _ count: Int) { self.session = session; self.count = count }
    deinit { session.lock.withLock { session.readBytesInFlight -= count } }
}
