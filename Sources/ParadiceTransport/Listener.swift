#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// A listening socket that accepts frame connections, or a serial port that serves one session at a time.
public final class Listener: @unchecked Sendable {
    /// The listening socket (-1 for a serial port, which is opened for each session).
    public let fd: Int32
    /// The endpoint actually bound (a tcp port 0 becomes the chosen port).
    public let endpoint: Endpoint
    /// A serial port: its channel, kept across sessions, whether a session is open, and how the last ended.
    private let serialSession = ConditionLock(SerialState())
    private struct SerialState {
        var channel: (fd: Int32, isDevice: Bool)?
        var open = false
        var ending = FrameSocket.Ending.peerGone
    }
    /// A vchan or an ivshmem region: whether its one session is open (the next one is set up once it ended).
    private let vchanSession = ConditionLock(false)
    /// TCP connections' TLS (nil: unix, or plain TCP when asked for).
    public let tls: TLSContext?

    /// A listener on `endpoint`. TCP takes TLS from `security`, or plain TCP only when it asks for it.
    public convenience init(_ endpoint: Endpoint, security: TransportSecurity) throws {
        var context: TLSContext?
        if case .tcp = endpoint {
            if let problem = security.problem { throw TLSFailure("\(endpoint): \(problem)") }
            if security.usesTLS { context = try TLSContext(.server, security) }
        }
        try self.init(endpoint, tls: context)
    }

    /// Unix, or plain TCP.
    public convenience init(_ endpoint: Endpoint) throws { try self.init(endpoint, tls: nil) }

    private init(_ endpoint: Endpoint, tls: TLSContext?) throws {
        self.tls = tls
        switch endpoint {
        case .serial, .ivshmem:
            self.fd = -1
            self.endpoint = endpoint
        case .vchan:
            var why: UnsafePointer<CChar>? = nil
            guard paradice_vchan_probe(1, &why) == 0 else {
                throw TransportError.badEndpoint(endpoint.description, why.map { String(cString: $0) } ?? "no vchan here")
            }
            self.fd = -1
            self.endpoint = endpoint
        case .vsock(let cid, let port):
            self.fd = try vsockAddress(cid: cid, port: port).withUnsafeBytes { address in
                try Listener.listeningSocket(AF_VSOCK, address, endpoint)
            }
            self.endpoint = endpoint
        case .unix(let path), .shm(let path):
            try? Syscall.unlink(path)   // a stale socket from an earlier run
            let addr = try FrameSocket.unixAddress(path)
            self.fd = try withUnsafeBytes(of: addr) { address in try Listener.listeningSocket(AF_UNIX, address, endpoint) }
            self.endpoint = endpoint
        case .tcp(let host, let port):
            var lastError = Errno.addressNotAvailable
            for candidate in try FrameSocket.resolve(host, port, passive: true) {
                let fd: Int32
                do throws(Errno) { fd = try Syscall.socket(candidate.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) } catch {
                    lastError = error
                    continue
                }
                try? Syscall.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, Int32(1))
                let listening = candidate.address.withUnsafeBytes { address in
                    attempt { () throws(Errno) in
                        try Syscall.bind(fd, address)
                        try Syscall.listen(fd, backlog: 64)
                    }
                }
                switch listening {
                case .success:
                    self.fd = fd
                    self.endpoint = .tcp(host: host, port: Listener.boundPort(fd) ?? port)
                    return
                case .failure(let error):
                    lastError = error
                    try? Syscall.close(fd)
                }
            }
            throw TransportError.system("listen on \(endpoint)", lastError)
        }
    }

    /// A stream socket of `family` bound to `address` and listening (closed again if either fails).
    private static func listeningSocket(_ family: Int32, _ address: UnsafeRawBufferPointer, _ endpoint: Endpoint) throws -> Int32 {
        let fd: Int32
        do throws(Errno) { fd = try Syscall.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) } catch {
            throw TransportError.system("socket", error)
        }
        do throws(Errno) {
            try Syscall.bind(fd, address)
            try Syscall.listen(fd, backlog: 64)
        } catch {
            try? Syscall.close(fd)
            throw TransportError.system("listen on \(endpoint)", error)
        }
        return fd
    }

    deinit {
        if fd >= 0 { try? Syscall.close(fd) }
        if let channel = serialSession.withLock({ $0.channel }) { try? Syscall.close(channel.fd) }
    }

    private static func boundPort(_ fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        guard (try? Syscall.getsockname(fd, &storage)) != nil else { return nil }
        return withUnsafeBytes(of: &storage) { raw in
            // sin_port and sin6_port sit at the same offset, in network order.
            UInt16(raw[2]) << 8 | UInt16(raw[3])
        }
    }

    /// Blocks for the next connection (on a serial port: until the last session ended and a host side sends).
    public func accept() throws -> FrameSocket {
        if case .serial(let path) = endpoint { return try acceptSerial(path) }
        if case .vchan(let domain, let path) = endpoint { return try acceptVchan(domain, path) }
        if case .ivshmem(let path) = endpoint { return try acceptIvshmem(path) }
        while true {
            var storage = sockaddr_storage()
            var length = UInt32(MemoryLayout<sockaddr_storage>.size)
            let fd: Int32
            // EINTR is retried inside (socket I/O); a connection the peer abandoned in the queue is skipped.
            do throws(Errno) { fd = try Syscall.accept(self.fd, &storage, &length) } catch {
                if error == .connectionAbort { continue }
                throw TransportError.system("accept", error)
            }
            var peer = endpoint.description
            var identity: PeerIdentity?
            if case .vsock = endpoint {
                // sockaddr_vm: the peer's port at 4, its CID at 8.
                let (cid, port) = withUnsafeBytes(of: &storage) { ($0.loadUnaligned(fromByteOffset: 8, as: UInt32.self), $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) }
                peer = "vsock://\(cid):\(port)"
            } else if case .tcp = endpoint {
                try? Syscall.setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, Int32(1))
                var host = [CChar](repeating: 0, count: 64)
                var service = [CChar](repeating: 0, count: 16)
                _ = withUnsafePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        getnameinfo($0, length, &host, 64, &service, 16, NI_NUMERICHOST | NI_NUMERICSERV)
                    }
                }
                peer = "tcp://\(cText(host)):\(cText(service))"
            } else {
                var pid: Int32 = 0
                var uid: UInt32 = 0
                var gid: UInt32 = 0
                if paradice_peer_ucred(fd, &pid, &uid, &gid) == 0 {
                    peer = "pid \(pid) uid \(uid)"
                    identity = .local(uid: uid, gid: gid, pid: pid)
                }
            }
            switch endpoint {
            case .unix: return FrameSocket(channel: SocketChannel(fd: fd), peer: peer, isLocal: true, identity: identity)
            case .tcp:
                if let tls { return FrameSocket(channel: TLSChannel(fd: fd, context: tls), peer: peer) }
                return FrameSocket(channel: SocketChannel(fd: fd), peer: peer)
            case .vsock, .serial, .vchan, .ivshmem:   // (serial ports, vchans and regions are not accepted here)
                return FrameSocket(channel: SocketChannel(fd: fd), peer: peer)
            case .shm:
                // A peer that went before its region could be offered is skipped, as an abandoned connection is.
                guard let ring = try? RingChannel(offeringOn: fd) else { continue }
                return FrameSocket(channel: ring, peer: peer, isLocal: true, identity: identity)
            }
        }
    }

    /// The port's next session, once the last one ended (see SerialPort).
    private func acceptSerial(_ path: String) throws -> FrameSocket {
        var (channel, ending) = serialSession.withLock(waitingFor: { s in s.open ? nil : (s.channel, s.ending) })
        var pending: [UInt8] = []
        switch ending {
        case .restarted(let carried): pending = carried
        case .peerGone, .ended:
            if let c = channel, !c.isDevice {
                try? Syscall.close(c.fd)
                channel = nil
            }
        }
        if channel == nil {
            channel = try SerialPort.openChannel(path)
            serialSession.withLock { $0.channel = channel }
        }
        let (fd, isDevice) = channel!
        do {
            if isDevice && pending.isEmpty {
                if case .ended = ending { pending = try SerialPort.waitForHost(fd, discardingCurrent: true) } else {
                    pending = try SerialPort.waitForHost(fd, discardingCurrent: false)
                }
            }
            let sessionFd: Int32
            do throws(Errno) { sessionFd = try Syscall.fcntl(fd, F_DUPFD_CLOEXEC, 0) } catch { throw TransportError.system("dup", error) }
            let socket = FrameSocket(channel: try SerialPort.channel(sessionFd, isDevice: isDevice), peer: endpoint.description,
                                     pending: pending, restartsOnHello: true, onClose: { [serialSession] ending in
                                         serialSession.withLock { $0.open = false; $0.ending = ending }
                                         serialSession.broadcast()
                                     })
            serialSession.withLock { $0.open = true }
            return socket
        } catch {
            // A channel that failed is opened anew for the next session.
            try? Syscall.close(fd)
            serialSession.withLock { $0.channel = nil; $0.ending = .peerGone }
            throw error
        }
    }

    /// The vchan's next session, once the last one ended: a server made anew, and the guest that connected to it.
    private func acceptVchan(_ domain: Int32, _ path: String) throws -> FrameSocket {
        try oneSessionAtATime(peer: "vchan domain \(domain)") {
            try VchanChannel(server: true, domain: domain, path: path, endpoint: endpoint.description)
        }
    }

    /// The region's next session, once the last one ended: set up anew in the region, and claimed by a connector.
    private func acceptIvshmem(_ path: String) throws -> FrameSocket {
        try oneSessionAtATime(peer: endpoint.description) { try RingChannel(ivshmem: path, listening: true) }
    }

    private func oneSessionAtATime(peer: String, _ open: () throws -> any ByteChannel) throws -> FrameSocket {
        vchanSession.withLock(waitingFor: { open in open ? nil : () })
        let channel = try open()
        vchanSession.withLock { $0 = true }
        return FrameSocket(channel: channel, peer: peer, pending: [], restartsOnHello: false,
                           onClose: { [vchanSession] _ in
                               vchanSession.withLock { $0 = false }
                               vchanSession.broadcast()
                           })
    }
}
