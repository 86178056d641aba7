/// Who the peer of a connection is, as far as the transport proved it: what a session is known by in its
/// log lines, and what a policy matches on.
public enum PeerIdentity: Sendable, Equatable, CustomStringConvertible {
    /// TLS with a certificate the CA signed: its subject (RFC 2253) and subject alternative names ("DNS:x").
    case certificate(subject: String, names: [String])
    /// TLS with a pre-shared key: the key's identity.
    case presharedKey(identity: String)
    /// A unix socket: the peer's credentials as the kernel gives them (SO_PEERCRED).
    case local(uid: UInt32, gid: UInt32, pid: Int32)
    /// Plain TCP: only the address it connected from, which proves nothing.
    case unauthenticated(address: String)

    /// Whether `other` proved to be the same principal: the same certificate subject and names, PSK
    /// identity, or uid and gid (another process of the same user). Plain TCP proves no one.
    public func isSamePrincipal(as other: PeerIdentity) -> Bool {
        switch (self, other) {
        case (.certificate(let a, let an), .certificate(let b, let bn)): return a == b && an == bn
        case (.presharedKey(let a), .presharedKey(let b)): return a == b
        case (.local(let au, let ag, _), .local(let bu, let bg, _)): return au == bu && ag == bg
        default: return false
        }
    }

    public var isAuthenticated: Bool {
        if case .unauthenticated = self { return false }
        return true
    }

    public var description: String {
        switch self {
        case .certificate(let subject, let names): return names.isEmpty ? "cert \(subject)" : "cert \(subject) [\(names.joined(separator: ","))]"
        case .presharedKey(let identity): return "psk \(identity)"
        case .local(let uid, let gid, let pid): return "uid \(uid) gid \(gid) pid \(pid)"
        case .unauthenticated(let address): return "\(address) (unauthenticated)"
        }
    }
}
