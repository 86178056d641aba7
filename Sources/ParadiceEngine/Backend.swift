#if canImport(Glibc)
import Glibc
#endif
import Logging
import ParadicePlan
import ParadiceSpec
import ParadiceSystem
import ParadiceTransport
import ParadiceWire
import CParadice

/// What a backend serves and where.
public struct BackendConfiguration: Sendable {
    public var listen: [Endpoint] = []
    /// How TCP listeners secure their guests: TLS (certificates, PSK) unless plain TCP is asked for.
    public var security = TransportSecurity()
    public var plugins: [String] = []
    public var devices: [DeviceExport] = []
    public var specsDirectory: String
    /// Hand the device's own descriptor to a guest on this machine (unix socket) so that its mmap is the
    /// device's real, shared mapping. The guest then holds that descriptor: opt-in.
    public var shareMappings = false
    /// Read-only subtrees (sysfs) a guest may open, list and read links in: what libraries read to
    /// identify a device (v4l-utils, libdrm). Every path is resolved and must stay inside.
    public var trees: [String] = []
    /// What one guest may hold, and how many guests at once.
    public var limits = GuestLimits()
    /// The policy file (PolicyFile.swift): which guest may open which device, how, and which ioctls. Without
    /// one every guest may use every export. SIGHUP reads it again.
    public var policyFile: String?

    public init(specsDirectory: String) { self.specsDirectory = specsDirectory }
}

/// Per-guest limits: one guest, however hostile, holds at most this much of the backend. Each refusal is
/// the errno a local kernel gives for the resource (see docs/protocol.md, "Limits"), logged once per session.
public struct GuestLimits: Sendable, Equatable {
    /// Files a session holds open, its ioctl-created descriptors included (EMFILE beyond).
    public var openFiles = 4096
    /// Calls handed to worker threads and not yet answered (EAGAIN beyond).
    public var requestsInFlight = 1024
    /// Threads running one session's calls at once; further calls wait for one of them.
    public var workerThreads = 64
    /// Bytes of device mappings a session holds (ENOMEM beyond, as mmap past RLIMIT_AS).
    public var mappedBytes = 8 << 30
    /// Bytes of reads in flight: buffers a session's reads fill before their replies go out. One read is
    /// always admitted (up to the largest frame); more past this are EAGAIN.
    public var readBytesInFlight = 64 << 20
    /// The largest frame a guest may send (the protocol's PD_MAX_FRAME at most); a larger one ends its session.
    public var maxFrame = Int(PD_MAX_FRAME)
    /// Sessions at once, backend-wide; a further connection is refused.
    public var sessions = 1024
    /// Seconds a new connection has to complete its handshake: a silent one would hold a session for ever.
    public var handshakeSeconds = 10
    /// Seconds a forked child has to claim the files its parent held at the fork (PD_FORK's ticket); an
    /// unclaimed ticket's references are dropped then, as a child that died before it connected.
    public var forkTicketSeconds = 60
    /// PD_FORK tickets one process's files may have unclaimed at once (EAGAIN beyond, as fork past RLIMIT_NPROC).
    public var forkTickets = 64

    public init() {}
}

public enum BackendError: Error, CustomStringConvertible {
    case unknownPlugin(String, available: [String])
    case noListener

    public var description: String {
        switch self {
        case .unknownPlugin(let n, let available):
            return "no plug-in named '\(n)' (available: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case .noListener: return "nothing to listen on: give --listen"
        }
    }
}

/// The backend: owns the real devices, serves guests over its listeners, one session per connection.
public final class Backend: @unchecked Sendable {
    public let configuration: BackendConfiguration
    public let specs: SpecSet
    let planner: Planner
    let exports: ExportTable
    let plugins: [String: any DevicePlugin]
    let logger: Logger
    public private(set) var listeners: [Listener] = []
    /// Threads for the driver calls that may sleep, shared by every session.
    let workers = WorkerPool()
    private let sessionsLock = Lock()
    private var sessions: [UInt32: Session] = [:]
    private var nextSession: UInt32 = 1
    /// Forked children's files, held from the parent's PD_FORK until the child claims them (by ticket id,
    /// from the sessions' id space).
    private var forkTickets: [UInt32: ForkTicket] = [:]
    private var ticketExpiryStarted = false
    /// Who holds the exclusive exports, and which guest is the foreground of the foreground ones.
    let sharing = DeviceSharing()
    /// The policy in force: replaced whole by a reload, read by every session's checks.
    private let policyLock = Lock()
    private var currentPolicy: Policy?

    public init(configuration: BackendConfiguration, availablePlugins: [any DevicePlugin.Type], logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        specs = try SpecSet.load(directory: configuration.specsDirectory)
        planner = Planner(specs: specs)
        exports = ExportTable(exports: configuration.devices, specs: specs)
        var enabled: [String: any DevicePlugin] = [:]
        for name in configuration.plugins {
            guard let type = availablePlugins.first(where: { $0.name == name }) else {
                throw BackendError.unknownPlugin(name, available: availablePlugins.map { $0.name })
            }
            let plugin = type.init()
            try plugin.check(specs)
            enabled[name] = plugin
        }
        plugins = enabled
        guard !configuration.listen.isEmpty else { throw BackendError.noListener }
        if let file = configuration.policyFile { currentPolicy = try PolicyFile.load(file) }
        installInterruptHandler()
        if configuration.policyFile != nil { startPolicyReloads() }
        // Large buffers (reads, frames) come from and go back to the system: glibc's sliding threshold would
        // otherwise keep a burst's buffers in its heap, and a hostile guest's peak would stay the backend's size.
        _ = paradice_fix_mmap_threshold(64 << 10)
        for endpoint in configuration.listen {
            listeners.append(try Listener(endpoint, security: configuration.security))
            if case .tcp = endpoint, configuration.security.plainTCP {
                logger.warning("plain TCP: guests are neither authenticated nor encrypted", metadata: ["endpoint": "\(endpoint)"])
            }
        }
    }

    /// Accepts guests on every listener; returns only if every listener fails.
    public func run() {
        for listener in listeners {
            logger.info("listening", metadata: ["endpoint": "\(listener.endpoint)",
                                                "security": "\(listener.tls != nil ? "tls" : listener.endpoint.isTCP ? "plain" : "local")"])
            startThread { [self] in acceptLoop(listener) }
        }
        while true { pause() }
    }

    private func acceptLoop(_ listener: Listener) {
        while true {
            do {
                let socket = try listener.accept()
                socket.maxFrameLength = min(configuration.limits.maxFrame, Int(PD_MAX_FRAME))
                let admitted = sessionsLock.withLock { () -> Session? in
                    guard sessions.count < configuration.limits.sessions else { return nil }
                    let id = newSessionID()
                    let s = Session(id: id, socket: socket, backend: self)
                    sessions[id] = s
                    return s
                }
                guard let session = admitted else {
                    refuse(socket)
                    continue
                }
                startThread { [self] in
                    session.run()
                    sessionsLock.withLock { _ = sessions.removeValue(forKey: session.id) }
                }
            } catch {
                logger.error("accept failed", metadata: ["endpoint": "\(listener.endpoint)", "error": "\(error)"])
                usleep(100_000)
            }
        }
    }

    /// A connection past the session cap: answered, as its handshake would be, with EUSERS, then closed.
    private func refuse(_ socket: FrameSocket) {
        logger.warning("connection refused: too many sessions",
                       metadata: ["peer": "\(socket.peer)", "limit": "\(configuration.limits.sessions)"])
        // Before TLS, nothing the guest could read: its handshake just ends.
        if !socket.usesTLS { try? socket.sendRaw(Reply.frame(0, .failure(.tooManyUsers))) }
        socket.finishSending()
        socket.close()
    }

    /// The plug-in of a class, if it is enabled.
    func plugin(for specClass: SpecClass?) -> (any DevicePlugin)? { specClass?.plugin.flatMap { plugins[$0] } }

    /// The plug-in state for a newly opened file of a class, if the class's plug-in is enabled.
    func pluginState(for specClass: SpecClass?, path: String, descriptor: Int32, guest: GuestScope,
                     sharing: SharingMode) -> (any DeviceFileState)? {
        plugin(for: specClass)?.state(for: DeviceFile(path: path, descriptor: descriptor, specs: specs, guest: guest, sharing: sharing))
    }

    /// The guests connected now that `name` names (`paradice focus`), one entry per principal.
    func guests(named name: String) -> [PeerIdentity] {
        let identities = sessionsLock.withLock { sessions.values.map(\.establishedIdentity) }
        var found: [PeerIdentity] = []
        for case let identity? in identities where identity.isNamed(name) && !found.contains(where: identity.isSameGuest) {
            found.append(identity)
        }
        return found
    }

    /// The policy decisions use now; nil lets every guest use every export.
    public var policy: Policy? { policyLock.withLock { currentPolicy } }

    /// Reads the policy file again: sessions decide by the new one from their next call on. A file that
    /// does not load leaves the old policy in force.
    public func reloadPolicy() {
        guard let file = configuration.policyFile else { return }
        do {
            let policy = try PolicyFile.load(file)
            policyLock.withLock { currentPolicy = policy }
            logger.notice("policy reloaded", metadata: ["file": "\(file)", "rules": "\(policy.rules.count)"])
        } catch {
            logger.error("policy reload failed: the old policy stays in force", metadata: ["error": "\(error)"])
        }
    }

    /// SIGHUP reloads the policy, on a thread of its own (a signal handler can only note that it came).
    private func startPolicyReloads() {
        guard let wake = try? Syscall.eventfd() else {
            logger.error("no eventfd for SIGHUP: the policy cannot be reloaded")
            return
        }
        installHangupHandler(notifying: wake)
        startThread { [self] in
            var count: UInt64 = 0
            while (try? Syscall.read(wake, &count, 8, retryOnInterrupt: true)) == 8 { reloadPolicy() }
        }
    }

    public var activeSessions: Int { sessionsLock.withLock { sessions.count } }

    func session(_ id: UInt32) -> Session? { sessionsLock.withLock { sessions[id] } }

    /// Under sessionsLock: an id neither a session nor a ticket has.
    private func newSessionID() -> UInt32 {
        var id = nextSession
        while id == 0 || sessions[id] != nil || forkTickets[id] != nil { id &+= 1 }
        nextSession = id &+ 1
        return id
    }

    /// PD_FORK: a ticket holding a reference to each file the session's table holds now, for the child
    /// about to be forked; nil past the limit of unclaimed tickets. A ticket outlives its session (a parent
    /// may exit before its child connects), so unclaimed tickets count with the sessions toward
    /// max-sessions: a guest that connects, opens, forks and goes, again and again, holds no more files
    /// than that many sessions could.
    func issueForkTicket(for session: Session) -> UInt32? {
        let issued = sessionsLock.withLock { () -> UInt32? in
            guard sessions.count + forkTickets.count < configuration.limits.sessions,
                  forkTickets.values.filter({ $0.handles === session.handles }).count < configuration.limits.forkTickets else { return nil }
            let id = newSessionID()
            session.handles.join(id, from: session.id)
            forkTickets[id] = ForkTicket(handles: session.handles, guest: session.guest, identity: session.identity,
                                         expires: monotonicSeconds() + Double(configuration.limits.forkTicketSeconds))
            return id
        }
        if issued != nil { startTicketExpiry() }
        return issued
    }

    /// The child's claim in its handshake: the ticket, if the token is its table's and the claimant is the
    /// principal that forked (a ticket another principal names stays for its child).
    func claimForkTicket(_ id: UInt32, token: UInt32, by identity: PeerIdentity) -> ForkTicket? {
        sessionsLock.withLock {
            guard let ticket = forkTickets[id], ticket.handles.token == token,
                  !ticket.identity.isAuthenticated || ticket.identity.isSamePrincipal(as: identity) else { return nil }
            forkTickets[id] = nil
            return ticket
        }
    }

    /// A ticket whose fork or exec failed, given back by a session of its table: its references go now
    /// rather than at expiry. Returns how many files it held; nil for a ticket that table does not have.
    func returnForkTicket(_ id: UInt32, to session: Session) -> Int? {
        let ticket = sessionsLock.withLock { () -> ForkTicket? in
            guard let ticket = forkTickets[id], ticket.handles === session.handles else { return nil }
            forkTickets[id] = nil
            return ticket
        }
        return ticket.map { $0.handles.releaseAll(for: id) }
    }

    /// Drops the references of tickets no child claimed in time, every second while any is out.
    private func startTicketExpiry() {
        let start = sessionsLock.withLock { () -> Bool in
            defer { ticketExpiryStarted = true }
            return !ticketExpiryStarted
        }
        guard start else { return }
        startThread { [self] in
            while true {
                sleep(1)
                let now = monotonicSeconds()
                let expired = sessionsLock.withLock { () -> [(UInt32, ForkTicket)] in
                    let gone = forkTickets.filter { $0.value.expires <= now }
                    for id in gone.keys { forkTickets[id] = nil }
                    return gone.map { ($0.key, $0.value) }
                }
                for (id, ticket) in expired {
                    let count = ticket.handles.releaseAll(for: id)
                    logger.notice("a forked child did not claim its parent's files: dropped", metadata: ["ticket": "\(id)", "files": "\(count)"])
                }
            }
        }
    }
}

/// What a forked child claims: the table its parent's files are in, the ticket's references in it, and the
/// parent's guest.
struct ForkTicket {
    let handles: HandleTable
    let guest: GuestScope
    let identity: PeerIdentity
    let expires: Double
}

private func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
