import ParadiceTransport
import Testing

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
