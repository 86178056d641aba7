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
/// first waiting thread reads the socket for all of them, so a lone caller never changes threads. Once
/// a file is watched, a thread of the client's own reads the socket for good: an event may come while
/// no call is waiting.
///
/// The backend's replies are input like any other: a reply that breaks the protocol (a count past its
/// frame, a write to memory the call did not hand over, a reply nobody asked for) fails its call with
/// EIO, and the client says so once on standard error.
public final class ParadiceClient: Sendable {
    public typealias EventHandler = @Sendable (_ handle: UInt32, _ revents: Int16) -> Void

    let socket: FrameSocket
    public let session: UInt32
    public let devices: [ExportedDevice]
    public let endpoint: Endpoint

    struct State {
        var nextRequest: UInt32 = 1
        /// Requests sent and not yet answered: a frame for any other is the backend's mistake.
        var pending: Set<UInt32> = []
        var arrived: [UInt32: Frame] = [:]
        var reading = false
        var eventReader = false
        var failure: Errno?
        var onEvent: EventHandler?
        /// Events that came while no handler was set, for the next one set (the oldest are dropped past
        /// `undeliveredLimit`).
        var undelivered: [(handle: UInt32, revents: Int16)] = []
        /// Per ioctl number: the regions, relative to the argument, the backend asked for last time.
        var argumentShapes: [UInt32: [(offset: UInt64, length: Int)]] = [:]
        var toldOfBadReply = false
    }

    let state = ConditionLock(State())
    static let undeliveredLimit = 1024

    /// Called for readiness events (PD_EVENT), on whichever thread is reading. Events that came before a
    /// handler was set are given to it when it is set.
    public var onEvent: EventHandler? {
        get { state.withLock { $0.onEvent } }
        set {
            let waiting = state.withLock { s -> [(handle: UInt32, revents: Int16)] in
                s.onEvent = newValue
                guard newValue != nil else { return [] }
                defer { s.undelivered = [] }
                return s.undelivered
            }
            for e in waiting { newValue?(e.handle, e.revents) }
        }
    }

    public static func connect(_ url: String, name: String = "paradice-client") throws -> ParadiceClient {
        let endpoint = try Endpoint(url)
        return try ParadiceClient(socket: FrameSocket.connect(endpoint), endpoint: endpoint, name: name)
    }

    init(socket: FrameSocket, endpoint: Endpoint, name: String) throws {
        self.socket = socket
        self.endpoint = endpoint
        var w = BodyWriter()
        w.append(pd_hello(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                          capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS, pid: UInt32(getpid()), join_session: 0, join_token: 0))
        w.append(bytes: Array(name.utf8))
        try socket.sendRaw(w.frame(op: PD_HELLO.code, request: 0))
        guard let reply = try socket.receive(), reply.op == PD_REPLY.code else { throw Errno.io }
        var reader = BodyReader(reply.body)
        guard reader.remaining >= MemoryLayout<pd_hello_reply>.size else {
            let r = try reader.read(pd_reply.self)
            throw Errno(r.error > 0 ? r.error : EPROTO)
        }
        let hello = try reader.read(pd_hello_reply.self)
        guard hello.magic == PD_MAGIC else { throw Errno(EPROTO) }
        session = hello.session
        // Each device takes a pd_device at least: a count beyond that is not believed.
        guard UInt64(hello.device_count) * UInt64(MemoryLayout<pd_device>.size) <= UInt64(reader.remaining) else {
            throw Errno(EPROTO)
        }
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
        // An event reader, if any, sees the end and lets go of the socket, which then closes.
        socket.shutdownBoth()
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
        guard result > 0, result <= Int64(UInt32.max), let st = try? reader.read(pd_stat.self) else {
            throw badReply("an open answered with handle \(result) and \(rest.count) bytes")
        }
        return RemoteFile(client: self, handle: UInt32(result), path: path, mode: st.mode, rdev: st.rdev)
    }

    /// A file the backend created for this client (an ioctl that returns a descriptor).
    public func adopt(handle: UInt32, path: String = "") -> RemoteFile {
        RemoteFile(client: self, handle: handle, path: path, mode: 0, rdev: 0)
    }

    // MARK: requests

    /// Sends a request and waits for its reply (PD_REPLY or PD_NEED).
    func call(op: UInt16, flags: UInt16 = 0, handle: UInt32, body: consuming BodyWriter) throws -> Frame {
        let id = try state.withLock { s throws(Errno) -> UInt32 in
            if let failure = s.failure { throw failure }
            var id = s.nextRequest
            while id == 0 || s.pending.contains(id) { id &+= 1 }
            s.nextRequest = id &+ 1
            s.pending.insert(id)
            return id
        }
        defer { state.withLock { s in _ = s.pending.remove(id) } }

        do {
            try socket.sendRaw(body.frame(op: op, flags: flags, request: id, handle: handle))
        } catch {
            fail(Errno.io)
            throw Errno.io
        }

        enum Step { case answered(Frame), failed(Errno), read }
        while true {
            let step = state.withLock(waitingFor: { s -> Step? in
                if let reply = s.arrived.removeValue(forKey: id) { return .answered(reply) }
                if let failure = s.failure { return .failed(failure) }
                if s.reading { return nil }
                // Lead: read frames until ours comes, handing the others to their waiters.
                s.reading = true
                return .read
            })
            switch step {
            case .answered(let reply): return reply
            case .failed(let error): throw error
            case .read:
                let received = try? socket.receive()
                if let ours = Self.take(received, for: id, state: state, keepReading: false) { return ours }
            }
        }
    }

    /// What the thread that read `received` does with it: the caller's reply is returned, an event is
    /// delivered, another caller's reply goes to its waiter. Unless `keepReading` (the event reader),
    /// the thread stops being the reader; at the end of the stream every thread does.
    private static func take(_ received: Frame?, for id: UInt32?, state: ConditionLock<State>, keepReading: Bool) -> Frame? {
        enum Outcome { case ours(Frame), event(EventHandler?, UInt32, Int16), stray(UInt32), other }
        let outcome = state.withLock { s -> Outcome in
            guard let frame = received else {
                s.reading = false
                if s.failure == nil { s.failure = Errno.io }
                return .other
            }
            if !keepReading { s.reading = false }
            if frame.op == PD_EVENT.code {
                var reader = BodyReader(frame.body)
                let revents = (try? reader.readEvent()) ?? 0
                if s.onEvent == nil {
                    if s.undelivered.count >= undeliveredLimit { s.undelivered.removeFirst() }
                    s.undelivered.append((frame.handle, revents))
                }
                return .event(s.onEvent, frame.handle, revents)
            }
            if let id, frame.request == id { return .ours(frame) }
            // A reply for nobody (never asked, or answered already) would otherwise pile up.
            guard s.pending.contains(frame.request) else { return .stray(frame.request) }
            s.arrived[frame.request] = frame
            return .other
        }
        // Another waiter takes over reading, or finds its reply.
        state.broadcast()
        switch outcome {
        case .ours(let frame): return frame
        case .event(let handler, let handle, let revents): handler?(handle, revents)
        case .stray(let request): tell(state, "a reply to request \(request), which is not waiting for one")
        case .other: break
        }
        return nil
    }

    /// From the first watch on, a thread reads the socket for good: an event that comes while no call is
    /// waiting is delivered then, not when the next call happens to read it. Callers find their replies
    /// where it leaves them.
    func startEventReader() {
        let start = state.withLock { s -> Bool in
            defer { s.eventReader = true }
            return !s.eventReader && s.failure == nil
        }
        guard start else { return }
        // The thread holds the socket and the state, not the client: the client's end shuts the socket
        // down, which ends the thread.
        let socket = self.socket, state = self.state
        startThread {
            let claimed = state.withLock(waitingFor: { s -> Bool? in
                if s.failure != nil { return false }
                if s.reading { return nil }
                s.reading = true
                return true
            })
            guard claimed else { return }
            while true {
                let received = try? socket.receive()
                _ = ParadiceClient.take(received, for: nil, state: state, keepReading: true)
                if received == nil { return }
            }
        }
    }

    private func fail(_ e: Errno) {
        state.withLock { s in if s.failure == nil { s.failure = e } }
        state.broadcast()
    }

    /// A reply that breaks the protocol: said once per connection, and the call's error (EIO).
    func badReply(_ what: String) -> Errno {
        Self.tell(state, what)
        return Errno.io
    }

    private static func tell(_ state: ConditionLock<State>, _ what: String) {
        let first = state.withLock { s -> Bool in
            defer { s.toldOfBadReply = true }
            return !s.toldOfBadReply
        }
        if first {
            let line = Array("paradice: the backend broke the protocol (\(what)); such calls fail with EIO\n".utf8)
            _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
        }
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
        guard let reply = try? reader.read(pd_reply.self) else { throw Errno(EPROTO) }
        if reply.error != 0 { throw Errno(reply.error > 0 ? reply.error : EPROTO) }
        return (reply.result, reader)
    }

    func argumentShape(_ command: UInt32) -> [(offset: UInt64, length: Int)]? {
        state.withLock { s in s.argumentShapes.isEmpty ? nil : s.argumentShapes[command] }
    }

    func rememberArgumentShape(_ command: UInt32, _ shape: [(offset: UInt64, length: Int)]) {
        state.withLock { s in s.argumentShapes[command] = shape }
    }
}

extension BodyReader {
    mutating func readEvent() throws -> Int16 { Int16(truncatingIfNeeded: try read(pd_event.self).revents) }
}
