#if canImport(Glibc)
import Glibc
#endif

/// Where a session's calls that may sleep in the driver run: threads of the backend's pool, within the
/// session's limits, interrupted when the guest goes away (Session.teardown).
extension Session {
    /// Runs an operation that may sleep in the driver on a thread of the backend's pool, so that this
    /// guest's other requests and every other guest go on. The thread is interrupted if the guest goes away.
    /// Past the session's `workerThreads` the call waits for one of its threads; past `requestsInFlight`
    /// it fails with EAGAIN, as a kernel out of request slots answers.
    func offload(_ request: UInt32, _ body: @escaping @Sendable () -> Void) {
        enum Admission { case cancelled, refused, start(UInt64), queued }
        let work = PendingWork(body)
        let limits = self.limits
        // The call counts as running from now: a teardown waits for it even before a thread takes it.
        let admission = lock.withLock { () -> Admission in
            guard !cancelled else { return .cancelled }
            guard workers.count < limits.requestsInFlight else { return .refused }
            nextWorker &+= 1
            workers.updateValue(nil, forKey: nextWorker)
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
                let go = lock.withLock { () -> Bool in
                    if !cancelled { workers[token] = pthread_self() }
                    return !cancelled
                }
                if go { work.run() } else { work.drop() }
                // Only a cancelled session signals its workers: a thread that saw no cancellation here was
                // never signalled, and is given the next call.
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
}

/// A worker's call, dropped as soon as it has run: what it holds (its open file) is released before the
/// session counts the worker finished, so a session torn down after its workers (at PD_BYE) has closed
/// the device by then, not whenever the thread's closure happens to go.
final class PendingWork: @unchecked Sendable {
    private var body: (@Sendable () -> Void)?
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func run() {
        body?()
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
