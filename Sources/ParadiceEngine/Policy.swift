#if canImport(Glibc)
import Glibc
#endif
import ParadiceTransport

/// Who may do what: rules, each for the guests its match names, tried in the file's order. The first rule
/// whose match holds decides everything for the session; a guest no rule matches may do nothing at all.
/// A backend without a policy lets every guest use every export (the backend's own limits only).
public final class Policy: Sendable {
    public let file: String
    public let rules: [Rule]

    public init(file: String, rules: [Rule]) {
        self.file = file
        self.rules = rules
    }

    /// The first rule that matches `identity`, or nil: the guest is denied everything.
    public func rule(for identity: PeerIdentity) -> Rule? { rules.first { $0.match.holds(for: identity) } }

    public struct Rule: Sendable {
        /// Its place in the file (1 for the first rule), its name if it has one, and its line.
        public var index: Int
        public var name: String?
        public var line: Int
        public var match: Match
        /// Globs over exported paths (fnmatch with FNM_PATHNAME, as exports are matched).
        public var devices: [String]
        public var readOnly: Bool
        public var ioctls: IoctlFilter
        /// Per-session limits that override the backend's own.
        public var limits: LimitOverrides
        /// Whether the guest may switch the foreground guest (`paradice focus`).
        public var mayFocus = false

        public func mayOpen(_ path: String) -> Bool { devices.contains { fnmatch($0, path, FNM_PATHNAME) == 0 } }
    }

    /// What must hold of a guest's identity: every key given (subject, cn, san, psk, uid, gid), or
    /// `unauthenticated` (plain TCP, vsock), or `any`.
    public struct Match: Sendable {
        public var subject: String?
        public var commonName: String?
        public var alternativeName: String?
        public var presharedKey: String?
        public var uid: UInt32?
        public var gid: UInt32?
        public var unauthenticated = false
        public var any = false

        public init() {}

        func holds(for identity: PeerIdentity) -> Bool {
            if any { return true }
            func glob(_ pattern: String?, _ text: String?) -> Bool {
                guard let pattern else { return true }
                guard let text else { return false }
                return fnmatch(pattern, text, 0) == 0
            }
            if unauthenticated {
                if case .unauthenticated = identity { return true }
                return false
            }
            let certificate: (subject: String, names: [String])?
            if case .certificate(let s, let n) = identity { certificate = (s, n) } else { certificate = nil }
            if subject != nil || commonName != nil || alternativeName != nil {
                guard let certificate, glob(subject, certificate.subject), glob(commonName, Self.commonName(of: certificate.subject)) else { return false }
                if let alternativeName, !certificate.names.contains(where: { fnmatch(alternativeName, $0, 0) == 0 }) { return false }
            }
            if presharedKey != nil {
                guard case .presharedKey(let name) = identity, glob(presharedKey, name) else { return false }
            }
            if uid != nil || gid != nil {
                guard case .local(let u, let g, _) = identity, uid.map({ $0 == u }) ?? true, gid.map({ $0 == g }) ?? true else { return false }
            }
            return subject != nil || commonName != nil || alternativeName != nil || presharedKey != nil || uid != nil || gid != nil
        }

        /// The CN of an RFC 2253 subject ("CN=guest-1,O=Paradice").
        static func commonName(of subject: String) -> String? {
            for part in subject.split(separator: ",") where part.hasPrefix("CN=") { return String(part.dropFirst(3)) }
            return nil
        }
    }

    /// Ioctls by the spec's name (globs): only those allowed, or all but those denied.
    public enum IoctlFilter: Sendable {
        case all
        case only([String])
        case allExcept([String])

        public func permits(_ name: String) -> Bool {
            switch self {
            case .all: return true
            case .only(let names): return names.contains { fnmatch($0, name, 0) == 0 }
            case .allExcept(let names): return !names.contains { fnmatch($0, name, 0) == 0 }
            }
        }
    }

    /// Session limits a rule sets; the rest are the backend's.
    public struct LimitOverrides: Sendable {
        public var openFiles: Int?
        public var requestsInFlight: Int?
        public var workerThreads: Int?
        public var mappedBytes: Int?
        public var readBytesInFlight: Int?

        public init() {}

        func applied(to base: GuestLimits) -> GuestLimits {
            var limits = base
            if let openFiles { limits.openFiles = openFiles }
            if let requestsInFlight { limits.requestsInFlight = requestsInFlight }
            if let workerThreads { limits.workerThreads = workerThreads }
            if let mappedBytes { limits.mappedBytes = mappedBytes }
            if let readBytesInFlight { limits.readBytesInFlight = readBytesInFlight }
            return limits
        }
    }
}

extension Policy.Rule: CustomStringConvertible {
    /// How an audit line names the rule: "rule 2 (cameras) at policy.yaml:12".
    public func described(in file: String) -> String {
        "rule \(index)\(name.map { " (\($0))" } ?? "") at \(file):\(line)"
    }
    public var description: String { "rule \(index)\(name.map { " (\($0))" } ?? "")" }
}
