#if canImport(Glibc)
import Glibc
#endif
import ParadiceTransport

/// Threads for driver calls that may sleep, kept parked between calls. Under an emulated CPU creating a
/// thread costs as much as a round trip to the guest, and a blocking file pays for one at every read,
/// poll or blocking ioctl. A job never waits for a thread: when none is idle a new one starts, so a call
/// that sleeps for ever holds one thread and delays nobody.
final class WorkerPool: Sendable {
    /// A job answers whether its thread may take another: a thread that may have been sent the interrupt
    /// signal ends instead, so that the signal can never reach somebody else's call.
    typealias Job = @Sendable () -> Bool

    private struct State {
        var jobs: [Job] = []
        /// Threads parked with no job.
        var idle = 0
    }

    private let state = ConditionLock(State())
    /// Parked threads beyond this many end: a burst of blocking calls leaves no crowd behind.
    private let maxIdle: Int

    init(maxIdle: Int = 8) {
        self.maxIdle = maxIdle
    }

    func run(_ job: @escaping Job) {
        let start = state.withLock { s -> Bool in
            s.jobs.append(job)
            return s.jobs.count > s.idle
        }
        if start { startThread { [self] in serve() } } else { state.signal() }
    }

    private func serve() {
        while true {
            var parked = false
            // nil: park; .some(nil): end (a thread started for a job another took, with enough parked).
            let next = state.withLock(waitingFor: { s -> Job?? in
                if !s.jobs.isEmpty {
                    if parked { s.idle -= 1 }
                    return .some(s.jobs.removeFirst())
                }
                if !parked {
                    if s.idle >= maxIdle { return .some(nil) }
                    s.idle += 1
                    parked = true
                }
                return nil
            })
            guard let job = next else { return }
            let reusable = job()
            guard reusable, state.withLock({ $0.idle < maxIdle }) else { return }
        }
    }

    /// Threads parked now (for tests).
    var parked: Int { state.withLock { $0.idle } }
}
