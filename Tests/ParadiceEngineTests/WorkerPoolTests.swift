import Foundation
@testable import ParadiceEngine
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("worker pool")
struct WorkerPoolTests {
    /// Calls that sleep in a driver may all be waiting at once: none waits for a thread.
    @Test func everyJobGetsAThreadAtOnce() {
        let pool = WorkerPool(maxIdle: 2)
        let jobs = 6
        let lock = NSCondition()
        nonisolated(unsafe) var started = 0, finished = 0
        for _ in 0..<jobs {
            pool.run {
                lock.lock()
                started += 1
                lock.broadcast()
                // Each job holds its thread until every job has started.
                let deadline = Date().addingTimeInterval(10)
                while started < jobs && lock.wait(until: deadline) {}
                if started == jobs { finished += 1 }
                lock.unlock()
                return true
            }
        }
        let done = { () -> Int in lock.lock(); defer { lock.unlock() }; return finished }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && done() < jobs { usleep(10_000) }
        #expect(done() == jobs)
    }

    /// A thread that served a call parks and serves the next; beyond the limit, threads end.
    @Test func threadsAreKeptForTheNextCall() {
        let pool = WorkerPool(maxIdle: 2)
        let seen = NSLock()
        nonisolated(unsafe) var threads: [pthread_t] = []
        for _ in 0..<4 {
            pool.run { seen.lock(); threads.append(pthread_self()); seen.unlock(); usleep(50_000); return true }
        }
        var waited = 0
        while pool.parked < 2 && waited < 200 { usleep(10_000); waited += 1 }
        usleep(100_000)
        #expect(pool.parked == 2)
        let again = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var reused = false
        pool.run {
            seen.lock(); reused = threads.contains { pthread_equal($0, pthread_self()) != 0 }; seen.unlock()
            again.signal()
            return true
        }
        #expect(again.wait(timeout: .now() + 10) == .success)
        #expect(reused)
    }
}
