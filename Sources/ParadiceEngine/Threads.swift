#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The signal that interrupts a worker blocked in a driver call when its guest goes away.
let interruptSignal = SIGUSR1

/// Installs a handler without SA_RESTART, so that a blocked syscall returns EINTR. Once per process.
func installInterruptHandler() {
    // A parent may have left signals blocked; the backend relies on its own.
    var none = sigset_t()
    sigemptyset(&none)
    sigprocmask(SIG_SETMASK, &none, nil)
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in }
    sigemptyset(&action.sa_mask)
    action.sa_flags = 0
    sigaction(interruptSignal, &action, nil)
    signal(SIGPIPE, SIG_IGN)
}

/// A mutex with a scoped `withLock`, for state that lives beside it (plug-ins keep their per-file state
/// under one). It is a `Synchronization.Mutex`, whose storage does not move: a `pthread_mutex_t` in a
/// stored property, passed as `&mutex`, has no stable address in Swift.
public final class Lock: Sendable {
    private let mutex = Mutex<Void>(())

    public init() {}

    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        try mutex.withLock { _ throws(E) -> T in try body() }
    }
}
