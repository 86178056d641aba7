#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem

/// A byte channel over TLS on a connected TCP socket (ParadiceTLS). The handshake is `establish`, done by
/// the thread that will receive, before any frame; until then nothing moves. Descriptors cannot travel.
public final class TLSChannel: SocketBackedChannel, @unchecked Sendable {
    public let fd: Int32
    private let context: TLSContext
    /// Set once by `establish`, before any other thread uses the channel.
    private var connection: TLSConnection?

    /// Takes `fd`: `close` closes it.
    public init(fd: Int32, context: TLSContext) {
        self.fd = fd
        self.context = context
    }

    /// The TLS handshake; what the peer proved.
    public func establish(timeoutSeconds: Int) throws -> PeerIdentity {
        if let connection { return connection.peer }
        let made = try context.handshake(fd, timeoutSeconds: timeoutSeconds)
        connection = made
        return made.peer
    }

    public func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let connection else { throw .closed }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        let n = connection.write(base, bytes.count)
        if n >= 0 { return n }
        let error = Errno(errno)
        throw error == .brokenPipe || error == .connectionReset ? .closed : .system("send", error)
    }

    public func send(_ bytes: UnsafeRawBufferPointer, passing descriptor: Int32) throws(TransportError) {
        throw .system("sendmsg", Errno(EOPNOTSUPP))   // descriptors travel on unix sockets only
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int {
        guard let connection else { throw .closed }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let n = connection.read(base, buffer.count)
        if n >= 0 { return n }
        let error = Errno(errno)
        throw error == .connectionReset ? .closed : .system("recv", error)
    }
}
