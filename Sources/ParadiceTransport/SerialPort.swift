#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// A virtio-serial port as a frame stream: in a VM its character device (/dev/virtio-ports/NAME, read and
/// written), on the host the unix socket of QEMU's chardev for it (a client connects). A port has one peer
/// at a time and no connection of its own; how a session begins and ends on it (docs/transports.md):
/// - in a VM, the port's host side connecting and going away is the session's start and end: a read
///   returns 0 while no host side is connected (poll says POLLHUP), and the bytes a host side sent before it
///   went away are still read first;
/// - the guest side's close discards what the port holds, so a port opened anew starts empty;
/// - the guest side learns of a host side going away only when it reads and the port is empty: a host
///   side that reconnects at once can be read as one stream with the last one;
/// - the host side learns nothing of the guest side's open and close.
/// A listener (a backend) therefore keeps the port open (or its chardev connected) across sessions; a
/// session ends at the host side's end, at a bad frame, at a BYE, or at a PD_HELLO within it (a new
/// frontend whose predecessor's end was not seen: its bytes open the next session). After a session that
/// ended on its own side, a port in a VM discards what its host side still sends, until it goes away, and
/// a chardev connection is made anew (which the frontend in the VM reads as the end), so that each
/// session begins with a frontend's first byte.
enum SerialPort {
    /// A frontend's connection through the port.
    static func open(_ path: String) throws -> FrameSocket {
        let (fd, isDevice) = try openChannel(path)
        return FrameSocket(channel: try channel(fd, isDevice: isDevice), peer: "serial:\(path)")
    }

    /// A byte channel over what `openChannel` opened; it takes `fd` (closed here if that fails).
    static func channel(_ fd: Int32, isDevice: Bool) throws -> any ByteChannel {
        // A chardev socket's receives sleep at once, as the port's device's do (below): see docs/transports.md,
        // "Waiting for bytes".
        guard isDevice else { return SocketChannel(fd: fd, spins: false) }
        do { return try DeviceChannel(fd: fd) } catch {
            try? Syscall.close(fd)
            throw error
        }
    }

    /// The port's character device, opened, or a connection to QEMU's chardev socket for it.
    static func openChannel(_ path: String) throws -> (fd: Int32, isDevice: Bool) {
        let peer = "serial:\(path)"
        let info: stat
        do throws(Errno) { info = try Syscall.stat(path) } catch { throw TransportError.system("serial port \(path)", error) }
        switch info.st_mode & S_IFMT {
        case S_IFSOCK:
            let fd: Int32
            do throws(Errno) { fd = try Syscall.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) } catch {
                throw TransportError.system("socket", error)
            }
            let addr = try FrameSocket.unixAddress(path)
            let connected = withUnsafeBytes(of: addr) { address in attempt { () throws(Errno) in try Syscall.connect(fd, address) } }
            if case .failure(let error) = connected {
                try? Syscall.close(fd)
                throw TransportError.system("connect \(peer)", error)
            }
            return (fd, false)
        case S_IFCHR:
            do throws(Errno) { return (try Syscall.open(path, O_RDWR | O_CLOEXEC | O_NOCTTY, retryOnInterrupt: true), true) } catch {
                throw TransportError.system("open \(peer)", error)
            }
        default:
            throw TransportError.badEndpoint(peer, "\(path) is neither a character device (a virtio-serial port) nor a unix socket (QEMU's chardev)")
        }
    }

    /// Waits, on a port in a VM, for a host side that sends, and returns the bytes read meanwhile that
    /// begin its session. Bytes of a host side that went away (and, if `discardingCurrent`, of the one
    /// connected now, until it goes away) are read and dropped, but for a read that begins with a PD_HELLO:
    /// a read returns the bytes of one of the port's buffers, which QEMU fills from one connection, so
    /// that is a new frontend's first frame (the old host side's end was not seen). The port gives no
    /// wake-up when a host side connects, so without one it is looked at every 100 ms.
    static func waitForHost(_ fd: Int32, discardingCurrent: Bool) throws -> [UInt8] {
        var discarding = discardingCurrent
        var scratch = [UInt8](repeating: 0, count: 4096)   // a port's buffer is one page: a read takes all of it
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            do throws(Errno) { _ = try Syscall.poll(&p, 1, -1, retryOnInterrupt: true) } catch { throw TransportError.system("poll", error) }
            let hostGone = p.revents & Int16(POLLHUP) != 0
            if !hostGone && !discarding { return [] }   // a connected host side has sent: its session begins
            // Either bytes or, with the host side gone, 0: neither read blocks.
            let n: Int
            do throws(Errno) { n = try Syscall.read(fd, &scratch, scratch.count, retryOnInterrupt: true) } catch {
                throw TransportError.system("read serial port", error)
            }
            if n == 0 {
                discarding = false
                usleep(100_000)
            } else if !hostGone && beginsWithHello(scratch[0..<n]) {
                return Array(scratch[0..<n])
            }
        }
    }

    /// Whether `bytes` begin with a PD_HELLO header and the protocol's magic.
    static func beginsWithHello(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard bytes.count >= MemoryLayout<pd_header>.size + 4 else { return false }
        return bytes.withUnsafeBytes { raw in
            raw.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == UInt16(PD_HELLO.rawValue)
                && raw.loadUnaligned(fromByteOffset: MemoryLayout<pd_header>.size, as: UInt32.self) == PD_MAGIC
        }
    }
}

/// sockaddr_vm (linux/vm_sockets.h), which Glibc does not export: family, reserved, port, cid, flags, zero.
func vsockAddress(cid: UInt32, port: UInt32) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 16)
    withUnsafeBytes(of: UInt16(AF_VSOCK)) { bytes.replaceSubrange(0..<2, with: $0) }
    withUnsafeBytes(of: port) { bytes.replaceSubrange(4..<8, with: $0) }
    withUnsafeBytes(of: cid) { bytes.replaceSubrange(8..<12, with: $0) }
    return bytes
}
