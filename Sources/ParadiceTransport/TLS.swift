#if canImport(Glibc)
import Glibc
#endif
import ParadiceTLS

/// How a TCP connection is secured: TLS 1.3 with certificates (mutual) or a pre-shared key, or, only when
/// asked for, plain TCP. Unix sockets need none of it: the kernel names their peer.
public struct TransportSecurity: Sendable, Equatable {
    public var certificate: String?
    public var key: String?
    public var authority: String?
    public var presharedKeys: String?
    /// Plain TCP: no authentication, no encryption. Only when asked for.
    public var plainTCP = false

    public init(certificate: String? = nil, key: String? = nil, authority: String? = nil, presharedKeys: String? = nil, plainTCP: Bool = false) {
        self.certificate = certificate
        self.key = key
        self.authority = authority
        self.presharedKeys = presharedKeys
        self.plainTCP = plainTCP
    }

    public var usesTLS: Bool { certificate != nil || key != nil || authority != nil || presharedKeys != nil }

    /// What is wrong with these settings for TCP, or nil.
    public var problem: String? {
        if usesTLS && plainTCP { return "--plain-tcp and TLS settings (--tls-cert, --tls-key, --tls-ca, --psk-file) exclude each other" }
        if !usesTLS && !plainTCP {
            return "TCP needs TLS: --tls-cert, --tls-key and --tls-ca, or --psk-file (or, unauthenticated and unencrypted, --plain-tcp)"
        }
        return nil
    }

    /// The line a program prints when it runs plain TCP.
    public static let plainWarning = "warning: plain TCP: the connection is neither authenticated nor encrypted"
}

public struct TLSFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What one side proves itself with and accepts (ParadiceTLS's context).
public final class TLSContext: @unchecked Sendable {
    public enum Role { case client, server }
    let raw: OpaquePointer

    public init(_ role: Role, _ security: TransportSecurity) throws {
        var error = [CChar](repeating: 0, count: 512)
        let made: OpaquePointer? = optionalCString(security.certificate) { cert in
            optionalCString(security.key) { key in
                optionalCString(security.authority) { ca in
                    optionalCString(security.presharedKeys) { psk in
                        var settings = pd_tls_settings(cert: cert, key: key, ca: ca, psk_file: psk)
                        return pd_tls_context_new(Int32(role == .server ? PD_TLS_SERVER.rawValue : PD_TLS_CLIENT.rawValue), &settings, &error, error.count)
                    }
                }
            }
        }
        guard let made else { throw TLSFailure(cText(error)) }
        raw = made
    }

    deinit { pd_tls_context_free(raw) }

    /// The handshake on a connected socket (which stays the caller's to close).
    public func handshake(_ fd: Int32, timeoutSeconds: Int) throws -> TLSConnection {
        var error = [CChar](repeating: 0, count: 512)
        guard let t = pd_tls_handshake(raw, fd, Int32(clamping: timeoutSeconds * 1000), &error, error.count) else {
            throw TLSFailure(cText(error))
        }
        return TLSConnection(raw: t, context: self)
    }
}

/// One TLS connection: one reader and any number of writers at a time (the C layer serializes OpenSSL).
public final class TLSConnection: @unchecked Sendable {
    let raw: OpaquePointer
    let context: TLSContext   // kept alive: the connection's keys live in it

    init(raw: OpaquePointer, context: TLSContext) {
        self.raw = raw
        self.context = context
    }

    deinit { pd_tls_free(raw) }

    public var peer: PeerIdentity {
        if String(cString: pd_tls_peer_kind(raw)) == "psk" { return .presharedKey(identity: String(cString: pd_tls_peer_psk_identity(raw))) }
        let names = String(cString: pd_tls_peer_names(raw))
        return .certificate(subject: String(cString: pd_tls_peer_subject(raw)),
                            names: names.isEmpty ? [] : names.split(separator: ",").map(String.init))
    }

    public var cipher: String { String(cString: pd_tls_cipher(raw)) }

    /// Like recv: > 0 bytes, 0 at the end of the stream, or -1 with errno.
    public func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { pd_tls_read(raw, buffer, count) }
    /// Like send: > 0 bytes (maybe fewer than count), or -1 with errno.
    public func write(_ buffer: UnsafeRawPointer, _ count: Int) -> Int { pd_tls_write(raw, buffer, count) }
    public func setReadTimeout(seconds: Int) { pd_tls_set_read_timeout(raw, Int32(clamping: seconds * 1000)) }
    public func shutdown() { pd_tls_shutdown(raw) }
}

func optionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}

func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
