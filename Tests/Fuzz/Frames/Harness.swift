#if canImport(Glibc)
import Glibc
#endif
import CParadice
import FuzzDriver
import Logging
@testable import ParadiceEngine
import ParadiceTransport
import ParadiceWire

/// libFuzzer harness: arbitrary bytes as one guest's stream of frames, into a real backend's session.
///
/// One backend serves every input of the process: it exports a pty master (its slave reached through
/// TIOCGPTPEER), /dev/null (no spec class) and a small read-only tree. Each input is one guest connection,
/// served to its end and torn down before the next: whatever the session does with the bytes (a crash, a
/// hang, a leak) is this input's.
///
/// Each input is first cut into frames that go to the request decoder directly (ParadiceWire's
/// `RequestFrame` and `Hello`), whose every accepted request must lie inside the frame it came from; then the
/// whole stream goes to a session.
///
/// Input: byte 0, bit 0 clear: the harness says a valid PD_HELLO first, then sends bytes 1…; set: bytes 1…
/// are the whole stream, handshake included.

struct FuzzBackend: Sendable {
    let backend: Backend
}

let fuzzBackend: FuzzBackend = {
    let specs = "/" + #filePath.split(separator: "/").dropLast(4).joined(separator: "/") + "/Specs"
    var template = Array("/tmp/paradice-fuzz-frames-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp: \(errno)") }
    let folder = String(cString: made)
    // The exported tree: a file, a folder, a link inside it and one that points outside. At a fixed path,
    // the one the seeds were recorded with, so that their opens find it.
    let tree = "/tmp/paradice-fuzz/tree"
    mkdir("/tmp/paradice-fuzz", 0o755)
    mkdir(tree, 0o755)
    mkdir(tree + "/class", 0o755)
    let file = open(tree + "/class/name", O_CREAT | O_TRUNC | O_WRONLY, 0o644)
    _ = write(file, "vivid\n", 6)
    close(file)
    symlink("class/name", tree + "/link")
    symlink("/etc/hostname", tree + "/outside")

    var configuration = BackendConfiguration(specsDirectory: specs)
    configuration.listen = [.unix(path: folder + "/backend.sock")]
    configuration.devices = [DeviceExport("/dev/ptmx"), DeviceExport("/dev/null")]
    configuration.trees = [tree]
    configuration.shareMappings = true
    // A PD_FORK ticket outlives its session: dropped at the next second's expiry, it stays this input's.
    configuration.limits.forkTicketSeconds = 1
    let logger = Logger(label: "paradice.fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    do {
        // Its listener is never served: each input's session is made here.
        return FuzzBackend(backend: try Backend(configuration: configuration, availablePlugins: [], logger: logger))
    } catch {
        fatalError("the fuzz backend does not start: \(error)")
    }
}()

/// Ioctls whose effect reaches past the pty this session opened (the machine's console, line disciplines
/// that create network devices, a controlling terminal): sent as TIOCGWINSZ instead.
let outsideEffects: Set<UInt32> = [0x541D /* TIOCCONS */, 0x5423 /* TIOCSETD */, 0x540E /* TIOCSCTTY */, 0x5422 /* TIOCNOTTY */]

/// The stream with every frame's ioctl command that has an effect outside the session replaced.
func tamed(_ stream: [UInt8]) -> [UInt8] {
    var bytes = stream
    var at = 0
    let header = Frame.headerSize
    let commandSize = 4
    while bytes.count - at >= header {
        let length = Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
        let op = UInt16(bytes[at + 4]) | UInt16(bytes[at + 5]) << 8
        let body = at + header
        if op == PD_IOCTL.code, bytes.count - body >= commandSize {
            let command = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[body + $1]) << (8 * UInt32($1)) }
            if outsideEffects.contains(command) {
                withUnsafeBytes(of: UInt32(0x5413).littleEndian) { bytes.replaceSubrange(body..<(body + 4), with: $0) }
            }
        }
        guard length <= bytes.count - body else { break }
        at = body + length
    }
    return bytes
}

func hello() -> [UInt8] {
    var w = BodyWriter()
    w.append(pd_hello(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                      capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS, pid: UInt32(getpid()), join_session: 0, join_token: 0))
    w.append(bytes: Array("fuzz".utf8))
    return w.frame(op: PD_HELLO.code, request: 1)
}

nonisolated(unsafe) var nextSession: UInt32 = 1

/// One guest connection: the stream waits in a socket pair, ended as if the guest had closed it, and a
/// session of the backend serves it on this thread, its workers and watcher running as they always do.
/// Its replies stay unread; a session that fills the socket finds it would block and drops the guest.
func exchange(_ stream: [UInt8]) {
    var fds: [Int32] = [-1, -1]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0, "socketpair: \(errno)")
    let (backendSide, guestSide) = (fds[0], fds[1])
    defer { close(guestSide) }
    var room = Int32(max(1 << 20, 2 * stream.count))
    for fd in [backendSide, guestSide] {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &room, socklen_t(MemoryLayout<Int32>.size))
    }
    var sent = 0
    while sent < stream.count {
        let n = stream.withUnsafeBytes { send(guestSide, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
        precondition(n > 0, "send: \(errno)")
        sent += n
    }
    shutdown(guestSide, Int32(SHUT_WR))
    _ = fcntl(backendSide, F_SETFL, fcntl(backendSide, F_GETFL) | O_NONBLOCK)
    // Every other stream as a serial port frames it: a PD_HELLO past the first frame ends the session, the
    // bytes from it on kept for the next one.
    let socket = nextSession & 1 == 0
        ? FrameSocket(channel: SocketChannel(fd: backendSide), peer: "fuzz serial", pending: [], restartsOnHello: true, onClose: { ending in
            guard case .restarted(let carried) = ending else { return }
            precondition(carried.count >= Frame.headerSize && carried.count <= stream.count)
            precondition(carried.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt16.self) } == PD_HELLO.code)
        })
        : FrameSocket(fd: backendSide, peer: "fuzz", isLocal: true)
    let session = Session(id: nextSession, socket: socket, backend: fuzzBackend.backend)
    nextSession &+= 1
    session.run()
}

/// The stream's frames through the decoders alone. What a decoded request carries must come from its
/// frame's body: a decoder that read past it, or invented bytes, traps here.
func decodeEach(_ stream: [UInt8]) {
    var at = 0
    while stream.count - at >= Frame.headerSize {
        let header = stream.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: pd_header.self) }
        let body = at + Frame.headerSize
        let length = min(Int(header.length), stream.count - body)
        let frame = Frame(op: header.op, flags: header.flags, request: header.request, handle: header.handle,
                          body: Array(stream[body..<(body + length)]))
        at = body + length
        if frame.op == PD_HELLO.code { _ = try? Hello(frame); continue }
        if frame.op == PD_IOCTL.code, let ioctl = try? IoctlRequest(frame, maxRegions: 4 * fuzzBackend.backend.planner.limits.regionsPerCall) {
            let carried = ioctl.gathered.reduce(0) { $0 + $1.bytes.count } + (ioctl.mirrored ?? []).reduce(0) { $0 + $1.bytes.count }
            precondition(carried <= frame.body.count - MemoryLayout<pd_ioctl>.size)
        }
        guard let decoded = try? RequestFrame(frame) else { continue }
        precondition(decoded.id == frame.request && decoded.handle == frame.handle && decoded.op == frame.op)
        switch decoded.request {
        case .write(let data, _):
            precondition(data.count <= frame.body.count - MemoryLayout<pd_io>.size)
        case .unmap(_, .success(let ranges)):
            let carried = ranges.reduce(0) { $0 + $1.bytes.count + MemoryLayout<pd_mapping_range>.size }
            precondition(carried <= frame.body.count)
        case .open(_, _, .success(let path)):
            let carried = frame.body[MemoryLayout<pd_open>.size...]
            precondition(!carried.contains(0) && path == String(decoding: carried, as: UTF8.self))
        default: break
        }
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32 {
    _ = fuzzBackend
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard size > 0, let data else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let rest = Array(input[1...])
    decodeEach(rest)
    exchange(tamed(input[0] & 1 == 0 ? hello() + rest : rest))
    return 0
}

/// The entry point SwiftPM gives this executable: libFuzzer's driver, with this file's callback.
@_cdecl("fuzz_frames_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}
