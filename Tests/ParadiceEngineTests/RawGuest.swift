import CParadice
import Foundation
import ParadiceClient
import ParadiceWire
#if canImport(Glibc)
import Glibc
#endif

/// A guest that speaks raw frames over the backend's socket: whatever bytes a test wants to send, with
/// replies read under a deadline, so that a backend that stops answering fails the test instead of hanging it.
final class RawGuest {
    let fd: Int32
    private var pending: [UInt8] = []
    private var nextRequest: UInt32 = 1
    /// Over shm: the rings, pumped to and from `fd` (the test's raw bytes travel through the real rings).
    private(set) var bridge: RingBridge?

    /// Connects to `unix:/path`, `tcp://host:port` or `shm:/path`.
    init(_ endpoint: String) throws {
        if endpoint.hasPrefix("shm:") {
            let bridge = try RingBridge(String(endpoint.dropFirst(4)))
            self.bridge = bridge
            fd = bridge.guestSide
        } else if endpoint.hasPrefix("unix:") {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let path = Array(endpoint.dropFirst(5).utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.enumerated() { raw[i] = b } }
            let r = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if r != 0 { let e = errno; close(fd); throw Errno(e) }
        } else {
            let hostPort = endpoint.dropFirst("tcp://".count).split(separator: ":")
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(hostPort[1])!.bigEndian
            inet_pton(AF_INET, String(hostPort[0]), &address.sin_addr)
            let r = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if r != 0 { let e = errno; close(fd); throw Errno(e) }
        }
    }

    deinit {
        close(fd)
        bridge?.finish()
    }

    // MARK: bytes

    /// Sends everything, or as much as the socket takes without waiting when `wait` is false. False once
    /// the backend has closed the connection (or, without waiting, once the socket is full).
    @discardableResult
    func send(_ bytes: [UInt8], wait: Bool = true) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL) | (wait ? 0 : Int32(MSG_DONTWAIT))) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    static func frame(op: UInt16, flags: UInt16 = 0, request: UInt32, handle: UInt32 = 0, body: [UInt8] = [], length: UInt32? = nil) -> [UInt8] {
        var header = pd_header(length: length ?? UInt32(body.count), op: op, flags: flags, request: request, handle: handle)
        return withUnsafeBytes(of: &header) { Array($0) } + body
    }

    /// The next frame, or nil when the connection ended or nothing came within `seconds`.
    func receive(seconds: Double = 10) -> Frame? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if pending.count >= Frame.headerSize {
                let header = pending.withUnsafeBytes { $0.loadUnaligned(as: pd_header.self) }
                let total = Frame.headerSize + Int(header.length)
                if pending.count >= total {
                    let body = Array(pending[Frame.headerSize..<total])
                    pending.removeFirst(total)
                    return Frame(op: header.op, flags: header.flags, request: header.request, handle: header.handle, body: body)
                }
            }
            guard readMore(until: deadline) else { return nil }
        }
    }

    /// Whether the backend closed the connection within `seconds` (what it sent before is discarded).
    func closedByBackend(seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            pending.removeAll()
            guard readable(until: deadline) else { return false }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n == 0 || (n < 0 && errno == ECONNRESET) { return true }
        }
    }

    /// Waits for bytes (or the end) until `deadline`. A signal to the test process (a child's SIGCHLD)
    /// interrupts poll: that is no answer from the backend, so the wait goes on.
    private func readable(until deadline: Date) -> Bool {
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            let r = poll(&p, 1, left)
            if r > 0 { return true }
            if r < 0 && errno == EINTR && Date() < deadline { continue }
            return false
        }
    }

    private func readMore(until deadline: Date) -> Bool {
        guard readable(until: deadline) else { return false }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var n: Int
        repeat { n = recv(fd, &chunk, chunk.count, 0) } while n < 0 && errno == EINTR
        guard n > 0 else { return false }
        pending += chunk[0..<n]
        return true
    }

    /// Reads and drops whatever has arrived, without waiting.
    func drain() {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT)) > 0 {}
        pending.removeAll()
    }

    // MARK: requests

    func newRequest() -> UInt32 {
        defer { nextRequest &+= 1; if nextRequest == 0 { nextRequest = 1 } }
        return nextRequest
    }

    /// Sends one request and waits for the frame that answers it (events and other replies are skipped).
    func call(_ op: pd_op, flags: UInt16 = 0, handle: UInt32 = 0, body: [UInt8] = []) -> Frame? {
        let request = newRequest()
        guard send(Self.frame(op: op.code, flags: flags, request: request, handle: handle, body: body)) else { return nil }
        while let frame = receive() {
            if frame.request == request && frame.op != PD_EVENT.code { return frame }
        }
        return nil
    }

    /// A reply's result and errno; nil when no reply came.
    func result(_ op: pd_op, flags: UInt16 = 0, handle: UInt32 = 0, body: [UInt8] = []) -> (result: Int64, error: Int32)? {
        guard let frame = call(op, flags: flags, handle: handle, body: body) else { return nil }
        return Self.decode(frame)
    }

    static func decode(_ frame: Frame) -> (result: Int64, error: Int32)? {
        var reader = BodyReader(frame.body)
        guard frame.op == PD_REPLY.code, let reply = try? reader.read(pd_reply.self) else { return nil }
        return (reply.result, reply.error)
    }

    /// The handshake; true once the backend answered with a session.
    @discardableResult
    func hello(_ name: String = "raw") -> Bool { handshake(name) != nil }

    /// The handshake, joining a session or claiming a fork ticket when asked: the backend's answer, or nil
    /// when it answered with an error (or not at all).
    func handshake(_ name: String = "raw", join session: UInt32 = 0, token: UInt32 = 0) -> pd_hello_reply? {
        var body = bytes(of: pd_hello(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                                      capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS, pid: UInt32(getpid()), join_session: session, join_token: token))
        body += Array(name.utf8)
        guard send(Self.frame(op: PD_HELLO.code, request: 0, body: body)), let reply = receive(), reply.op == PD_REPLY.code else { return nil }
        var reader = BodyReader(reply.body)
        guard reply.body.count >= MemoryLayout<pd_hello_reply>.size else { return nil }
        return try? reader.read(pd_hello_reply.self)
    }

    /// Opens an exported path: the handle, or the errno.
    func open(_ path: String, flags: Int32 = O_RDWR | O_NOCTTY) -> (handle: UInt32, error: Int32) {
        guard let r = result(PD_OPEN, body: bytes(of: pd_open(flags: flags, mode: 0)) + Array(path.utf8)) else { return (0, -1) }
        return (UInt32(truncatingIfNeeded: r.result), r.error)
    }
}

/// A shm guest's rings pumped to and from one end of a socket pair, so that a raw guest's bytes go through
/// the real rings, and a guest that stops reading stops the pump and so fills the backend's ring. Closing
/// the guest's end ends the pump and hangs the rings up, as a guest that dies does.
final class RingBridge: @unchecked Sendable {
    let ring: UnsafeMutablePointer<paradice_ring>
    let guestSide: Int32
    private let pumpSide: Int32
    private let pumps = ConditionCounter()

    init(_ path: String) throws {
        let setup = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(setup, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if r != 0 { let e = errno; close(setup); throw Errno(e) }
        ring = .allocate(capacity: 1)
        ring.initialize(to: paradice_ring())
        guard paradice_ring_accept_offer(ring, setup) == 0 else { let e = Errno.current; close(setup); ring.deallocate(); throw e }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            let e = Errno.current
            paradice_ring_close(ring)
            ring.deallocate()
            throw e
        }
        guestSide = pair[0]
        pumpSide = pair[1]
        pumps.add(2)
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            outer: while true {
                let n = buffer.withUnsafeMutableBytes { paradice_ring_recv(ring, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                var sent = 0
                while sent < n {
                    let k = buffer.withUnsafeBytes { Glibc.send(pumpSide, $0.baseAddress! + sent, n - sent, Int32(MSG_NOSIGNAL)) }
                    if k < 0 && errno == EINTR { continue }
                    if k <= 0 { break outer }
                    sent += k
                }
            }
            Glibc.shutdown(pumpSide, Int32(SHUT_WR))
            pumps.done()
        }.start()
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            outer: while true {
                let n = recv(pumpSide, &buffer, buffer.count, 0)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                var sent = 0
                while sent < n {
                    let k = buffer.withUnsafeBytes { paradice_ring_send(ring, $0.baseAddress! + sent, n - sent) }
                    if k <= 0 { break outer }
                    sent += k
                }
            }
            paradice_ring_shutdown(ring)
            pumps.done()
        }.start()
    }

    /// Called once the guest's end is closed: waits for both pumps, then releases the rings.
    func finish() {
        pumps.wait()
        paradice_ring_close(ring)
        ring.deallocate()
        close(pumpSide)
    }
}

/// A count of running threads that one can wait to reach zero.
final class ConditionCounter: @unchecked Sendable {
    private let condition = NSCondition()
    private var running = 0
    func add(_ n: Int) { condition.lock(); running += n; condition.unlock() }
    func done() { condition.lock(); running -= 1; condition.broadcast(); condition.unlock() }
    func wait() { condition.lock(); while running > 0 { condition.wait() }; condition.unlock() }
}

/// The bytes of a C struct, as they travel.
func bytes<T>(of value: T) -> [UInt8] {
    var v = value
    return withUnsafeBytes(of: &v) { Array($0) }
}

/// What a process holds: its descriptors, threads and resident memory, from /proc.
struct Footprint: CustomStringConvertible {
    var descriptors: Int
    var threads: Int
    var residentKiB: Int

    init(pid: Int32) {
        descriptors = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
        threads = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []).count
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        residentKiB = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    var description: String { "\(descriptors) fds, \(threads) threads, \(residentKiB / 1024) MiB resident" }
}

/// A small, seeded generator (SplitMix64): the same seed gives the same frames on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
