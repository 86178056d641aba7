#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
import ParadiceWire
import CParadice

/// A connected byte stream that carries frames: a stream socket (unix, TCP, vsock) or a character device
/// (a virtio-serial port). Sending is serialized by a lock (the one that also guards the close, so no send
/// reaches a closed and reused number), so several threads may send; receiving belongs to one thread at a time.
public final class FrameSocket: @unchecked Sendable {
    public let fd: Int32
    public let peer: String
    /// A unix socket: the peer is on this machine, and descriptors can travel.
    public let isLocal: Bool
    /// A character device, read and written (send/recv are for sockets); `shutdownBoth` wakes its reader
    /// through this eventfd, as a device has no shutdown.
    private let deviceWake: Int32?
    /// A character device (read and written), not a socket.
    public var isDevice: Bool { deviceWake != nil }
    /// Whether a read met the end of the stream (a serial port's host side went away).
    private let reachedEnd = LockedValue(false)
    /// Run once, when the socket is closed (a serial listener waits for its one session to end).
    private let onClose: (@Sendable (_ ending: Ending) -> Void)?
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    /// Held for the whole of each send, and by `close`: no send reaches a closed (and reused) number.
    private let sendLock = Lock()
    /// Whether the descriptor was closed. Taken briefly, so that a shutdown never waits behind a send
    /// stuck on a peer that does not read.
    private let closed = LockedValue(false)

    public init(fd: Int32, peer: String, isLocal: Bool = false) {
        self.fd = fd
        self.peer = peer
        self.isLocal = isLocal
        self.deviceWake = nil
        self.onClose = nil
        self.restartsOnHello = false
        self.buffer = [UInt8](repeating: 0, count: 1 << 16)
    }

    /// How a session on a serial port ended, for the port's next one.
    public enum Ending: Sendable {
        /// A read met the end of the stream (the port's host side went away).
        case peerGone
        /// A PD_HELLO came within the session: a new peer began; its bytes open the next session.
        case restarted(carried: [UInt8])
        /// The session ended on its own side (a bad frame, a BYE, a shutdown).
        case ended
    }

    /// A PD_HELLO past the first frame ends the stream, and is kept for the next session (a serial port's
    /// peer can be replaced without a read ever seeing the old one go; see SerialPort).
    private let restartsOnHello: Bool
    private var framesReceived = 0
    private let carried = LockedValue<[UInt8]?>(nil)

    /// Frames over a serial port's channel (`device`: a character device, read and written), beginning
    /// with the `pending` bytes; `onClose` learns how the session ended.
    public init(fd: Int32, peer: String, device: Bool, pending: [UInt8] = [], restartsOnHello: Bool = false,
                onClose: (@Sendable (_ ending: Ending) -> Void)? = nil) throws {
        self.fd = fd
        self.peer = peer
        self.isLocal = false
        if device {
            do throws(Errno) { deviceWake = try Syscall.eventfd() } catch { throw TransportError.system("eventfd", error) }
        } else {
            deviceWake = nil
        }
        self.onClose = onClose
        self.restartsOnHello = restartsOnHello
        self.buffer = [UInt8](repeating: 0, count: max(1 << 16, pending.count))
        buffer.replaceSubrange(0..<pending.count, with: pending)
        end = pending.count
    }

    deinit { close() }

    public func close() {
        let first = sendLock.withLock {
            closed.withLock { closed -> Bool in
                if closed { return false }
                closed = true
                try? Syscall.close(fd)
                if let wake = deviceWake { try? Syscall.close(wake) }
                return true
            }
        }
        if first, let onClose {
            if let bytes = carried.withLock({ $0 }) { onClose(.restarted(carried: bytes)) } else {
                onClose(reachedEnd.withLock { $0 } ? .peerGone : .ended)
            }
        }
    }

    /// Wakes a thread blocked in receive or send (the socket stays open until `close`).
    public func shutdownBoth() {
        closed.withLock { closed in
            if closed { return }
            if let wake = deviceWake {
                var one: UInt64 = 1
                _ = try? Syscall.write(wake, &one, 8)
            } else {
                try? Syscall.shutdown(fd, Int32(SHUT_RDWR))
            }
        }
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
                do throws(Errno) {
                    if deviceWake != nil {
                        sent += try Syscall.write(fd, raw.baseAddress! + sent, raw.count - sent, retryOnInterrupt: true)
                    } else {
                        sent += try Syscall.send(fd, raw.baseAddress! + sent, raw.count - sent, flags: Int32(MSG_NOSIGNAL))
                    }
                } catch {
                    throw error == .brokenPipe || error == .connectionReset ? TransportError.closed : TransportError.system("send", error)
                }
            }
        }
    }

    /// Sends an encoded frame with a descriptor attached (unix sockets only).
    public func sendRaw(_ bytes: [UInt8], passing descriptor: Int32) throws {
        guard isLocal else { throw TransportError.system("sendmsg", .notSupported) }
        try sendLock.withLock { () throws -> Void in
            if closed.withLock({ $0 }) { throw TransportError.closed }
            let sent = bytes.withUnsafeBytes { buffer in attempt { () throws(Errno) in try Syscall.send(fd, buffer, passing: descriptor) } }
            if case .failure(let error) = sent { throw TransportError.system("sendmsg", error) }
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

    /// One recv (retried on EINTR, as socket I/O is); 0 at the end of the stream. A reset peer is a closed one.
    private func receive(into buffer: UnsafeMutableRawPointer, _ count: Int) throws(TransportError) -> Int {
        if let wake = deviceWake {
            // A device has no shutdown: wait for its bytes (or its end) or for `shutdownBoth`'s wake-up.
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            do throws(Errno) { _ = try Syscall.poll(&fds, 2, -1, retryOnInterrupt: true) } catch { throw .system("poll", error) }
            if fds[1].revents != 0 { throw .closed }
        }
        let n: Int
        do throws(Errno) {
            n = deviceWake != nil ? try Syscall.read(fd, buffer, count, retryOnInterrupt: true) : try Syscall.recv(fd, buffer, count)
        } catch {
            throw error == .connectionReset ? .closed : .system(deviceWake != nil ? "read" : "recv", error)
        }
        if n == 0 { reachedEnd.withLock { $0 = true } }
        return n
    }

    // MARK: connecting

    public static func connect(_ endpoint: Endpoint) throws -> FrameSocket {
        switch endpoint {
        case .unix(let path):
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
            return FrameSocket(fd: fd, peer: endpoint.description, isLocal: true)
        case .tcp(let host, let port):
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
                    return FrameSocket(fd: fd, peer: endpoint.description)
                case .failure(let error):
                    lastError = error
                    try? Syscall.close(fd)
                }
            }
            throw TransportError.system("connect \(endpoint)", lastError)
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
            return FrameSocket(fd: fd, peer: endpoint.description)
        case .serial(let path):
            return try SerialPort.open(path)
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
