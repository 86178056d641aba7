#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem

/// A byte channel over a character device (a virtio-serial port in a VM): read and written, as send and
/// recv are for sockets. A device has no shutdown, so each receive waits in poll along with an eventfd
/// that `shutdown` signals. No descriptor travels.
public final class DeviceChannel: ByteChannel, @unchecked Sendable {
    public let fd: Int32
    private let wake: Int32
    private let timeout = LockedValue<Int32>(-1)

    /// Takes `fd`: `close` closes it.
    public init(fd: Int32) throws(TransportError) {
        self.fd = fd
        do throws(Errno) { wake = try Syscall.eventfd() } catch { throw .system("eventfd", error) }
    }

    public var descriptor: Int32? { nil }

    public func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        do throws(Errno) { return try Syscall.write(fd, base, bytes.count, retryOnInterrupt: true) } catch {
            throw error == .brokenPipe || error == .connectionReset ? .closed : .system("write", error)
        }
    }

    public func send(_ bytes: UnsafeRawBufferPointer, passing descriptor: Int32) throws(TransportError) {
        throw .system("sendmsg", .notSupported)
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        let ready: Int32
        do throws(Errno) { ready = try Syscall.poll(&fds, 2, timeout.withLock { $0 }, retryOnInterrupt: true) } catch { throw .system("poll", error) }
        if ready == 0 { throw .system("read", .resourceTemporarilyUnavailable) }
        if fds[1].revents != 0 { throw .closed }
        do throws(Errno) { return try Syscall.read(fd, base, buffer.count, retryOnInterrupt: true) } catch {
            throw .system("read", error)
        }
    }

    public func setReceiveTimeout(seconds: Int) { timeout.withLock { $0 = seconds > 0 ? Int32(min(seconds, 1 << 20) * 1000) : -1 } }

    /// A port has no half close: the peer sees the end when the port is closed.
    public func finishSending() {}

    public func shutdown() {
        var one: UInt64 = 1
        _ = try? Syscall.write(wake, &one, 8)
    }

    public func close() {
        try? Syscall.close(fd)
        try? Syscall.close(wake)
    }
}
