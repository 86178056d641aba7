#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// A byte channel through shared-memory rings (paradice_ring.h): a region with one ring per direction,
/// set up over a unix socket that stays open for liveness (the peer's death hangs it up) and for the
/// descriptors of PD_SHARE, which travel on it named by the ring position of their frame.
public final class RingChannel: ByteChannel, @unchecked Sendable {
    /// The C end; its address must not move while either side's thread uses it.
    private let ring: UnsafeMutablePointer<paradice_ring>

    /// The backend's side: offers a fresh region over the accepted setup socket `fd`, which it takes.
    public init(offeringOn fd: Int32, capacity: Int = Int(PARADICE_RING_DEFAULT_CAPACITY)) throws(TransportError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: paradice_ring())
        guard paradice_ring_offer(ring, fd, UInt32(clamping: capacity)) == 0 else {
            let error = Errno.current
            ring.deallocate()
            try? Syscall.close(fd)
            throw .system("ring offer", error)
        }
    }

    /// The frontend's side: takes the region offered over the connected setup socket `fd`, which it takes.
    public init(acceptingOfferOn fd: Int32) throws(TransportError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: paradice_ring())
        guard paradice_ring_accept_offer(ring, fd) == 0 else {
            let error = Errno.current
            ring.deallocate()
            try? Syscall.close(fd)
            throw .system("ring setup", error)
        }
    }

    /// A region shared with a VM (ivshmem.c): `listening`, the backend's side, which waits for a connector.
    public init(ivshmem path: String, listening: Bool) throws(TransportError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: paradice_ring())
        let status = listening ? paradice_ivshmem_listen(ring, path) : paradice_ivshmem_connect(ring, path)
        guard status == 0 else {
            let error = Errno.current
            ring.deallocate()
            throw .system(listening ? "ivshmem listen on \(path)" : "ivshmem connect to \(path)", error)
        }
    }

    deinit { ring.deallocate() }

    public var descriptor: Int32? { nil }

    private static func failure(_ what: String) -> TransportError {
        let error = Errno.current
        return error == .brokenPipe ? .closed : .system(what, error)
    }

    public func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        let n = paradice_ring_send(ring, base, bytes.count)
        if n < 0 { throw Self.failure("ring send") }
        return n
    }

    public func send(_ bytes: UnsafeRawBufferPointer, passing descriptor: Int32) throws(TransportError) {
        guard paradice_ring_send_descriptor(ring, descriptor) == 0 else { throw Self.failure("sendmsg") }
        var sent = 0
        while sent < bytes.count { sent += try send(UnsafeRawBufferPointer(rebasing: bytes[sent...])) }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let n = paradice_ring_recv(ring, base, buffer.count)
        if n < 0 { throw Self.failure("ring receive") }
        return n
    }

    /// Set by the receiving thread (the handshake's), before and after its waits.
    public func setReceiveTimeout(seconds: Int) { ring.pointee.timeout_ms = seconds > 0 ? Int32(clamping: seconds * 1000) : -1 }

    public func finishSending() { paradice_ring_finish(ring) }

    public func shutdown() { paradice_ring_shutdown(ring) }

    public func close() { paradice_ring_close(ring) }
}
