import CParadice
import Foundation
import ParadiceClient
import ParadiceTransport
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The same-host transports besides the unix socket that the device suites use: shared-memory rings (shm:PATH),
/// TLS over TCP (with a pre-shared key) and plain TCP. The client library and the preload dial them through the
/// frontend core.
enum OtherTransport: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case shm, tls, plainTCP

    var testDescription: String { ["shm": "shm: rings", "tls": "TLS (PSK) over TCP", "plainTCP": "plain TCP"][rawValue]! }

    /// One PSK file for this test process, shared by its backends and guests (no key is kept in the repository).
    static let presharedKeys: String = {
        let path = NSTemporaryDirectory() + "paradice-transport-\(getpid()).psk"
        let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0 ... .max)) }.joined()
        FileManager.default.createFile(atPath: path, contents: Data("transport-guest:\(key)\n".utf8), attributes: [.posixPermissions: 0o600])
        atexit { unlink(NSTemporaryDirectory() + "paradice-transport-\(getpid()).psk") }
        return path
    }()

    /// A backend serving `devices` on this transport (its endpoint is this transport's).
    func backend(devices: [String], namespace: String? = nil, extra: [String] = []) throws -> BackendProcess {
        switch self {
        case .shm: try BackendProcess(devices: devices, shm: true, namespace: namespace, extra: extra)
        case .tls: try BackendProcess(devices: devices, tcp: true, namespace: namespace, extra: extra, security: ["--psk-file", Self.presharedKeys])
        case .plainTCP: try BackendProcess(devices: devices, tcp: true, namespace: namespace, extra: extra)
        }
    }

    /// What `paradice run` needs besides the endpoint.
    var runOptions: [String] { self == .tls ? ["--psk-file", Self.presharedKeys] : [] }

    func connect(_ backend: BackendProcess) throws -> ParadiceClient {
        switch self {
        case .shm, .plainTCP: try backend.connect()
        case .tls: try ParadiceClient.connect(backend.endpoint, name: "test", security: TransportSecurity(presharedKeys: Self.presharedKeys))
        }
    }
}

/// The device tests (pty, tun, kvm, loop, descriptors across fork and exec) on every other transport.
@Suite("devices over shared-memory rings, TLS and TCP", .serialized)
struct TransportDeviceTests {
    @Test(arguments: OtherTransport.allCases) func aPtyThroughTheClientAndStty(_ transport: OtherTransport) throws {
        let backend = try transport.backend(devices: ["/dev/ptmx", "/dev/pts/*"])
        #expect(backend.endpoint.hasPrefix(transport == .shm ? "shm:" : "tcp://127.0.0.1:"))
        let client = try transport.connect(backend)
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let ws = Buffer(8)
        ws[0, as: UInt16.self] = 7
        try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer)
        let back = Buffer(8)
        try pty.master.ioctl(Ioctl.TIOCGWINSZ, back.pointer)
        #expect(back[0, as: UInt16.self] == 7)
        // A read a worker answers once the slave writes.
        #expect(write(pty.slave, "ok", 2) == 2)
        #expect(try pty.master.read(count: 16) == Array("ok".utf8))
        let native = try NativePty()
        let all = try paradiceRun(backend.endpoint, ["stty", "-F", native.slavePath, "-a"], extra: transport.runOptions)
        #expect(all.status == 0, "\(all.errors)")
        #expect(all.output.contains("speed 38400 baud"))
    }

    @Test(arguments: OtherTransport.allCases) func tunAddsAndDeletesAnInterfaceOnTheBackend(_ transport: OtherTransport) throws {
        let namespace = "pdtr\(getpid())"
        try #require(run("/usr/sbin/ip", ["netns", "add", namespace]).status == 0)
        defer { _ = try? run("/usr/sbin/ip", ["netns", "del", namespace]) }
        // A backend's TCP listener in the namespace is on its loopback: the guest runs there too.
        try #require(run("/usr/sbin/ip", ["-n", namespace, "link", "set", "lo", "up"]).status == 0)
        let guestNamespace = transport == .shm ? nil : namespace
        let backend = try transport.backend(devices: ["/dev/net/tun"], namespace: namespace)
        let add = try paradiceRun(backend.endpoint, ["ip", "tuntap", "add", "dev", "pds0", "mode", "tun"], extra: transport.runOptions,
                                  namespace: guestNamespace)
        #expect(add.status == 0, "\(add.errors)")
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pds0"]).status == 0)
        let del = try paradiceRun(backend.endpoint, ["ip", "tuntap", "del", "dev", "pds0", "mode", "tun"], extra: transport.runOptions,
                                  namespace: guestNamespace)
        #expect(del.status == 0, "\(del.errors)")
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pds0"]).status != 0)
    }

    @Test(arguments: OtherTransport.allCases) func kvmSystemIoctlsAndTheDevicesOwnMapping(_ transport: OtherTransport) throws {
        let backend = try transport.backend(devices: ["/dev/kvm"], extra: ["--share-mappings"])
        let client = try transport.connect(backend)
        let kvm = try client.open("/dev/kvm", flags: O_RDWR)
        #expect(try kvm.ioctl(Ioctl.KVM_GET_API_VERSION) == 12)
        // On rings PD_SHARE's descriptor travels on the setup socket, named by its frame's position in the ring;
        // over TCP the guest keeps a mirror of kvm_run, synced around KVM_RUN.
        let program = try compile("mapping", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program], extra: transport.runOptions)
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("KVM_RUN -1 EINTR"))
    }

    @Test(arguments: OtherTransport.allCases) func loopGetFreeAndTheErrnoOfAnUnboundDevice(_ transport: OtherTransport) throws {
        let backend = try transport.backend(devices: ["/dev/loop-control", "/dev/loop*"])
        let client = try transport.connect(backend)
        let control = try client.open("/dev/loop-control", flags: O_RDWR)
        let free = try control.ioctl(Ioctl.LOOP_CTL_GET_FREE)
        #expect(free >= 0)
        let loop = try client.open("/dev/loop\(free)", flags: O_RDWR)
        #expect(throws: Errno(ENXIO)) { try loop.ioctl(Ioctl.LOOP_GET_STATUS64, Buffer(232).pointer) }
    }

    @Test(arguments: OtherTransport.allCases) func descriptorsAcrossDupForkAndExec(_ transport: OtherTransport) throws {
        // A forked child drops its copy of the parent's rings (unmapped, never written) or TLS connection, and
        // dials its own.
        let backend = try transport.backend(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("lifecycle", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program], extra: transport.runOptions)
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("exec child ok"))
        #expect(result.output.contains("lifecycle ok"))
    }
}

