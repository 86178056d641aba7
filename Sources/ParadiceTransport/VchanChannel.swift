#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem

/// A byte channel over a Xen vchan (CParadice's paradice_vchan: libxenvchan loaded when first used). The
/// backend is the server for one guest domain at a xenstore path; a guest's frontend is its client. A vchan
/// carries no descriptors and has one client at a time.
public final class VchanChannel: ByteChannel, @unchecked Sendable {
    private let vchan: OpaquePointer

    /// `server`: publishes the rings for `domain` at `path` and waits for its client; else connects to the
    /// server that `domain` published there.
    public init(server: Bool, domain: Int32, path: String, endpoint: String) throws(TransportError) {
        var why: UnsafePointer<CChar>? = nil
        guard let v = paradice_vchan_open(server ? 1 : 0, domain, path, &why) else {
            let error = Errno(rawValue: errno)
            throw .badEndpoint(endpoint, "\(why.map { String(cString: $0) } ?? "no vchan") (\(String(cString: strerror(error.rawValue))))")
        }
        vchan = v
        if server && paradice_vchan_wait_connected(v) != 0 {
            let error = Errno(rawValue: errno)
            paradice_vchan_close(v)
            throw .system("vchan \(endpoint): waiting for the guest", error)
        }
    }

    public var descriptor: Int32? { nil }

    public func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        let n = paradice_vchan_send(vchan, base, bytes.count)
        if n < 0 { throw Self.failure("vchan send") }
        return n
    }

    public func send(_ bytes: UnsafeRawBufferPointer, passing descriptor: Int32) throws(TransportError) {
        throw .system("vchan: no descriptors between domains", .notSupported)
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let n = paradice_vchan_receive(vchan, base, buffer.count)
        if n < 0 { throw Self.failure("vchan receive") }
        return n
    }

    private static func failure(_ what: String) -> TransportError {
        let error = Errno(rawValue: errno)
        return error == .brokenPipe || error.rawValue == ESHUTDOWN ? .closed : .system(what, error)
    }

    public func setReceiveTimeout(seconds: Int) { paradice_vchan_set_receive_timeout(vchan, Int32(clamping: seconds * 1000)) }

    /// A vchan has no half close: the peer sees the end when the channel closes.
    public func finishSending() {}

    public func shutdown() { paradice_vchan_shutdown(vchan) }

    public func close() { paradice_vchan_close(vchan) }

    /// `vchan:DOMID:PATH` without its scheme: the peer's domain and the xenstore path.
    public static func parse(_ rest: String, endpoint: String) throws(TransportError) -> (domain: Int32, path: String) {
        var domain: Int32 = 0
        var path = [UInt8](repeating: 0, count: 256)
        var why: UnsafePointer<CChar>? = nil
        let parsed = path.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { paradice_vchan_parse(rest, &domain, $0.baseAddress, $0.count, &why) }
        }
        guard parsed == 0 else { throw .badEndpoint(endpoint, why.map { String(cString: $0) } ?? "bad vchan endpoint") }
        return (domain, String(decoding: path.prefix { $0 != 0 }, as: UTF8.self))
    }
}
