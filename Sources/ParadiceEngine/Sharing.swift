import ParadiceSystem
import ParadiceTransport

/// The bookkeeping of `exclusive` and `foreground` exports, backend-wide (docs/policy.md, "Sharing modes").
/// Class-agnostic: what a foreground file gets is its plug-in's `foregroundChanged`.
final class DeviceSharing: @unchecked Sendable {
    private let lock = Lock()
    /// Per exclusive path: the guest process tree (its handle table) that holds it, and how many of its opens.
    private var holders: [String: (table: ObjectIdentifier, opens: Int)] = [:]
    /// The guest whose files of foreground exports are the active ones: the first to open one, until a focus.
    private var foreground: PeerIdentity?
    private struct ForegroundFile {
        let file: DeviceFile
        let plugin: (any DevicePlugin)?
        let owner: PeerIdentity
    }
    /// The open files of foreground exports. The plug-ins' calls on them are made under `lock`, so that a
    /// file's release (before its descriptor closes) waits for a switch that is using it.
    private var foregroundFiles: [UInt64: ForegroundFile] = [:]
    private var nextClaim: UInt64 = 0

    /// A hold on an exclusive path for the process tree of `table`; nil while another tree holds it (EBUSY).
    func claimExclusive(_ path: String, by table: HandleTable) -> SharingClaim? {
        let key = ObjectIdentifier(table)
        let granted = lock.withLock { () -> Bool in
            if let holder = holders[path], holder.table != key { return false }
            holders[path, default: (key, 0)].opens += 1
            return true
        }
        guard granted else { return nil }
        return SharingClaim { [self] in
            lock.withLock {
                guard let holder = holders[path] else { return }
                holders[path] = holder.opens > 1 ? (holder.table, holder.opens - 1) : nil
            }
        }
    }

    /// Enters a newly opened file of a foreground export: its plug-in hears at once whether it is the
    /// foreground's. With no foreground yet, its guest becomes it.
    func joinForeground(_ file: DeviceFile, plugin: (any DevicePlugin)?, owner: PeerIdentity) -> SharingClaim {
        let id = lock.withLock { () -> UInt64 in
            nextClaim += 1
            foregroundFiles[nextClaim] = ForegroundFile(file: file, plugin: plugin, owner: owner)
            if foreground == nil { foreground = owner }
            plugin?.foregroundChanged(file, isForeground: owner.isSameGuest(as: foreground!))
            return nextClaim
        }
        return SharingClaim { [self] in lock.withLock { _ = foregroundFiles.removeValue(forKey: id) } }
    }

    /// Makes `guest` the foreground: background files lose what they had first, then the foreground's
    /// files take it. Returns how many open files the foreground guest has.
    func focus(_ guest: PeerIdentity) -> Int {
        lock.withLock {
            foreground = guest
            let files = foregroundFiles.sorted { $0.key < $1.key }.map(\.value)
            let (front, back) = (files.filter { $0.owner.isSameGuest(as: guest) }, files.filter { !$0.owner.isSameGuest(as: guest) })
            for f in back { f.plugin?.foregroundChanged(f.file, isForeground: false) }
            for f in front { f.plugin?.foregroundChanged(f.file, isForeground: true) }
            return front.count
        }
    }

    var foregroundGuest: PeerIdentity? { lock.withLock { foreground } }
}

/// What an open file holds of its export's sharing mode; given back once, when the file closes (before
/// its descriptor does) or when the open it was taken for failed.
final class SharingClaim: @unchecked Sendable {
    private let giveBack: LockedValue<(() -> Void)?>

    init(_ giveBack: @escaping () -> Void) { self.giveBack = LockedValue(giveBack) }

    func release() { giveBack.withLock { g -> (() -> Void)? in defer { g = nil }; return g }?() }

    deinit { release() }
}

extension PeerIdentity {
    /// Whether a file of `other` is the foreground's when `self` is: the same principal, or on plain TCP,
    /// which proves no one, the same connection (its address and port).
    func isSameGuest(as other: PeerIdentity) -> Bool { isSamePrincipal(as: other) || (!isAuthenticated && self == other) }

    /// Whether `name` names this guest as `paradice focus` takes it: the PSK identity, the certificate's
    /// subject or CN, `uid N`, or the whole of what the session's log lines show as its identity.
    func isNamed(_ name: String) -> Bool {
        if name == description { return true }
        switch self {
        case .presharedKey(let identity): return name == identity || name == "psk \(identity)"
        case .certificate(let subject, _):
            return name == subject || name == "cert \(subject)" || name == Policy.Match.commonName(of: subject)
        case .local(let uid, let gid, _): return name == "uid \(uid)" || name == "uid \(uid) gid \(gid)"
        case .unauthenticated(let address): return name == address
        }
    }
}
