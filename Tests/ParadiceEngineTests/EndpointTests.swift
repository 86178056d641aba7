import CParadice
import Foundation
import ParadiceFrontendCore
import ParadiceTransport
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Endpoint forms")
struct EndpointTests {
    @Test func everyFormParses() throws {
        #expect(try Endpoint("unix:/run/p.sock") == .unix(path: "/run/p.sock"))
        #expect(try Endpoint("tcp://127.0.0.1:17000") == .tcp(host: "127.0.0.1", port: 17000))
        #expect(try Endpoint("vsock://1:7000") == .vsock(cid: 1, port: 7000))
        #expect(try Endpoint("vsock:3:7000") == .vsock(cid: 3, port: 7000))
        #expect(try Endpoint("vsock://any:7000") == .vsock(cid: Endpoint.anyCID, port: 7000))
        #expect(try Endpoint("vsock://-1:7000/") == .vsock(cid: Endpoint.anyCID, port: 7000))
        #expect(try Endpoint("serial:/dev/virtio-ports/paradice") == .serial(path: "/dev/virtio-ports/paradice"))
        #expect(try Endpoint("serial:///tmp/serial.sock") == .serial(path: "/tmp/serial.sock"))
    }

    @Test func descriptionsParseBack() throws {
        for url in ["vsock://any:7000", "vsock://2:1024", "serial:/dev/virtio-ports/paradice", "tcp://[::1]:5", "unix:/a"] {
            #expect(try Endpoint(url).description == url)
            #expect(try Endpoint(Endpoint(url).description) == Endpoint(url))
        }
    }

    @Test func malformedFormsSayWhy() {
        let cases: [(String, String)] = [
            ("vsock://1", "vsock://CID:PORT"), ("vsock://", "vsock://CID:PORT"), ("vsock://1:2:3", "vsock://CID:PORT"),
            ("vsock://x:7000", "CID"), ("vsock://4294967295:7000", "CID"), ("vsock://99999999999:1", "CID"),
            ("vsock://1:", "port"), ("vsock://1:-5", "port"), ("vsock://1:4294967295", "port"), ("vsock://1:80x", "port"),
            ("serial:", "path"), ("serial://", "path"), ("vsck://1:2", "vsock://cid:port"), ("", "serial:/path"),
        ]
        for (url, why) in cases {
            #expect {
                _ = try Endpoint(url)
            } throws: { error in
                guard case TransportError.badEndpoint(let named, let reason) = error else { return false }
                return named == url && reason.contains(why)
            }
        }
    }

    @Test func aConnectionNeedsAPeerCIDAndAPortThatIsThere() {
        #expect(throws: TransportError.self) { _ = try FrameSocket.connect(.vsock(cid: Endpoint.anyCID, port: 7000)) }
        #expect(throws: TransportError.self) { _ = try FrameSocket.connect(.serial(path: "/nonexistent/port")) }
        // A regular file is neither a port's device nor QEMU's socket for it.
        #expect {
            _ = try FrameSocket.connect(.serial(path: "/etc/hostname"))
        } throws: { error in
            guard case TransportError.badEndpoint(_, let reason) = error else { return false }
            return reason.contains("neither a character device")
        }
    }
}

/// The C frontends' parse of the same forms (pd_conn_dial): a malformed one is EINVAL, before any socket.
@Suite("Endpoint forms in the C frontends")
struct FrontendDialTests {
    func dialError(_ url: String) -> Int32 {
        errno = 0
        var stream = pd_stream(ops: nil, fd: -1, state: nil)
        if pd_conn_dial(url, &stream) == 0 { stream.ops.pointee.close(&stream); return 0 }
        return errno
    }

    @Test func malformedFormsAreInvalid() {
        for url in ["vsock://1", "vsock://", "vsock://x:7000", "vsock://1:", "vsock://1:-5", "vsock://4294967295:1",
                    "vsock://99999999999:1", "vsock://1:4294967295", "vsock://1:80x", "vsock://any:7000", "serial:", "serial://",
                    "vsck://1:2", ""] {
            #expect(dialError(url) == EINVAL, "\(url)")
        }
    }

    @Test func aSerialPortMustBeADeviceOrASocket() {
        #expect(dialError("serial:/nonexistent/port") == ENOENT)
        #expect(dialError("serial:/etc/hostname") == ENOTSUP)
    }

    @Test func aSerialPortThatIsAUnixSocketIsConnectedTo() throws {
        let path = NSTemporaryDirectory() + "paradice-serial-\(getpid()).sock"
        let listener = try Listener(.unix(path: path))
        defer { unlink(path) }
        var stream = pd_stream(ops: nil, fd: -1, state: nil)
        #expect(pd_conn_dial("serial:" + path, &stream) == 0)
        let fd = stream.fd
        defer { stream.ops.pointee.close(&stream) }
        let accepted = try listener.accept()
        var header = pd_header(length: 0, op: PD_BYE.code, flags: 0, request: 7, handle: 0)
        #expect(write(fd, &header, MemoryLayout<pd_header>.size) == MemoryLayout<pd_header>.size)
        let frame = try accepted.receive()
        #expect(frame?.op == PD_BYE.code && frame?.request == 7)
    }
}
