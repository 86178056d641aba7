/// Where a backend listens or a frontend connects: `unix:/path`, `tcp://host:port`, `shm:/path` (frames
/// through shared-memory rings, set up over a unix socket at the path), `vsock://cid:port` (AF_VSOCK; a
/// listener's cid may be `any`) or `serial:/path` (a virtio-serial port: the character device in a VM, or
/// the unix socket of QEMU's chardev on the host; one peer at a time, see docs/transports.md) or
/// `vchan:DOMID:/xenstore/path` (a Xen vchan to or from domain DOMID; one peer at a time) or
/// `ivshmem:/path` (rings in a region QEMU's ivshmem-plain shares with a VM: the host's file, or the
/// guest's `/sys/bus/pci/devices/BDF/resource2`, or `ivshmem:auto`; one peer at a time).
public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case shm(path: String)
    case ivshmem(path: String)
    case tcp(host: String, port: UInt16)
    case vsock(cid: UInt32, port: UInt32)
    case serial(path: String)
    /// A Xen vchan: the peer's domain and the xenstore path its rings are published under.
    case vchan(domain: Int32, path: String)

    /// VMADDR_CID_ANY: a listener on every CID of this machine.
    public static let anyCID: UInt32 = 0xFFFF_FFFF

    public init(_ url: String) throws {
        if url.hasPrefix("vchan:") {
            let (domain, path) = try VchanChannel.parse(String(url.dropFirst(6)), endpoint: url)
            self = .vchan(domain: domain, path: path)
            return
        }
        if url.hasPrefix("vsock:") {
            var rest = url.dropFirst(6)
            if rest.hasPrefix("//") { rest = rest.dropFirst(2) }
            if rest.hasSuffix("/") { rest = rest.dropLast() }
            let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw TransportError.badEndpoint(url, "a vsock endpoint is vsock://CID:PORT") }
            let cid: UInt32
            switch parts[0] {
            case "any", "-1": cid = Endpoint.anyCID
            default:
                guard let n = UInt32(parts[0]), n != Endpoint.anyCID else {
                    throw TransportError.badEndpoint(url, "a vsock CID is a number below 4294967295 or 'any'")
                }
                cid = n
            }
            guard let port = UInt32(parts[1]), port != 0xFFFF_FFFF else {
                throw TransportError.badEndpoint(url, "a vsock port is a number below 4294967295")
            }
            self = .vsock(cid: cid, port: port)
            return
        }
        if let path = try Endpoint.path(of: url, after: "serial:", else: "a serial endpoint needs the port's path") {
            self = .serial(path: path)
            return
        }
        if let path = try Endpoint.path(of: url, after: "unix:", else: "a unix endpoint needs a path") {
            self = .unix(path: path)
            return
        }
        if let path = try Endpoint.path(of: url, after: "ivshmem:", else: "an ivshmem endpoint needs the region's file, its PCI resource file or 'auto'") {
            self = .ivshmem(path: path)
            return
        }
        if let path = try Endpoint.path(of: url, after: "shm:", else: "a shm endpoint needs the path of its setup socket") {
            self = .shm(path: path)
            return
        }
        var rest: Substring
        if url.hasPrefix("tcp://") { rest = url.dropFirst(6) } else if url.hasPrefix("tcp:") { rest = url.dropFirst(4) } else {
            throw TransportError.badEndpoint(url, "use unix:/path, tcp://host:port, shm:/path, ivshmem:/path, vsock://cid:port, serial:/path or vchan:domid:/xenstore/path")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
            throw TransportError.badEndpoint(url, "a tcp endpoint needs host:port")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    /// The path of a `PREFIX/path` or `PREFIX///path` endpoint; nil when `url` has another prefix.
    private static func path(of url: String, after prefix: String, else why: String) throws -> String? {
        guard url.hasPrefix(prefix) else { return nil }
        var path = String(url.dropFirst(prefix.count))
        if path.hasPrefix("//") { path.removeFirst(2) }
        guard !path.isEmpty else { throw TransportError.badEndpoint(url, why) }
        return path
    }

    public var isTCP: Bool {
        if case .tcp = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .shm(let path): return "shm:\(path)"
        case .ivshmem(let path): return "ivshmem:\(path)"
        case .tcp(let host, let port): return host.contains(":") ? "tcp://[\(host)]:\(port)" : "tcp://\(host):\(port)"
        case .vsock(let cid, let port): return "vsock://\(cid == Endpoint.anyCID ? "any" : String(cid)):\(port)"
        case .serial(let path): return "serial:\(path)"
        case .vchan(let domain, let path): return "vchan:\(domain):\(path)"
        }
    }
}

public enum TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    case badEndpoint(String, String)
    case system(String, Errno)
    case closed

    public var description: String {
        switch self {
        case .badEndpoint(let url, let why): return "bad endpoint '\(url)': \(why)"
        case .system(let what, let e): return "\(what): \(String(cString: strerror(e.rawValue)))"
        case .closed: return "connection closed"
        }
    }

    /// What a file call that needed the connection answers.
    public var errno: Errno {
        switch self {
        case .system(_, let e): return e
        case .closed: return .ioError
        case .badEndpoint: return .invalidArgument
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
