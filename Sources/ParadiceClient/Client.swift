#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadicePlan
import ParadiceTransport
import ParadiceWire

/// A device the backend exports.
public struct ExportedDevice: Sendable, Equatable {
    public var path: String
    public var className: String
    public var mode: UInt32
    public var rdev: UInt64
}

/// A connection to a Paradice backend. Thread-safe: many threads may have requests in flight; the
/// first waiting thread reads the socket for all of them, so a lone caller never changes threads.
public final class ParadiceClient: @unchecked Sendable {
    let socket: FrameSocket
    public let session: UInt32
    public let devices: [ExportedDevice]
    public let endpoint: Endpoint

    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var nextRequest: UInt32 = 1
    private var arrived: [UInt32: Frame] = [:]
    private var reading = false
    private var failure: Errno?
    /// Called for readiness events (PD_EVENT), on whichever thread is reading.
    public var onEvent: (@Sendable (_ handle: UInt32, _ revents: Int16) -> Void)?
    /// Per ioctl number: the regions, relative to the argument, the backend asked for last time.
    private var argumentShapes: [UInt32: [(offset: UInt64, length: Int)]] = [:]

    public static func connect(_ url: String, name: String = "paradice-client") throws -> ParadiceClient {
        let endpoint = try Endpoint(url)
        return try ParadiceClient(socket: FrameSocket.connect(endpoint), endpoint: endpoint, name: name)
    }

    init(socket: FrameSocket, endpoint: Endpoint, name: String) throws {
        self.socket = socket
        self.endpoint = endpoint
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
        var w = BodyWriter()
        w.append(pd_hello(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                          capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS, pid: UInt32(getpid()), join_session: 0, join_token: 0))
        w.append(bytes: Array(name.utf8))
        try socket.sendRaw(w.frame(op: PD_HELLO.code, request: 0))
        guard let reply = try socket.receive(), reply.op == PD_REPLY.code else { throw Errno.io }
        var reader = BodyReader(reply.body)
        guard reader.remaining >= MemoryLayout<pd_hello_reply>.size else {
            let r = try reader.read(pd_reply.self)
            throw Errno(r.error == 0 ? EPROTO : r.error)
        }
        let hello = try reader.read(pd_hello_reply.self)
        guard hello.magic == PD_MAGIC else { throw Errno(EPROTO) }
        session = hello.session
        var devices: [ExportedDevice] = []
        for _ in 0..<hello.device_count {
            let d = try reader.read(pd_device.self)
            let path = String(decoding: try reader.readBytes(Int(d.path_length)), as: UTF8.self)
            let className = String(decoding: try reader.readBytes(Int(d.class_length)), as: UTF8.self)
            reader.skipPadding()
            devices.append(ExportedDevice(path: path, className: className, mode: d.mode, rdev: d.rdev))
        }
        self.devices = devices
    }

    deinit {
        socket.close()
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// Closes the connection: the backend closes every file this client opened.
    public func disconnect() {
        socket.shutdownBoth()
    }

    public func open(_ path: String, flags: Int32 = O_RDWR, mode: UInt32 = 0) throws -> RemoteFile {
        var w = BodyWriter()
        w.append(pd_open(flags: flags, mode: mode))
        w.append(bytes: Array(path.utf8))
        let reply = try call(op: PD_OPEN.code, handle: 0, body: w)
        let (result, rest) = try Self.result(reply)
        var reader = BodyReader(Array(rest))
        let st = try reader.read(pd_stat.self)
        return RemoteFile(client: self, handle: UInt32(result), path: path, mode: st.mode, rdev: st.rdev)
    }

    /// A file the backend created for this client (an ioctl that returns a descriptor).
    public func adopt(handle: UInt32, path: String = "") -> RemoteFile {
        RemoteFile(client: self, handle: handle, path: path, mode: 0, rdev: 0)
    }

    // MARK: requests

    /// Sends a request and waits for its reply (PD_REPLY or PD_NEED).
    func call(op: UInt16, flags: UInt16 = 0, handle: UInt32, body: consuming BodyWriter) throws -> Frame {
        pthread_mutex_lock(&mutex)
        if let failure { pthread_mutex_unlock(&mutex); throw failure }
        let id = nextRequest
        nextRequest &+= 1
        if nextRequest == 0 { nextRequest = 1 }
        pthread_mutex_unlock(&mutex)

        do {
            try socket.sendRaw(body.frame(op: op, flags: flags, request: id, handle: handle))
        } catch {
            fail(Errno.io)
            throw Errno.io
        }

        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while true {
            if !arrived.isEmpty, let reply = arrived.removeValue(forKey: id) { return reply }
            if let failure { throw failure }
            if reading {
                pthread_cond_wait(&condition, &mutex)
                continue
            }
            // Lead: read frames until ours comes, handing the others to their waiters.
            reading = true
            pthread_mutex_unlock(&mutex)
            var received: Frame?
            var error: Errno?
            received = try? socket.receive()
            if received == nil { error = Errno.io }
            pthread_mutex_lock(&mutex)
            reading = false
            if let error {
                failure = error
                pthread_cond_broadcast(&condition)
                throw error
            }
            let frame = received!
            if frame.op == PD_EVENT.code {
                let handler = onEvent
                if let handler {
                    var eventReader = BodyReader(frame.body)
                    let revents = (try? eventReader.readEvent()) ?? 0
                    pthread_mutex_unlock(&mutex)
                    handler(frame.handle, revents)
                    pthread_mutex_lock(&mutex)
                }
                pthread_cond_broadcast(&condition)
                continue
            }
            if frame.request == id {
                pthread_cond_broadcast(&condition)   // another waiter takes over reading
                return frame
            }
            arrived[frame.request] = frame
            pthread_cond_broadcast(&condition)
        }
    }

    private func fail(_ e: Errno) {
        pthread_mutex_lock(&mutex)
        if failure == nil { failure = e }
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    /// The result of a PD_REPLY, or its errno thrown; and the op-specific data after it.
    static func result(_ frame: Frame) throws -> (Int64, ArraySlice<UInt8>) {
        var (result, reader) = try resultReader(frame)
        return (result, reader.readRest())
    }

    /// The result of a PD_REPLY, and a reader at the op-specific data after it.
    static func resultReader(_ frame: Frame) throws -> (Int64, BodyReader) {
        guard frame.op == PD_REPLY.code else { throw Errno(EPROTO) }
        var reader = BodyReader(frame.body)
        let reply = try reader.read(pd_reply.self)
        if reply.error != 0 { throw Errno(reply.error) }
        return (reply.result, reader)
    }

    func argumentShape(_ command: UInt32) -> [(offset: UInt64, length: Int)]? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return argumentShapes.isEmpty ? nil : argumentShapes[command]
    }

    func rememberArgumentShape(_ command: UInt32, _ shape: [(offset: UInt64, length: Int)]) {
        pthread_mutex_lock(&mutex)
        argumentShapes[command] = shape
        pthread_mutex_unlock(&mutex)
    }
}

extension BodyReader {
    mutating func readEvent() throws -> Int16 { Int16(truncatingIfNeeded: try read(pd_event.self).revents) }
}
