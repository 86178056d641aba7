#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// A byte channel over a connected stream socket (unix or TCP). Socket I/O retries EINTR; a reset peer
/// is a closed one. A receive spins before it sleeps (paradice_spin.h): on a virtual CPU that halted, a
/// frame that wakes a sleeping reader costs it tens of µs. One thread receives at a time, as the spin's
/// state wants.
public final class SocketChannel: SocketBackedChannel, @unchecked Sendable {
    public let fd: Int32
    private let spin: UnsafeMutablePointer<paradice_spin>?

    /// Takes `fd`: `close` closes it. `spins`: whether a receive spins before it sleeps.
    public init(fd: Int32, spins: Bool = true) {
        self.fd = fd
        spin = spins ? .allocate(capacity: 1) : nil
        if let spin { paradice_spin_init(spin, PARADICE_SPIN_CEILING_NS) }
    }

    deinit { spin?.deallocate() }

    public func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        do throws(Errno) { return try Syscall.send(fd, base, bytes.count, flags: Int32(MSG_NOSIGNAL)) } catch {
            throw error == .brokenPipe || error == .connectionReset ? .closed : .system("send", error)
        }
    }

    public func send(_ bytes: UnsafeRawBufferPointer, passing descriptor: Int32) throws(TransportError) {
        do throws(Errno) { try Syscall.send(fd, bytes, passing: descriptor) } catch { throw .system("sendmsg", error) }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        do throws(Errno) {
            guard let spin else { return try Syscall.recv(fd, base, buffer.count) }
            return try Syscall.recv(fd, base, buffer.count, spinning: spin)
        } catch {
            throw error == .connectionReset ? .closed : .system("recv", error)
        }
    }
}

/// A byte channel whose stream is one connected socket it owns: timeouts, shutdown and close act on it.
public protocol SocketBackedChannel: ByteChannel {
    var fd: Int32 { get }
}

extension SocketBackedChannel {
    public var descriptor: Int32? { fd }

    public func setReceiveTimeout(seconds: Int) {
        try? Syscall.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeval(tv_sec: seconds, tv_usec: 0))
    }

    public func finishSending() { try? Syscall.shutdown(fd, Int32(SHUT_WR)) }

    public func shutdown() { try? Syscall.shutdown(fd, Int32(SHUT_RDWR)) }

    public func close() { try? Syscall.close(fd) }
}
