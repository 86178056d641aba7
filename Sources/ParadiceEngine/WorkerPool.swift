#if canImport(Glibc)
import Glibc
#endif

/// Threads for driver calls that may sleep, kept parked between calls. Under an emulated CPU creating a
/// thread costs as much as a round trip to the guest, and a blocking file pays for one at every read,
/// poll or blocking ioctl. A job never waits for a thread: when none is idle a new one starts, so a call
/// that sleeps for ever holds one thread and delays nobody.
final class WorkerPool: @unchecked Sendable {
    /// A job answers whether its thread may take another: a thread that may have been sent the interrupt
    /// signal ends instead, so that the signal can never reach somebody else's call.
    typealias Job = @Sendable () -> Bool

    private var mutex = pthread_mutex_t()
    private var wakeup = pthread_cond_t()
    private var jobs: [Job] = []
    private var idle = 0
    /// Parked threads beyond this many end: a burst of blocking calls leaves no crowd behind.
    private let maxIdle: Int

    init(maxIdle: Int = 8) {
        self.maxIdle = maxIdle
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wakeup, nil)
    }

    func run(_ job: @escaping Job) {
        pthread_mutex_lock(&mutex)
        jobs.append(job)
        let start = jobs.count > idle
        if !start { pthread_cond_signal(&wakeup) }
        pthread_mutex_unlock(&mutex)
        if start { startThread { [self] in serve() } }
    }

    private func serve() {
        pthread_mutex_lock(&mutex)
        while true {
            while jobs.isEmpty {
                if idle >= maxIdle { break }   // a thread started for a job another took: not one more parked
                idle += 1
                pthread_cond_wait(&wakeup, &mutex)
                idle -= 1
            }
            if jobs.isEmpty { break }
            let job = jobs.removeFirst()
            pthread_mutex_unlock(&mutex)
            let reusable = job()
            pthread_mutex_lock(&mutex)
            if !reusable || idle >= maxIdle { break }
        }
        pthread_mutex_unlock(&mutex)
    }

    /// Threads parked now (for tests).
    var parked: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return idle
    }
}
