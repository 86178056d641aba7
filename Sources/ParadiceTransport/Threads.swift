#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a scoped `withLock`, for state that lives beside it (plug-ins keep their per-file state
/// under one). The pthread mutex lives in memory allocated for it once: a stored property has no stable
/// address in Swift, and a mutex that moves is undefined behaviour. (Not `Synchronization.Mutex`: on
/// Linux it waits on a bare futex, which ThreadSanitizer cannot see, so every state it guards shows up
/// as a race.)
public final class Lock: @unchecked Sendable {
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// State that only its lock reaches, as NIOLockedValueBox keeps it. (A `Lock` of its own rather than a
/// `LockedValue<Void>` for state that lives beside it: ThreadSanitizer takes a zero-sized state's
/// accesses for the object's own.)
public final class LockedValue<State>: @unchecked Sendable {
    private let lock = Lock()
    private var state: State

    public init(_ state: State) { self.state = state }

    public func withLock<T, E: Error>(_ body: (inout State) throws(E) -> T) throws(E) -> T {
        try lock.withLock { () throws(E) -> T in try body(&state) }
    }
}

/// State guarded by a lock, with a condition to wait on until the state allows a step. The condition
/// lives in memory allocated for it once, as the lock's mutex does.
public final class ConditionLock<State>: @unchecked Sendable {
    private let lock = Lock()
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    public init(_ state: State) {
        self.state = state
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    public func withLock<T, E: Error>(_ body: (inout State) throws(E) -> T) throws(E) -> T {
        try lock.withLock { () throws(E) -> T in try body(&state) }
    }

    /// Runs `step` under the lock each time the state may have changed, until it gives a value. The
    /// state is not borrowed while the thread waits, so others may change it meanwhile.
    public func withLock<T>(waitingFor step: (inout State) -> T?) -> T {
        lock.withLock {
            while true {
                if let value = step(&state) { return value }
                pthread_cond_wait(condition, lock.mutex)
            }
        }
    }

    /// Wakes one waiter (after a change that one of them can act on).
    public func signal() { pthread_cond_signal(condition) }

    /// Wakes every waiter.
    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// Starts a detached thread running `body`.
@discardableResult
public func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    // The attributes object lives at one address from init to destroy, as pthread objects must.
    let attributes = UnsafeMutablePointer<pthread_attr_t>.allocate(capacity: 1)
    defer { attributes.deallocate() }
    pthread_attr_init(attributes)
    pthread_attr_setdetachstate(attributes, Int32(PTHREAD_CREATE_DETACHED))
    let r = pthread_create(&thread, attributes, { raw in
        let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
        box.body()
        return nil
    }, box)
    pthread_attr_destroy(attributes)
    precondition(r == 0, "pthread_create failed: \(r)")
    return thread
}
