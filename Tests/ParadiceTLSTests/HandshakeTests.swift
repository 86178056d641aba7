#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ParadiceTLS
import Testing

/// Certificates made at test time with the openssl CLI (scripts/tls-certs.sh): a CA with a backend and two
/// guests, another CA with a guest of its own, and PSK files.
final class TestCertificates: @unchecked Sendable {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "paradice-tls-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/tls-certs.sh").path
        try Self.run("/bin/bash", [script, dir, "127.0.0.1", "localhost", "--", "guest-1", "guest-2"])
        try Self.run("/bin/bash", [script, dir + "/other", "--", "stranger"])
        try "# guests' keys\nguest-psk:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\nsecond:ffeeddccbbaa99887766554433221100\n"
            .write(toFile: dir + "/backend.psk", atomically: true, encoding: .utf8)
        try "guest-psk:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
            .write(toFile: dir + "/guest.psk", atomically: true, encoding: .utf8)
        try "guest-psk:00112233445566778899aabbccddeeff00112233445566778899aabbccddeefe\n"
            .write(toFile: dir + "/wrong.psk", atomically: true, encoding: .utf8)
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func path(_ name: String) -> String { dir + "/" + name }

    static func run(_ program: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = arguments
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw POSIXError(.EIO) }
    }
}

enum TLSTestError: Error, CustomStringConvertible {
    case context(String)
    var description: String { switch self { case .context(let s): return s } }
}

final class Context: @unchecked Sendable {
    let raw: OpaquePointer
    init(_ role: pd_tls_role, cert: String? = nil, key: String? = nil, ca: String? = nil, psk: String? = nil) throws {
        var error = [CChar](repeating: 0, count: 512)
        let made: OpaquePointer? = withOptionalCString(cert) { c in withOptionalCString(key) { k in withOptionalCString(ca) { a in withOptionalCString(psk) { p in
            var settings = pd_tls_settings(cert: c, key: k, ca: a, psk_file: p)
            return pd_tls_context_new(Int32(role.rawValue), &settings, &error, error.count)
        } } } }
        guard let made else { throw TLSTestError.context(text(error)) }
        raw = made
    }
    deinit { pd_tls_context_free(raw) }
}

/// The C string in a buffer the C side filled.
func text(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}

/// One handshake over a socketpair, each side on its own thread; each side's connection or reason.
struct Outcome {
    var server: OpaquePointer?, serverError: String
    var client: OpaquePointer?, clientError: String
    var fds: (Int32, Int32)
}

func shake(server: Context, client: Context) -> Outcome {
    var pair: [Int32] = [-1, -1]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
    final class Side: @unchecked Sendable { var tls: OpaquePointer?; var error = "" }
    let serverSide = Side()
    let done = DispatchSemaphore(value: 0)
    let serverFd = pair[0], clientFd = pair[1]
    Thread {
        var error = [CChar](repeating: 0, count: 512)
        serverSide.tls = pd_tls_handshake(server.raw, serverFd, 10_000, &error, error.count)
        serverSide.error = text(error)
        // A refused guest learns of it on its first read: the server's side closes.
        if serverSide.tls == nil { shutdown(serverFd, Int32(SHUT_RDWR)) }
        done.signal()
    }.start()
    var error = [CChar](repeating: 0, count: 512)
    let c = pd_tls_handshake(client.raw, clientFd, 10_000, &error, error.count)
    done.wait()
    return Outcome(server: serverSide.tls, serverError: serverSide.error, client: c, clientError: text(error), fds: (serverFd, clientFd))
}

func finish(_ o: Outcome) {
    if let s = o.server { pd_tls_free(s) }
    if let c = o.client { pd_tls_free(c) }
    close(o.fds.0)
    close(o.fds.1)
}

/// Whether bytes go both ways: the client's first read sees a refusal that came after its own handshake.
func exchange(_ o: Outcome) -> Bool {
    guard let s = o.server, let c = o.client else { return false }
    var ping: [UInt8] = Array("ping".utf8)
    guard pd_tls_write(c, &ping, 4) == 4 else { return false }
    var got = [UInt8](repeating: 0, count: 4)
    guard pd_tls_read(s, &got, 4) == 4, got == ping else { return false }
    var pong: [UInt8] = Array("pong".utf8)
    guard pd_tls_write(s, &pong, 4) == 4 else { return false }
    return pd_tls_read(c, &got, 4) == 4 && got == pong
}

@Suite("TLS layer: handshakes on a socket pair")
struct HandshakeTests {
    let certs: TestCertificates
    init() throws { certs = try TestCertificates() }

    func backend() throws -> Context {
        try Context(PD_TLS_SERVER, cert: certs.path("backend.pem"), key: certs.path("backend.key"), ca: certs.path("ca.pem"),
                    psk: certs.path("backend.psk"))
    }

    @Test func mutualCertificatesNameTheGuestBySubjectAndSAN() throws {
        let guest = try Context(PD_TLS_CLIENT, cert: certs.path("guest-1.pem"), key: certs.path("guest-1.key"), ca: certs.path("ca.pem"))
        let o = shake(server: try backend(), client: guest)
        defer { finish(o) }
        #expect(o.server != nil, "\(o.serverError)")
        #expect(o.client != nil, "\(o.clientError)")
        #expect(exchange(o))
        guard let s = o.server, let c = o.client else { return }
        #expect(String(cString: pd_tls_peer_kind(s)) == "cert")
        #expect(String(cString: pd_tls_peer_subject(s)) == "CN=guest-1,O=Paradice")
        #expect(String(cString: pd_tls_peer_names(s)) == "DNS:guest-1")
        #expect(String(cString: pd_tls_peer_subject(c)) == "CN=127.0.0.1,O=Paradice")
        #expect(String(cString: pd_tls_peer_names(c)) == "IP:127.0.0.1,DNS:localhost")
        #expect(String(cString: pd_tls_cipher(s)).hasPrefix("TLS_"))
    }

    @Test func aPreSharedKeyNamesTheGuestByItsIdentity() throws {
        let guest = try Context(PD_TLS_CLIENT, psk: certs.path("guest.psk"))
        let o = shake(server: try backend(), client: guest)
        defer { finish(o) }
        #expect(o.server != nil, "\(o.serverError)")
        #expect(exchange(o))
        guard let s = o.server, let c = o.client else { return }
        #expect(String(cString: pd_tls_peer_kind(s)) == "psk")
        #expect(String(cString: pd_tls_peer_psk_identity(s)) == "guest-psk")
        #expect(String(cString: pd_tls_peer_kind(c)) == "psk")
    }

    @Test func aBackendWithOnlyAPSKServesPSKGuests() throws {
        let server = try Context(PD_TLS_SERVER, psk: certs.path("backend.psk"))
        let o = shake(server: server, client: try Context(PD_TLS_CLIENT, psk: certs.path("guest.psk")))
        defer { finish(o) }
        #expect(exchange(o), "\(o.serverError) / \(o.clientError)")
    }

    @Test func aWrongPSKIsRefused() throws {
        let o = shake(server: try backend(), client: try Context(PD_TLS_CLIENT, psk: certs.path("wrong.psk")))
        defer { finish(o) }
        #expect(o.server == nil)
        #expect(!exchange(o))
    }

    @Test func aGuestWithoutACertificateIsRefused() throws {
        // It trusts the backend (it has the CA) but proves nothing itself: with no key at all it cannot
        // even make a context, so it is a PSK guest whose identity the backend does not know.
        try "nobody:00112233445566778899aabbccddeeff\n".write(toFile: certs.path("unknown.psk"), atomically: true, encoding: .utf8)
        let o = shake(server: try backend(), client: try Context(PD_TLS_CLIENT, psk: certs.path("unknown.psk")))
        defer { finish(o) }
        #expect(o.server == nil)
        #expect(o.serverError.contains("certificate") || o.serverError.contains("handshake"), "\(o.serverError)")
        #expect(!exchange(o))
    }

    @Test func aGuestCertificateFromAnotherCAIsRefused() throws {
        let stranger = try Context(PD_TLS_CLIENT, cert: certs.path("other/stranger.pem"), key: certs.path("other/stranger.key"),
                                   ca: certs.path("ca.pem"))
        let o = shake(server: try backend(), client: stranger)
        defer { finish(o) }
        #expect(o.server == nil)
        #expect(o.serverError.contains("certificate"), "\(o.serverError)")
        #expect(!exchange(o))
    }

    @Test func aFrontendRefusesABackendItsCADidNotSign() throws {
        let guest = try Context(PD_TLS_CLIENT, cert: certs.path("guest-1.pem"), key: certs.path("guest-1.key"), ca: certs.path("other/ca.pem"))
        let o = shake(server: try backend(), client: guest)
        defer { finish(o) }
        #expect(o.client == nil)
        #expect(o.clientError.hasPrefix("TLS handshake: the backend's certificate is refused: "), "\(o.clientError)")
    }

    @Test func aGuestCertificateCannotPoseAsTheBackend() throws {
        // guest-2's certificate is for clients only (extendedKeyUsage clientAuth).
        let impostor = try Context(PD_TLS_SERVER, cert: certs.path("guest-2.pem"), key: certs.path("guest-2.key"), ca: certs.path("ca.pem"))
        let guest = try Context(PD_TLS_CLIENT, cert: certs.path("guest-1.pem"), key: certs.path("guest-1.key"), ca: certs.path("ca.pem"))
        let o = shake(server: impostor, client: guest)
        defer { finish(o) }
        #expect(o.client == nil)
        #expect(o.clientError.contains("unsuitable certificate purpose"), "\(o.clientError)")
    }

    @Test func plainBytesToATLSListenerAreRefused() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        // A plain frontend's PD_HELLO header.
        var hello: [UInt8] = [24, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(write(pair[1], &hello, hello.count) == hello.count)
        var error = [CChar](repeating: 0, count: 512)
        let server = try backend()
        let s = withExtendedLifetime(server) { pd_tls_handshake(server.raw, pair[0], 10_000, &error, error.count) }
        #expect(s == nil)
        #expect(text(error).contains("wrong version number") || text(error).contains("http"), "\(text(error))")
    }

    @Test func badSettingsAreNamed() throws {
        #expect(throws: TLSTestError.self) { try Context(PD_TLS_CLIENT, cert: certs.path("guest-1.pem")) }
        do {
            _ = try Context(PD_TLS_CLIENT, cert: certs.path("guest-1.pem"), key: certs.path("guest-2.key"), ca: certs.path("ca.pem"))
            Issue.record("a key of another certificate was taken")
        } catch { #expect("\(error)".contains("does not belong"), "\(error)") }
        try "guest:0011\n".write(toFile: certs.path("short.psk"), atomically: true, encoding: .utf8)
        do {
            _ = try Context(PD_TLS_SERVER, psk: certs.path("short.psk"))
            Issue.record("a short key was taken")
        } catch { #expect("\(error)" == certs.path("short.psk") + ":1: a PSK key is 16 to 64 bytes in hex (32 to 128 digits)") }
        do {
            _ = try Context(PD_TLS_CLIENT, psk: certs.path("backend.psk"))
            Issue.record("a frontend took several keys")
        } catch { #expect("\(error)".contains("several keys")) }
        do {
            _ = try Context(PD_TLS_CLIENT, psk: certs.path("missing.psk"))
            Issue.record("a missing file was taken")
        } catch { #expect("\(error)".contains("No such file")) }
    }
}
