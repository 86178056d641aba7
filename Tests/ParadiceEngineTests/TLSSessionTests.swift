import CParadice
import Foundation
import ParadiceClient
import ParadiceTransport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A CA with a backend and a guest, another CA with a guest of its own, and PSK files, made at test time
/// with the openssl CLI (scripts/tls-certs.sh): no private key lives in the repository.
final class TLSFiles: @unchecked Sendable {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "paradice-tls-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let script = String(repositorySpecFolder.dropLast("/Specs".count)) + "/scripts/tls-certs.sh"
        for arguments in [[script, dir, "127.0.0.1", "--", "guest-1"], [script, dir + "/other", "--", "stranger"]] {
            let r = try run("/bin/bash", arguments)
            guard r.status == 0 else { throw BackendFailure(log: "tls-certs.sh: \(r.output)") }
        }
        try "guest-psk:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
            .write(toFile: dir + "/backend.psk", atomically: true, encoding: .utf8)
        try "guest-psk:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
            .write(toFile: dir + "/guest.psk", atomically: true, encoding: .utf8)
        try "guest-psk:ffffffffffffffffffffffffffffffff00112233445566778899aabbccddeeff\n"
            .write(toFile: dir + "/wrong.psk", atomically: true, encoding: .utf8)
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func path(_ name: String) -> String { dir + "/" + name }

    var backendOptions: [String] {
        ["--tls-cert", path("backend.pem"), "--tls-key", path("backend.key"), "--tls-ca", path("ca.pem"), "--psk-file", path("backend.psk")]
    }
    var guest: TransportSecurity {
        TransportSecurity(certificate: path("guest-1.pem"), key: path("guest-1.key"), authority: path("ca.pem"))
    }
    var guestOptions: [String] { ["--tls-cert", path("guest-1.pem"), "--tls-key", path("guest-1.key"), "--tls-ca", path("ca.pem")] }
}

@Suite("TLS between frontends and a real backend")
struct TLSSessionTests {
    let files: TLSFiles
    let backend: BackendProcess
    init() throws {
        files = try TLSFiles()
        backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true, security: files.backendOptions)
    }

    /// A device call on a session of `client`: the pty's window size set and read back through the backend.
    func windowSizeRoundTrip(_ client: ParadiceClient) throws -> Bool {
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let ws = Buffer(8)
        ws[0, as: UInt16.self] = 33
        ws[2, as: UInt16.self] = 121
        try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer)
        let native = Buffer(8)
        guard paradice_ioctl(pty.slave, UInt(Ioctl.TIOCGWINSZ), UInt(bitPattern: native.pointer)) == 0 else { return false }
        let back = Buffer(8)
        try pty.master.ioctl(Ioctl.TIOCGWINSZ, back.pointer)
        return native[0, as: UInt16.self] == 33 && native[2, as: UInt16.self] == 121 && back.bytes == native.bytes
    }

    func guestsConnected() -> Int { backend.log.components(separatedBy: "guest connected").count - 1 }

    @Test func mutualCertificatesCarryDeviceCallsAndNameTheGuest() throws {
        let client = try ParadiceClient.connect(backend.endpoint, name: "tls", security: files.guest)
        #expect(try windowSizeRoundTrip(client))
        #expect(backend.waitUntil { backend.log.contains("identity=cert CN=guest-1,O=Paradice [DNS:guest-1]") }, "\(backend.log)")
    }

    @Test func anUnmodifiedProgramRunsOverTLS() throws {
        // stty in a program through the preload, which reads its TLS settings from what paradice run sets.
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        #expect(master >= 0)
        defer { close(master) }
        let number = Buffer(4), unlock = Buffer(4)
        #expect(paradice_ioctl(master, UInt(Ioctl.TIOCGPTN), UInt(bitPattern: number.pointer)) == 0)
        #expect(paradice_ioctl(master, UInt(Ioctl.TIOCSPTLCK), UInt(bitPattern: unlock.pointer)) == 0)
        let slave = "/dev/pts/\(number[0, as: UInt32.self])"
        let set = try paradiceRun(backend.endpoint, ["stty", "-F", slave, "rows", "27", "cols", "93"], extra: files.guestOptions)
        #expect(set.status == 0, "\(set.output)\(set.errors)")
        let size = try paradiceRun(backend.endpoint, ["stty", "-F", slave, "size"], extra: files.guestOptions)
        #expect(size.output == "27 93\n", "\(size.output)\(size.errors)")
        let ws = Buffer(8)
        #expect(paradice_ioctl(master, UInt(Ioctl.TIOCGWINSZ), UInt(bitPattern: ws.pointer)) == 0)
        #expect(ws[0, as: UInt16.self] == 27 && ws[2, as: UInt16.self] == 93)
        #expect(backend.log.contains("guest=stty"))
    }

    @Test func aForkedChildJoinsItsParentsSessionOverItsOwnTLSConnection() throws {
        let script = """
            import os, fcntl, struct
            TIOCGPTN = 0x80045430
            master = os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY)
            number = struct.unpack('I', fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]
            child = os.fork()
            if child == 0:
                other = os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY)
                print('child', struct.unpack('I', fcntl.ioctl(other, TIOCGPTN, bytes(4)))[0] != number, flush=True)
                os._exit(0)
            os.waitpid(child, 0)
            print('parent', struct.unpack('I', fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0] == number)
            """
        let r = try paradiceRun(backend.endpoint, ["python3", "-c", script], extra: files.guestOptions)
        #expect(r.output == "child True\nparent True\n", "\(r.output)\(r.errors)")
        #expect(backend.waitUntil(seconds: 30) { backend.log.contains("forked guest claimed its parent's files") }, "\(backend.log)")
    }

    @Test func aJoinNeedsTheParentsPrincipal() {
        let guest = PeerIdentity.certificate(subject: "CN=guest-1,O=Paradice", names: ["DNS:guest-1"])
        #expect(guest.isSamePrincipal(as: .certificate(subject: "CN=guest-1,O=Paradice", names: ["DNS:guest-1"])))
        #expect(!guest.isSamePrincipal(as: .certificate(subject: "CN=guest-2,O=Paradice", names: ["DNS:guest-2"])))
        #expect(!guest.isSamePrincipal(as: .presharedKey(identity: "CN=guest-1,O=Paradice")))
        #expect(PeerIdentity.local(uid: 5, gid: 6, pid: 1).isSamePrincipal(as: .local(uid: 5, gid: 6, pid: 2)))
        #expect(!PeerIdentity.local(uid: 5, gid: 6, pid: 1).isSamePrincipal(as: .local(uid: 0, gid: 6, pid: 1)))
        #expect(!PeerIdentity.unauthenticated(address: "tcp://a:1").isAuthenticated)
    }

    @Test func aPreSharedKeySessionWorks() throws {
        let client = try ParadiceClient.connect(backend.endpoint, name: "psk", security: TransportSecurity(presharedKeys: files.path("guest.psk")))
        #expect(try windowSizeRoundTrip(client))
        #expect(backend.waitUntil { backend.log.contains("identity=psk guest-psk") })
    }

    @Test func guestsThatProveNothingAreRefusedBeforeTheyOpenAnythingAndOthersAreServed() throws {
        let stranger = TransportSecurity(certificate: files.path("other/stranger.pem"), key: files.path("other/stranger.key"),
                                         authority: files.path("ca.pem"))
        let refused: [(String, TransportSecurity)] = [
            ("a certificate of another CA", stranger),
            ("a wrong pre-shared key", TransportSecurity(presharedKeys: files.path("wrong.psk"))),
            ("plain TCP to a TLS listener", TransportSecurity(plainTCP: true)),
        ]
        for (what, security) in refused {
            do {
                _ = try ParadiceClient.connect(backend.endpoint, name: "refused", security: security)
                Issue.record("\(what): connected")
            } catch {
                #expect("\(error)".contains("TLS"), "\(what): \(error)")   // the reason, not a bare errno
            }
        }
        // A client with no certificate at all (it trusts the backend's CA): Python's ssl module.
        let script = """
            import socket, ssl, struct, sys
            host, port = sys.argv[1].rsplit(':', 1)
            context = ssl.create_default_context(cafile=sys.argv[2])
            context.check_hostname = False
            s = context.wrap_socket(socket.create_connection((host[len('tcp://'):], int(port))))
            try:
                s.sendall(struct.pack('<IHHII', 24, 1, 0, 1, 0) + bytes(24))
                print('answered' if s.recv(16) else 'closed')
            except (ssl.SSLError, OSError) as e:
                print('refused:', e)
            """
        let python = try run("/usr/bin/python3", ["-c", script, backend.endpoint, files.path("ca.pem")])
        #expect(python.output.hasPrefix("refused:") || python.output.hasPrefix("closed"), "\(python.output)")
        #expect(backend.waitUntil { backend.log.components(separatedBy: "TLS handshake failed").count - 1 == 4 }, "\(backend.log)")
        // None of them reached the protocol's handshake, let alone a file.
        #expect(guestsConnected() == 0)
        #expect(!backend.log.contains("open"))
        let good = try ParadiceClient.connect(backend.endpoint, name: "after", security: files.guest)
        #expect(try windowSizeRoundTrip(good))
        #expect(backend.isRunning)
    }

    @Test func silentPeersAreDroppedAtEitherHandshake() throws {
        // One that never starts TLS, one that proves itself and then never sends PD_HELLO: each is ended
        // after the handshake timeout, with its line, and holds nothing.
        let quick = try BackendProcess(devices: ["/dev/ptmx"], tcp: true, extra: ["--handshake-timeout", "1"], security: files.backendOptions)
        let script = """
            import socket, ssl, sys, time
            host, port = sys.argv[1][len('tcp://'):].rsplit(':', 1)
            mute = socket.create_connection((host, int(port)))
            context = ssl.create_default_context(cafile=sys.argv[2])
            context.check_hostname = False
            context.load_cert_chain(sys.argv[3], sys.argv[4])
            proven = context.wrap_socket(socket.create_connection((host, int(port))))
            proven.settimeout(60)
            print('ended' if proven.recv(16) == b'' else 'answered')
            print('mute ended' if mute.recv(16) == b'' else 'mute answered')
            """
        let python = try run("/usr/bin/python3", ["-c", script, quick.endpoint, files.path("ca.pem"), files.path("guest-1.pem"), files.path("guest-1.key")])
        #expect(python.output == "ended\nmute ended\n", "\(python.output)")
        #expect(quick.log.contains("connection without a handshake"), "\(quick.log)")
        #expect(quick.log.contains("reason=TLS handshake: no answer in time"), "\(quick.log)")
        #expect(quick.waitUntil(seconds: 30) { quick.log.contains("identity=cert CN=guest-1,O=Paradice [DNS:guest-1]") })
    }

    @Test func aFrontendRefusesABackendItsCADidNotSign() throws {
        let wrongCA = try run(productsFolder + "/paradice", ["devices", "--backend", backend.endpoint, "--tls-cert", files.path("guest-1.pem"),
                                                            "--tls-key", files.path("guest-1.key"), "--tls-ca", files.path("other/ca.pem")])
        #expect(wrongCA.status != 0)
        #expect(wrongCA.output.contains("the backend is refused: TLS handshake: the backend's certificate is refused:"), "\(wrongCA.output)")
        #expect(guestsConnected() == 0)
        let preload = try paradiceRun(backend.endpoint, ["cat", "/dev/ptmx"],
                                      extra: ["--psk-file", files.path("guest.psk"), "--tls-ca", files.path("other/ca.pem")])
        #expect(preload.status != 0)
    }

    @Test func theConfigFileCarriesTheTLSSettings() throws {
        let path = files.path("backend.toml")
        try """
            tls-cert = "\(files.path("backend.pem"))"
            tls-key = "\(files.path("backend.key"))"
            tls-ca = "\(files.path("ca.pem"))"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let configured = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true, security: ["--config", path])
        #expect(try windowSizeRoundTrip(try ParadiceClient.connect(configured.endpoint, name: "configured", security: files.guest)))
        try "plain-tcp = yes\n".write(toFile: path, atomically: true, encoding: .utf8)
        let bad = try run(productsFolder + "/paradice-backend", ["--listen", "tcp://127.0.0.1:0", "--config", path, "--specs", repositorySpecFolder])
        #expect(bad.status != 0)
        #expect(bad.output.contains("\(path):1:13: plain-tcp is true or false"), "\(bad.output)")
    }

    @Test func tcpWithoutTLSMustBeAskedFor() throws {
        let frontend = try run(productsFolder + "/paradice", ["devices", "--backend", backend.endpoint])
        #expect(frontend.status != 0)
        #expect(frontend.output.contains("TCP needs TLS"), "\(frontend.output)")
        // paradice guest refuses before it loads a module or starts its daemon.
        let guest = try run(productsFolder + "/paradice", ["guest", "--backend", backend.endpoint])
        #expect(guest.status != 0)
        #expect(guest.output.contains("TCP needs TLS"), "\(guest.output)")
        let plainBackend = try run(productsFolder + "/paradice-backend", ["--listen", "tcp://127.0.0.1:0", "--specs", repositorySpecFolder])
        #expect(plainBackend.status != 0)
        #expect(plainBackend.output.contains("TCP needs TLS"), "\(plainBackend.output)")
    }

    @Test func unixAndPlainTCPGuestsAreNamedByWhatTheTransportKnows() throws {
        let plain = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true)
        _ = try ParadiceClient.connect(plain.endpoint, name: "plain", security: TransportSecurity(plainTCP: true))
        _ = try ParadiceClient.connect(plain.unixEndpoint, name: "local")
        #expect(plain.waitUntil { plain.log.contains("(unauthenticated)") && plain.log.contains("identity=uid \(getuid()) gid \(getgid()) pid \(getpid())") },
                "\(plain.log)")
        #expect(plain.log.contains("plain TCP"))
    }
}
