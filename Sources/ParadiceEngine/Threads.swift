#if canImport(Glibc)
import Glibc
#endif
import ParadiceTransport

/// The signal that interrupts a worker blocked in a driver call when its guest goes away or its caller got
/// a signal (PD_INTERRUPT).
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

/// Where the SIGHUP handler notes that the signal came (an eventfd the reload thread reads).
nonisolated(unsafe) private var hangupNotification: Int32 = -1

/// SIGHUP writes to `eventfd`, the only thing a handler may safely do; SA_RESTART keeps driver calls
/// the signal happens to land in going.
func installHangupHandler(notifying eventfd: Int32) {
    hangupNotification = eventfd
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in
        var one: UInt64 = 1
        _ = write(hangupNotification, &one, 8)
    }
    sigemptyset(&action.sa_mask)
    action.sa_flags = SA_RESTART
    sigaction(SIGHUP, &action, nil)
}

/// Takes the interrupt signal if one was sent to this thread and not yet delivered: blocked, dequeued
/// without waiting, unblocked. A thread that was signalled inside a driver call goes on clean.
func takePendingInterrupt() {
    var only = sigset_t()
    sigemptyset(&only)
    sigaddset(&only, interruptSignal)
    pthread_sigmask(SIG_BLOCK, &only, nil)
    var now = timespec(tv_sec: 0, tv_nsec: 0)
    while sigtimedwait(&only, nil, &now) == interruptSignal {}
    pthread_sigmask(SIG_UNBLOCK, &only, nil)
}

/// The transports' lock, for plug-ins (which see the engine, not the transports).
public typealias Lock = ParadiceTransport.Lock

/// State only its lock reaches, for plug-ins (which see the engine, not the transports).
public typealias LockedValue = ParadiceTransport.LockedValue
