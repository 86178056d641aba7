#if canImport(Glibc)
import Glibc
#endif
import CParadice

/// A listening socket that accepts frame connections.
public final class Listener: @unchecked Sendable {
    public let fd: Int32
    /// The endpoint actually bound (a tcp port 0 becomes the chosen port).
    public let endpoint: Endpoint

    public init(_ endpoint: Endpoint) throws {
        switch endpoint {
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw TransportError.system("socket", errno) }
            unlink(path)   // a stale socket from an earlier run
            var addr = try FrameSocket.unixAddress(path)
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard r == 0, Glibc.listen(fd, 64) == 0 else {
                let e = errno
                Glibc.close(fd)
                throw TransportError.system("listen on \(endpoint)", e)
            }
            self.fd = fd
            self.endpoint = endpoint
        case .tcp(let host, let port):
            var lastError: Int32 = EADDRNOTAVAIL
            for candidate in try FrameSocket.resolve(host, port, passive: true) {
                let fd = socket(candidate.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard fd >= 0 else { lastError = errno; continue }
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                let r = candidate.address.withUnsafeBytes {
                    bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
                }
                if r == 0 && Glibc.listen(fd, 64) == 0 {
                    self.fd = fd
                    self.endpoint = .tcp(host: host, port: Listener.boundPort(fd) ?? port)
                    return
                }
                lastError = errno
                Glibc.close(fd)
            }
            throw TransportError.system("listen on \(endpoint)", lastError)
        }
    }

    deinit { Glibc.close(fd) }

    private static func boundPort(_ fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard r == 0 else { return nil }
        return withUnsafeBytes(of: &storage) { raw in
            // sin_port and sin6_port sit at the same offset, in network order.
            UInt16(raw[2]) << 8 | UInt16(raw[3])
        }
    }

    /// Blocks for the next connection.
    public func accept() throws -> FrameSocket {
        while true {
            var storage = sockaddr_storage()
            var length = UInt32(MemoryLayout<sockaddr_storage>.size)
            let fd = paradice_accept(self.fd, &storage, &length)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                throw TransportError.system("accept", errno)
            }
            var peer = endpoint.description
            if case .tcp = endpoint {
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                var host = [CChar](repeating: 0, count: 64)
                var service = [CChar](repeating: 0, count: 16)
                _ = withUnsafePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        getnameinfo($0, length, &host, 64, &service, 16, NI_NUMERICHOST | NI_NUMERICSERV)
                    }
                }
                peer = "tcp://\(String(cString: host)):\(String(cString: service))"
            } else {
                var pid: Int32 = 0
                var uid: UInt32 = 0
                if paradice_peer_credentials(fd, &pid, &uid) == 0 { peer = "pid \(pid) uid \(uid)" }
            }
            if case .unix = endpoint { return FrameSocket(fd: fd, peer: peer, isLocal: true) }
            return FrameSocket(fd: fd, peer: peer)
        }
    }
}
