#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceFrontendCore
// The one Errno of the project: what the client throws is what the backend's calls throw.
@_exported import struct ParadiceSystem.Errno
import ParadiceTransport

/// A device the backend exports.
public struct ExportedDevice: Sendable, Equatable {
    public var path: String
    public var className: String
    public var mode: UInt32
    public var rdev: UInt64
}

/// The frontend core's connection (Sources/ParadiceFrontendCore). The core guards its state with its own
/// locks, so one connection is used by many threads at once; its address never changes while held.
struct CoreConnection: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<pd_connection>
}

/// A connection to a Paradice backend, over the frontend core that the preload frontend uses too:
/// request/reply matching (the first waiting thread reads the socket for all of them; once a file is
/// watched, a thread of the core reads it for good), ioctl plan execution and every reply check.
///
/// The backend's replies are input like any other: a reply that breaks the protocol (a count past its
/// frame, a write to memory the call did not hand over, a reply nobody asked for) fails its call with
/// EIO, and the client says so once on standard error.
public final class ParadiceClient: Sendable {
    public typealias EventHandler = @Sendable (_ handle: UInt32, _ revents: Int16) -> Void

    let core: CoreConnection
    public let session: UInt32
    public let devices: [ExportedDevice]
    public let endpoint: Endpoint
    let events: ClientEvents

    /// Called for readiness events (PD_EVENT), on whichever thread is reading. Events that came before a
    /// handler was set are given to it when it is set.
    public var onEvent: EventHandler? {
        get { events.state.withLock { $0.handler } }
        set { events.setHandler(newValue) }
    }

    /// Connects to `url`. TCP goes over TLS as `security` says, or plain when it asks for plain TCP; a unix
    /// socket needs none.
    public static func connect(_ url: String, name: String = "paradice-client",
                               security: TransportSecurity = TransportSecurity()) throws -> ParadiceClient {
        try ParadiceClient(endpoint: try Endpoint(url), name: name, security: security)
    }

    /// Dials, secures the connection and shakes hands.
    convenience init(endpoint: Endpoint, name: String, security: TransportSecurity) throws {
        guard let connection = pd_conn_new() else { throw Errno.noMemory }
        var stream = pd_stream()
        let dialed = optionalCString(security.certificate) { cert in optionalCString(security.key) { key in
            optionalCString(security.authority) { ca in optionalCString(security.presharedKeys) { psk in
                var s = pd_security(cert: cert, key: key, ca: ca, psk_file: psk, plain_tcp: security.plainTCP ? 1 : 0)
                return pd_conn_dial_secure(connection, endpoint.description, &s, &stream)
            } }
        } }
        guard dialed == 0 else {
            let error = Errno.current
            let why = withUnsafeBytes(of: &connection.pointee.why) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            pd_conn_release(connection)
            if !why.isEmpty { throw ConnectionRefused(description: why, errno: error) }
            throw error
        }
        try self.init(connection: connection, stream: stream, endpoint: endpoint, name: name)
    }

    /// Shakes hands over a connected socket, which the client owns from then on (closed on failure too).
    convenience init(descriptor fd: Int32, endpoint: Endpoint, name: String) throws {
        var stream = pd_stream()
        pd_stream_socket(&stream, fd)
        guard let connection = pd_conn_new() else { stream.ops.pointee.close(&stream); throw Errno.noMemory }
        try self.init(connection: connection, stream: stream, endpoint: endpoint, name: name)
    }

    /// Shakes hands over a connected stream with the connection it was dialed for (both the client's from
    /// then on: released on failure too).
    private init(connection: UnsafeMutablePointer<pd_connection>, stream: pd_stream, endpoint: Endpoint, name: String) throws {
        var stream = stream
        let events = ClientEvents()
        self.events = events
        connection.pointee.context = Unmanaged.passRetained(events).toOpaque()
        connection.pointee.on_event = { context, handle, revents in
            Unmanaged<ClientEvents>.fromOpaque(context!).takeUnretainedValue().deliver(handle, revents)
        }
        connection.pointee.log = { context, line in
            Unmanaged<ClientEvents>.fromOpaque(context!).takeUnretainedValue().tell(String(cString: line!))
        }
        connection.pointee.release = { context in Unmanaged<ClientEvents>.fromOpaque(context!).release() }
        self.core = CoreConnection(pointer: connection)
        self.endpoint = endpoint
        var hello = pd_hello(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                             capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS, pid: UInt32(getpid()), join_session: 0, join_token: 0)
        var reply = pd_frame()
        var why: UnsafePointer<CChar>?
        let name = Array(name.utf8)
        guard pd_conn_start(connection, &stream, &hello, name, name.count, &reply, &why) == 0 else {
            let error = Errno.current
            pd_conn_release(connection)
            if let why { throw ConnectionRefused(description: "\(String(cString: why)) (\(error))", errno: error) }
            throw error
        }
        defer { pd_frame_release(connection, &reply) }
        // pd_conn_start checked the reply and every device entry against its frame.
        let body = UnsafeRawBufferPointer(start: reply.body, count: Int(reply.header.length))
        let hr = body.loadUnaligned(as: pd_hello_reply.self)
        session = hr.session
        var devices: [ExportedDevice] = []
        var at = MemoryLayout<pd_hello_reply>.size
        for _ in 0..<hr.device_count {
            let d = body.loadUnaligned(fromByteOffset: at, as: pd_device.self)
            at += MemoryLayout<pd_device>.size
            let path = String(decoding: body[at..<(at + Int(d.path_length))], as: UTF8.self)
            let className = String(decoding: body[(at + Int(d.path_length))..<(at + Int(d.path_length) + Int(d.class_length))],
                                   as: UTF8.self)
            at += (Int(d.path_length) + Int(d.class_length) + 7) / 8 * 8
            devices.append(ExportedDevice(path: path, className: className, mode: d.mode, rdev: d.rdev))
        }
        self.devices = devices
    }

    /// A connection that TLS (or its settings) refused, with the reason.
    public struct ConnectionRefused: Error, CustomStringConvertible {
        public var description: String
        public var errno: Errno
    }

    deinit {
        // An event reader, if any, sees the end and lets go of its reference, the last of which closes.
        pd_conn_shutdown(core.pointer)
        pd_conn_release(core.pointer)
    }

    /// Closes the connection: the backend closes every file this client opened.
    public func disconnect() {
        pd_conn_shutdown(core.pointer)
    }

    public func open(_ path: String, flags: Int32 = O_RDWR, mode: UInt32 = 0) throws -> RemoteFile {
        var st = pd_stat()
        var broken: Int32 = 0
        let bytes = Array(path.utf8)
        let handle = pd_file_open(core.pointer, bytes, bytes.count, flags, mode, &st, &broken)
        guard handle >= 0 else { throw failure(broken) }
        return RemoteFile(client: self, handle: UInt32(handle), path: path, mode: st.mode, rdev: st.rdev)
    }

    /// PD_FOCUS: makes the guest `name` names (its PSK identity, certificate subject or CN, `uid N`) the
    /// foreground of the backend's `foreground` exports. Returns how many files that guest has open on them.
    /// EPERM: the backend's policy does not let this client; ENOENT: no session is that guest; EINVAL: the
    /// name is more than one guest's.
    @discardableResult
    public func focus(_ name: String) throws -> Int {
        var broken: Int32 = 0
        let bytes = Array(name.utf8)
        let result = pd_file_simple(core.pointer, 0, UInt16(PD_FOCUS.rawValue), bytes, bytes.count, nil, 0, &broken)
        guard result >= 0 else { throw failure(broken) }
        return Int(result)
    }

    /// A file the backend created for this client (an ioctl that returns a descriptor).
    public func adopt(handle: UInt32, path: String = "") -> RemoteFile {
        RemoteFile(client: self, handle: handle, path: path, mode: 0, rdev: 0)
    }

    /// The error of a core call that returned -1: the device's errno, or EIO when the backend broke the
    /// protocol (said once, on standard error, by the core's log).
    func failure(_ broken: Int32) -> Errno {
        broken != 0 ? .ioError : .current
    }

    /// From the first watch on, a thread reads the socket for good: an event that comes while no call is
    /// waiting is delivered then, not when the next call happens to read it.
    func startEventReader() {
        pd_conn_start_event_reader(core.pointer)
    }
}

/// What the core hands the client on its own: events and protocol complaints. Held by the core's
/// connection (released when the connection is freed), not by the client, so that the core's event reader
/// may outlive the client.
final class ClientEvents: Sendable {
    struct State {
        var handler: ParadiceClient.EventHandler?
        /// Events that came while no handler was set, for the next one set (the oldest are dropped past
        /// `undeliveredLimit`).
        var undelivered: [(handle: UInt32, revents: Int16)] = []
        var told = false
    }

    let state = LockedValue(State())
    static let undeliveredLimit = 1024

    func setHandler(_ handler: ParadiceClient.EventHandler?) {
        let waiting = state.withLock { s -> [(handle: UInt32, revents: Int16)] in
            s.handler = handler
            guard handler != nil else { return [] }
            defer { s.undelivered = [] }
            return s.undelivered
        }
        for e in waiting { handler?(e.handle, e.revents) }
    }

    func deliver(_ handle: UInt32, _ revents: Int16) {
        let handler = state.withLock { s -> ParadiceClient.EventHandler? in
            if s.handler == nil {
                if s.undelivered.count >= Self.undeliveredLimit { s.undelivered.removeFirst() }
                s.undelivered.append((handle, revents))
            }
            return s.handler
        }
        handler?(handle, revents)
    }

    /// A line of the core's: the first breach of the protocol is said, once per connection; a handshake
    /// made again on a new connection is said as it is.
    func tell(_ line: String) {
        guard !line.hasPrefix("paradice: lost the backend") else { return }
        if line.hasPrefix("paradice: no answer to PD_HELLO") { return say(line) }
        let first = state.withLock { s -> Bool in
            defer { s.told = true }
            return !s.told
        }
        if first { say("\(line) (the backend broke the protocol; such calls fail with EIO)") }
    }

    private func say(_ line: String) {
        let text = Array("\(line)\n".utf8)
        _ = text.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

private func optionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}
