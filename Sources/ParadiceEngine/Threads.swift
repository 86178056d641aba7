#if canImport(Glibc)
import Glibc
#endif

/// Starts a detached thread running `body`.
@discardableResult
public func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    let r = pthread_create(&thread, &attributes, { raw in
        let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
        box.body()
        return nil
    }, box)
    pthread_attr_destroy(&attributes)
    precondition(r == 0, "pthread_create failed: \(r)")
    return thread
}

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

/// A mutex with a scoped `withLock` (plug-ins keep their per-file state under one too).
public final class Lock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    public init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
