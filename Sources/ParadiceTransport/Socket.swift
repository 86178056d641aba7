#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
import ParadiceWire
import CParadice

/// A connected byte channel (a unix or TCP socket, a shared-memory ring) that carries frames. Sending is
/// serialized by a lock (the one that also guards the close, so no send reaches a closed and reused
/// descriptor), so several threads may send; receiving belongs to one thread at a time.
public final class FrameSocket: @unchecked Sendable {
    public let channel: any ByteChannel
    public let peer: String
    /// The peer is on this machine, and descriptors can travel.
    public let isLocal: Bool
    /// Who the peer is: its credentials (unix), what it proved over TLS, or only its address (plain TCP).
    /// Final once `establish` has returned.
    public private(set) var identity: PeerIdentity
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    /// Held for the whole of each send, and by `close`: no send reaches a closed (and reused) descriptor.
    private let sendLock = Lock()
    /// Whether the channel was closed. Taken briefly, so that a shutdown never waits behind a send
    /// stuck on a peer that does not read.
    private let closed = LockedValue(false)
    /// Whether a receive met the end of the stream (a serial port's host side went away).
    private let reachedEnd = LockedValue(false)
    /// Run once, when the socket is closed (a serial listener waits for its one session to end).
    private let onClose: (@Sendable (_ ending: Ending) -> Void)?
    /// A PD_HELLO past the first frame ends the stream, and is kept for the next session (a serial port's
    /// peer can be replaced without a read ever seeing the old one go; see SerialPort).
    private let restartsOnHello: Bool
    private var framesReceived = 0
    private let carried = LockedValue<[UInt8]?>(nil)

    public init(channel: any ByteChannel, peer: String, isLocal: Bool = false, identity: PeerIdentity? = nil) {
        self.channel = channel
        self.peer = peer
        self.isLocal = isLocal
        self.identity = identity ?? .unauthenticated(address: peer)
        self.onClose = nil
        self.restartsOnHello = false
        self.buffer = [UInt8](repeating: 0, count: 1 << 16)
    }

    /// How a session on a serial port ended, for the port's next one.
    public enum Ending: Sendable {
        /// A receive met the end of the stream (the port's host side went away).
        case peerGone
        /// A PD_HELLO came within the session: a new peer began; its bytes open the next session.
        case restarted(carried: [UInt8])
        /// The session ended on its own side (a bad frame, a BYE, a shutdown).
        case ended
    }

    /// Frames over a serial port's channel, beginning with the `pending` bytes; `onClose` learns how the
    /// session ended.
    public init(channel: any ByteChannel, peer: String, pending: [UInt8], restartsOnHello: Bool,
                onClose: (@Sendable (_ ending: Ending) -> Void)?) {
        self.channel = channel
        self.peer = peer
        self.isLocal = false
        self.identity = .unauthenticated(address: peer)
        self.onClose = onClose
        self.restartsOnHello = restartsOnHello
        self.buffer = [UInt8](repeating: 0, count: max(1 << 16, pending.count))
        buffer.replaceSubrange(0..<pending.count, with: pending)
        end = pending.count
    }

    /// Whether the channel is TLS (its handshake is `establish`).
    public var usesTLS: Bool { channel is TLSChannel }

    /// The TLS handshake, when the channel is TLS: afterwards `identity` is what the peer proved. Called
    /// once, before any frame, by the thread that will receive.
    public func establish(timeoutSeconds: Int) throws {
        guard let tls = channel as? TLSChannel else { return }
        identity = try tls.establish(timeoutSeconds: timeoutSeconds)
    }

    /// A frame socket over a connected stream socket, which it takes.
    public convenience init(fd: Int32, peer: String, isLocal: Bool = false) {
        self.init(channel: SocketChannel(fd: fd), peer: peer, isLocal: isLocal)
    }

    deinit { close() }

    /// The socket under the channel (socket options, descriptor passing); nil for a channel without one.
    public var descriptor: Int32? { channel.descriptor }

    public func close() {
        let first = sendLock.withLock {
            closed.withLock { closed -> Bool in
                if closed { return false }
                closed = true
                channel.close()
                return true
            }
        }
        if first, let onClose {
            if let bytes = carried.withLock({ $0 }) { onClose(.restarted(carried: bytes)) } else {
                onClose(reachedEnd.withLock { $0 } ? .peerGone : .ended)
            }
        }
    }

    /// Wakes a thread blocked in receive or send (the channel stays open until `close`).
    public func shutdownBoth() {
        closed.withLock { closed in if !closed { channel.shutdown() } }
    }

    /// No more frames follow: the peer receives those sent, then the end of the stream.
    public func finishSending() {
        sendLock.withLock { closed.withLock { closed in if !closed { channel.finishSending() } } }
    }

    /// Bounds each wait of `receive` (0: no bound); a wait that long throws
    /// `TransportError.system(_, .resourceTemporarilyUnavailable)`.
    public func setReceiveTimeout(seconds: Int) {
        closed.withLock { closed in if !closed { channel.setReceiveTimeout(seconds: seconds) } }
    }

    public func send(_ frame: Frame) throws { try sendRaw(frame.encoded()) }

    public func sendRaw(_ bytes: [UInt8]) throws {
        try sendLock.withLock { () throws -> Void in
            if closed.withLock({ $0 }) { throw TransportError.closed }
            try sendAll(bytes)
        }
    }

    /// Sends every byte (a signal does not stop it: socket I/O retries EINTR); the caller holds the send lock.
    private func sendAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                sent += try channel.send(UnsafeRawBufferPointer(rebasing: raw[sent...]))
            }
        }
    }

    /// Sends an encoded frame with a descriptor attached (peers on this machine only).
    public func sendRaw(_ bytes: [UInt8], passing descriptor: Int32) throws {
        try sendLock.withLock { () throws -> Void in
            if closed.withLock({ $0 }) { throw TransportError.closed }
            try bytes.withUnsafeBytes { raw in try channel.send(raw, passing: descriptor) }
        }
    }

    /// The largest body `receive` accepts; a longer one is a protocol error. A backend lowers it for its guests.
    public var maxFrameLength = Int(PD_MAX_FRAME)

    /// How much a large body's buffer grows by before the bytes for it have arrived: a peer that announces
    /// a large frame and sends little of it makes the receiver hold about what it sent, not what it announced.
    static let bodyGrowthStep = 64 << 10

    /// The next frame, or nil at a clean end of stream. `maxLength`, if given, bounds this frame's body
    /// below `maxFrameLength` (a handshake is small).
    public func receive(maxLength: Int? = nil) throws -> Frame? {
        guard try fill(Frame.headerSize) else { return nil }
        let header = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: start, as: pd_header.self) }
        if restartsOnHello && framesReceived > 0 && header.op == PD_HELLO.code {
            carried.withLock { $0 = Array(buffer[start..<end]) }
            start = end
            return nil
        }
        framesReceived += 1
        start += Frame.headerSize
        let length = Int(header.length)
        guard length <= min(maxLength ?? maxFrameLength, maxFrameLength) else {
            throw ProtocolError("frame of \(length) bytes, over the limit")
        }
        var body = [UInt8]()
        if length > 0 {
            if length > buffer.count {
                // A large body: take what is buffered, then read the rest into a buffer that grows by at
                // most what has arrived (and one step), never by what the header announced.
                body = Array(buffer[start..<end])
                start = end
                var got = body.count   // bytes received; body.count is what is allocated
                while got < length {
                    if got == body.count {
                        var grown = [UInt8](repeating: 0, count: got + min(length - got, max(Self.bodyGrowthStep, got)))
                        if got > 0 {
                            grown.withUnsafeMutableBytes { dst in body.withUnsafeBytes { dst.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: got) } }
                        }
                        body = grown
                    }
                    let n = try body.withUnsafeMutableBytes { buffer in try receive(into: buffer.baseAddress! + got, buffer.count - got) }
                    if n == 0 { throw TransportError.closed }
                    got += n
                }
            } else {
                guard try fill(length) else { throw TransportError.closed }
                body = Array(buffer[start..<(start + length)])
                start += length
            }
        }
        return Frame(op: header.op, flags: header.flags, request: header.request, handle: header.handle, body: body)
    }

    /// Ensures `count` bytes are buffered. False at end of stream before any byte of them.
    private func fill(_ count: Int) throws -> Bool {
        if end - start >= count { return true }
        if start > 0 {
            let have = end - start
            buffer.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: $0.baseAddress! + start, byteCount: have) }
            start = 0
            end = have
        }
        while end - start < count {
            let n = try buffer.withUnsafeMutableBytes { buffer in try receive(into: buffer.baseAddress! + end, buffer.count - end) }
            if n == 0 {
                if end == start { return false }
                throw TransportError.closed
            }
            end += n
        }
        return true
    }

    /// One receive from the channel; 0 at the end of the stream.
    private func receive(into buffer: UnsafeMutableRawPointer, _ count: Int) throws(TransportError) -> Int {
        let n = try channel.receive(into: UnsafeMutableRawBufferPointer(start: buffer, count: count))
        if n == 0 { reachedEnd.withLock { $0 = true } }
        return n
    }

    // MARK: connecting

    /// Connects and, on TCP, secures the connection as `security` says (TLS unless it asks for plain TCP).
    public static func connect(_ endpoint: Endpoint, security: TransportSecurity, handshakeSeconds: Int = 10) throws -> FrameSocket {
        guard case .tcp = endpoint else { return try connect(endpoint) }
        if let problem = security.problem { throw TLSFailure(problem) }
        guard security.usesTLS else { return try connect(endpoint) }
        let context = try TLSContext(.client, security)
        let fd = try connectedSocket(endpoint)
        let socket = FrameSocket(channel: TLSChannel(fd: fd, context: context), peer: endpoint.description)
        do { try socket.establish(timeoutSeconds: handshakeSeconds) } catch {
            throw TLSFailure("the backend at \(endpoint) is refused: \(error)")
        }
        return socket
    }

    public static func connect(_ endpoint: Endpoint) throws -> FrameSocket {
        if case .tcp = endpoint { return FrameSocket(channel: SocketChannel(fd: try connectedSocket(endpoint)), peer: endpoint.description) }
        return try connectUnix(endpoint)
    }

    /// A connected TCP socket (TCP_NODELAY).
    static func connectedSocket(_ endpoint: Endpoint) throws -> Int32 {
        guard case .tcp(let host, let port) = endpoint else { throw TransportError.badEndpoint(endpoint.description, "not TCP") }
        var lastError = Errno.connectionRefused
        for candidate in try resolve(host, port, passive: false) {
            let fd: Int32
            do throws(Errno) { fd = try Syscall.socket(candidate.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) } catch {
                lastError = error
                continue
            }
            let connected = candidate.address.withUnsafeBytes { address in attempt { () throws(Errno) in try Syscall.connect(fd, address) } }
            switch connected {
            case .success:
                try? Syscall.setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, Int32(1))
                return fd
            case .failure(let error):
                lastError = error
                try? Syscall.close(fd)
            }
        }
        throw TransportError.system("connect \(endpoint)", lastError)
    }

    /// Unix, shm, ivshmem, vsock, serial and vchan endpoints.
    private static func connectUnix(_ endpoint: Endpoint) throws -> FrameSocket {
        switch endpoint {
        case .unix(let path), .shm(let path):
            let fd: Int32
            do throws(Errno) { fd = try Syscall.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) } catch {
                throw TransportError.system("socket", error)
            }
            let addr = try unixAddress(path)
            let connected = withUnsafeBytes(of: addr) { address in attempt { () throws(Errno) in try Syscall.connect(fd, address) } }
            if case .failure(let error) = connected {
                try? Syscall.close(fd)
                throw TransportError.system("connect \(endpoint)", error)
            }
            if case .shm = endpoint { return FrameSocket(channel: try RingChannel(acceptingOfferOn: fd), peer: endpoint.description, isLocal: true) }
            return FrameSocket(channel: SocketChannel(fd: fd), peer: endpoint.description, isLocal: true)
        case .tcp:
            return try connect(endpoint)
        case .vsock(let cid, let port):
            guard cid != Endpoint.anyCID else { throw TransportError.badEndpoint(endpoint.description, "a connection needs the peer's CID") }
            let fd: Int32
            do throws(Errno) { fd = try Syscall.socket(AF_VSOCK, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) } catch {
                throw TransportError.system("socket", error)
            }
            let connected = vsockAddress(cid: cid, port: port).withUnsafeBytes { address in attempt { () throws(Errno) in try Syscall.connect(fd, address) } }
            if case .failure(let error) = connected {
                try? Syscall.close(fd)
                throw TransportError.system("connect \(endpoint)", error)
            }
            return FrameSocket(channel: SocketChannel(fd: fd), peer: endpoint.description)
        case .serial(let path):
            return try SerialPort.open(path)
        case .vchan(let domain, let path):
            return FrameSocket(channel: try VchanChannel(server: false, domain: domain, path: path, endpoint: endpoint.description),
                               peer: endpoint.description)
        case .ivshmem(let path):
            return FrameSocket(channel: try RingChannel(ivshmem: path, listening: false), peer: endpoint.description)
        }
    }

    static func unixAddress(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw TransportError.badEndpoint(path, "unix socket path too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return addr
    }

    struct ResolvedAddress {
        var family: Int32
        var address: [UInt8]
    }

    static func resolve(_ host: String, _ port: UInt16, passive: Bool) throws -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        if passive { hints.ai_flags = AI_PASSIVE }
        var result: UnsafeMutablePointer<addrinfo>?
        let r = getaddrinfo(host, String(port), &hints, &result)
        guard r == 0, let first = result else {
            throw TransportError.badEndpoint("\(host):\(port)", String(cString: gai_strerror(r)))
        }
        defer { freeaddrinfo(first) }
        var out: [ResolvedAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            let bytes = Array(UnsafeRawBufferPointer(start: ai.pointee.ai_addr, count: Int(ai.pointee.ai_addrlen)))
            out.append(ResolvedAddress(family: ai.pointee.ai_family, address: bytes))
            p = ai.pointee.ai_next
        }
        return out
    }
}
