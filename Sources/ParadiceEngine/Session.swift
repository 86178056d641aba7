#if canImport(Glibc)
import Glibc
#endif
import CParadice
import Logging
import ParadiceSystem
import ParadiceTransport
import ParadiceWire

/// One guest connection: its handle table, its workers, its watches. Everything it opened is closed
/// when the guest goes away, however it goes.
///
/// The session reads frames, decodes each into a `Request` (ParadiceWire) and dispatches it
/// (SessionDispatch.swift); the handlers check handles and limits and choose the thread, and `Executor`
/// makes the system calls. Its state, by concern: workers (SessionWorkers.swift), mappings and mirrors
/// (SessionMappings.swift), exported trees (SessionTrees.swift), replies (SessionReplies.swift).
final class Session: @unchecked Sendable {
    let id: UInt32
    let socket: FrameSocket
    unowned let backend: Backend
    var logger: Logger
    /// Who the guest is: what its TLS certificate or PSK proved, its credentials on a unix socket, or only
    /// its address on plain TCP (unauthenticated). Final once the connection is established, before the
    /// first frame is read; every log line of the session carries it.
    private(set) var identity: PeerIdentity
    /// `identity` for other threads (a focus request), once the handshake has made it final.
    private let established = LockedValue<PeerIdentity?>(nil)
    var establishedIdentity: PeerIdentity? { established.withLock { $0 } }

    /// Guards the state below that more than the session's own thread reaches: workers, mappings, budgets.
    let lock = Lock()
    /// Shared with the sessions of forked children that joined it.
    var handles = HandleTable()
    /// What plug-ins keep for this guest across its files; shared, like `handles`, with its forked children.
    var guest = GuestScope()
    /// The calls on worker threads, with the thread once one runs it (SessionWorkers.swift).
    var workers: [UInt64: WorkerCall] = [:]
    var nextWorker: UInt64 = 0
    /// Calls admitted while `workerThreads` of the session's calls were running: each waits for one to end.
    var waiting: [(token: UInt64, work: PendingWork)] = []
    var running = 0
    /// Bytes the session's reads in flight may fill (GuestLimits.readBytesInFlight).
    var readBytesInFlight = 0
    /// The limits this session has run into, each logged the first time only.
    var limitsReached: Set<String> = []
    var cancelled = false
    /// The request of the guest's PD_BYE: answered once its files are released.
    private var farewell: UInt32?
    var mappings: [UInt32: DeviceMapping] = [:]
    var mappedBytes = 0
    var nextMapping: UInt32 = 1
    /// The policy rule found for this guest (SessionPolicy.swift), with a lock of its own: `limits` reads it
    /// under `lock`.
    let policyCache = LockedValue<(policy: Policy, rule: Policy.Rule?)?>(nil)
    /// Made with the session, before any other thread sees it (a lazy var is no safe first use from two).
    private(set) var watcher: Watcher!

    init(id: UInt32, socket: FrameSocket, backend: Backend) {
        self.id = id
        self.socket = socket
        self.backend = backend
        var logger = backend.logger
        logger[metadataKey: "session"] = "\(id)"
        logger[metadataKey: "peer"] = "\(socket.peer)"
        identity = socket.identity
        if !socket.usesTLS { logger[metadataKey: "identity"] = "\(socket.identity)" }
        self.logger = logger
        watcher = Watcher(session: self)
    }

    /// A handshake carries a version and a name: anything larger is not one.
    static let maxHandshake = 64 << 10

    func run() {
        defer { teardown() }
        do {
            if socket.usesTLS {
                do { try socket.establish(timeoutSeconds: limits.handshakeSeconds) } catch {
                    logger.warning("TLS handshake failed: connection refused", metadata: ["reason": "\(error)"])
                    return
                }
                identity = socket.identity
                logger[metadataKey: "identity"] = "\(identity)"
                policyCache.withLock { $0 = nil }   // found for the address alone, before TLS proved who it is
            }
            setReceiveTimeout(seconds: limits.handshakeSeconds)
            let first: Frame?
            do { first = try socket.receive(maxLength: Self.maxHandshake) } catch TransportError.system(_, .resourceTemporarilyUnavailable) {
                logger.warning("connection without a handshake", metadata: ["waited": "\(limits.handshakeSeconds) s"])
                return
            }
            guard let hello = first, hello.op == PD_HELLO.code else {
                logger.warning("connection without a handshake")
                return
            }
            try handshake(hello)
            established.withLock { $0 = identity }
            setReceiveTimeout(seconds: 0)   // a guest may be silent as long as it likes once it is one
            while let frame = try socket.receive() {
                if frame.op == PD_BYE.code { farewell = frame.request; break }
                let decoded: RequestFrame
                do { decoded = try RequestFrame(frame) } catch { throw MalformedFrame(op: frame.op, reason: error.message) }
                try dispatch(decoded)
            }
            logger.info(farewell == nil ? "guest disconnected" : "guest said goodbye")
        } catch let malformed as MalformedFrame {
            logger.warning("malformed frame: session ended", metadata: ["op": "\(malformed.op)", "reason": "\(malformed.reason)"])
        } catch let malformed as ProtocolError {
            // A header past the largest frame.
            logger.warning("malformed frame: session ended", metadata: ["reason": "\(malformed.message)"])
        } catch {
            logger.info("guest connection ended", metadata: ["reason": "\(error)"])
        }
    }

    private func setReceiveTimeout(seconds: Int) { socket.setReceiveTimeout(seconds: seconds) }

    private func teardown() {
        // Calls still waiting for a thread never run.
        let dropped = lock.withLock { () -> [PendingWork] in
            cancelled = true
            for w in waiting { workers.removeValue(forKey: w.token) }
            defer { waiting.removeAll() }
            return waiting.map(\.work)
        }
        dropped.forEach { $0.drop() }
        watcher.stop()
        // Interrupt workers blocked in driver calls until every one has returned.
        // A worker leaves the table, under the lock, before its thread ends or takes other work:
        // signalling under the lock never reaches a thread that is gone or busy elsewhere.
        while lock.withLock({ () -> Bool in
            for case let thread? in workers.values.map(\.thread) { pthread_kill(thread, interruptSignal) }
            return !workers.isEmpty
        }) {
            usleep(1000)
        }
        lock.withLock { mappings.removeAll(); mappedBytes = 0 }   // each unmaps itself
        let count = handles.releaseAll(for: id)
        if let request = farewell { reply(request, result: 0) }
        socket.close()
        if count > 0 { logger.info("closed the guest's files", metadata: ["count": "\(count)"]) }
    }

    // MARK: handles

    func file(_ handle: UInt32) -> OpenFile? { handles.file(handle, for: id) }

    /// A handle for a new file, or nil (the file closes as it goes) when the session holds its limit of files.
    func register(_ file: OpenFile) -> UInt32? {
        let handle = handles.register(file, for: id, limit: limits.openFiles)
        if handle == nil { reachedLimit("open files", limits.openFiles, .tooManyOpenFiles) }
        return handle
    }

    /// Logs, the first time only, that the session ran into one of its limits.
    func reachedLimit(_ name: String, _ value: Int, _ error: Errno?) {
        guard lock.withLock({ limitsReached.insert(name).inserted }) else { return }
        logger.warning("guest over its limit: refused", metadata: ["limit": "\(name)", "value": "\(value)",
                                                                   "errno": "\(error?.rawValue ?? 0)", "later": "not logged"])
    }
}
