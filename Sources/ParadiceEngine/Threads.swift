#if canImport(Glibc)
import Glibc
#endif
import ParadiceTransport

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

/// The transports' lock, for plug-ins (which see the engine, not the transports).
public typealias Lock = ParadiceTransport.Lock

/// State only its lock reaches, for plug-ins (which see the engine, not the transports).
public typealias LockedValue = ParadiceTransport.LockedValue
