#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem

/// A virtio-serial port as a frame stream: in a VM its character device (/dev/virtio-ports/NAME, read and
/// written), on the host the unix socket of QEMU's chardev for it (a client connects). A port has one peer
/// at a time and no connection of its own; how a session begins and ends on it (docs/transports.md):
/// - in a VM, the port's host side connecting and going away is the session's start and end: a read
///   returns 0 while no host side is connected (poll says POLLHUP), and the bytes a host side sent before it
///   went away are still read first;
/// - the guest side's close discards what the port holds, and a port opened again starts empty;
/// - a listener (a backend) opens the port for each session; after a session that ended before its host
///   side went away (a bad frame, a backend's own end), it discards what that host side still sends until
///   it goes away, so that every session begins with the first byte of a host connection.
enum SerialPort {
    /// Connects to the port (a frontend, or a backend's session on a host's chardev socket).
    static func open(_ path: String, onClose: (@Sendable (Bool) -> Void)? = nil) throws -> FrameSocket {
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
            do { return try FrameSocket(fd: fd, peer: peer, device: false, onClose: onClose) } catch {
                try? Syscall.close(fd)
                throw error
            }
        case S_IFCHR:
            let fd: Int32
            do throws(Errno) { fd = try Syscall.open(path, O_RDWR | O_CLOEXEC | O_NOCTTY, retryOnInterrupt: true) } catch {
                throw TransportError.system("open \(peer)", error)
            }
            do { return try FrameSocket(fd: fd, peer: peer, device: true, onClose: onClose) } catch {
                try? Syscall.close(fd)
                throw error
            }
        default:
            throw TransportError.badEndpoint(peer, "\(path) is neither a character device (a virtio-serial port) nor a unix socket (QEMU's chardev)")
        }
    }

    /// Waits, on a port just opened in a VM, for a host side that sends: bytes of a host side that went
    /// away (and, if `discardingCurrent`, of the one connected now, until it goes away) are read and
    /// dropped. The port gives no wake-up when a host side connects, so without one it is looked at
    /// every 100 ms.
    static func waitForHost(_ fd: Int32, discardingCurrent: Bool) throws {
        var discarding = discardingCurrent
        var scratch = [UInt8](repeating: 0, count: 4096)
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            do throws(Errno) { _ = try Syscall.poll(&p, 1, -1, retryOnInterrupt: true) } catch { throw TransportError.system("poll", error) }
            let hostGone = p.revents & Int16(POLLHUP) != 0
            if !hostGone && !discarding { return }   // a connected host side has sent: its session begins
            // Either bytes to drop or, with the host side gone, 0: neither read blocks.
            let n: Int
            do throws(Errno) { n = try Syscall.read(fd, &scratch, scratch.count, retryOnInterrupt: true) } catch {
                throw TransportError.system("read serial port", error)
            }
            if n == 0 {
                discarding = false
                usleep(100_000)
            }
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
