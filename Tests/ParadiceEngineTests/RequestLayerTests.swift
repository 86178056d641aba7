import CParadice
import Foundation
@testable import ParadiceEngine
import ParadiceSystem
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A reply as the guest reads it: the header, pd_reply, the data.
private struct DecodedReply {
    var op: UInt16
    var request: UInt32
    var result: Int64
    var error: Int32
    var data: [UInt8]

    init(_ encoded: [UInt8]) throws {
        var reader = BodyReader(encoded)
        let header = try reader.read(pd_header.self)
        #expect(Int(header.length) == encoded.count - Frame.headerSize, "the header's length is the body's")
        let reply = try reader.read(pd_reply.self)
        (op, request, result, error, data) = (header.op, header.request, reply.result, reply.error, Array(reader.readRest()))
    }
}

private func frame(_ op: pd_op, request: UInt32 = 7, handle: UInt32 = 1, _ body: [UInt8] = []) -> Frame {
    Frame(op: op.code, request: request, handle: handle, body: body)
}

/// A scratch folder, removed when the test ends.
private final class Scratch {
    let path: String
    init() throws {
        var template = Array("/tmp/paradice-request-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Errno.current }
        path = String(cString: made)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A file of /proc, read to its end (its size says 0).
private func procFile(_ path: String) throws -> String {
    let fd = try Syscall.open(path, O_RDONLY | O_CLOEXEC)
    defer { try? Syscall.close(fd) }
    var contents: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while case let n = try Syscall.read(fd, &chunk, chunk.count), n > 0 { contents += chunk[0..<n] }
    return String(decoding: contents, as: UTF8.self)
}

@Suite("Request decoding")
struct RequestDecodingTests {
    /// Every op with a structure: one byte short does not decode, whatever the bytes.
    @Test func aBodyShorterThanItsStructureIsMalformed() {
        let structured: [(pd_op, Int)] = [
            (PD_OPEN, MemoryLayout<pd_open>.size), (PD_READ, MemoryLayout<pd_io>.size), (PD_PREAD, MemoryLayout<pd_io>.size),
            (PD_WRITE, MemoryLayout<pd_io>.size), (PD_PWRITE, MemoryLayout<pd_io>.size), (PD_POLL, MemoryLayout<pd_poll>.size),
            (PD_WATCH, MemoryLayout<pd_poll>.size), (PD_LLSEEK, MemoryLayout<pd_llseek>.size), (PD_SETFL, MemoryLayout<pd_flags>.size),
            (PD_FASYNC, MemoryLayout<pd_flags>.size), (PD_MMAP, MemoryLayout<pd_mmap>.size), (PD_MUNMAP, MemoryLayout<pd_munmap>.size),
            (PD_INTERRUPT, MemoryLayout<pd_interrupt_request>.size),
        ]
        for (op, size) in structured {
            #expect(throws: ProtocolError.self, "op \(op.rawValue)") { try RequestFrame(frame(op, [UInt8](repeating: 0xA5, count: size - 1))) }
            #expect(throws: Never.self, "op \(op.rawValue)") { try RequestFrame(frame(op, [UInt8](repeating: 0, count: size))) }
        }
        #expect(throws: ProtocolError.self) { try Hello(Frame(op: PD_HELLO.code, body: [1, 2, 3])) }
    }

    @Test func pathsGetTheErrnoOfALocalOpen() throws {
        func path(_ given: [UInt8]) throws -> GuestPath {
            guard case .open(_, _, let path) = try RequestFrame(frame(PD_OPEN, bytes(of: pd_open(flags: O_RDONLY, mode: 0)) + given)).request
            else { throw Errno.ioError }
            return path
        }
        #expect(try path([]) == .failure(.noSuchFileOrDirectory))
        #expect(try path(Array(repeating: UInt8(ascii: "p"), count: Int(PATH_MAX))) == .failure(.fileNameTooLong))
        #expect(try path(Array("/dev/ptmx\0/etc/passwd".utf8)) == .failure(.invalidArgument))
        #expect(try path(Array("/dev/ptmx".utf8)) == .success("/dev/ptmx"))
        guard case .listDirectory(let listed) = try RequestFrame(frame(PD_LISTDIR, Array("/dev\0".utf8))).request else {
            Issue.record("PD_LISTDIR decoded as something else")
            return
        }
        #expect(listed == .failure(.invalidArgument))
    }

    @Test func positionalOpsCarryTheirOffsetAndTheOthersNone() throws {
        let io = bytes(of: pd_io(count: 5, offset: 40))
        guard case .read(5, nil) = try RequestFrame(frame(PD_READ, io)).request,
              case .read(5, 40?) = try RequestFrame(frame(PD_PREAD, io)).request,
              case .write(let data, nil) = try RequestFrame(frame(PD_WRITE, io + [1, 2, 3])).request,
              case .write(let positioned, 40?) = try RequestFrame(frame(PD_PWRITE, io + [4])).request
        else {
            Issue.record("decoded as something else")
            return
        }
        #expect(Array(data) == [1, 2, 3] && Array(positioned) == [4])
    }

    /// PD_MUNMAP's mirror contents: a count past the frame, or a range longer than it, is malformed, but the
    /// verdict waits for the mapping to be looked up.
    @Test func unmapContentsAreCheckedAgainstTheFrame() throws {
        let head = bytes(of: pd_munmap(mapping: 3, reserved: 0))
        func contents(_ rest: [UInt8]) throws -> Result<[MirrorBytes], ProtocolError> {
            guard case .unmap(3, let contents) = try RequestFrame(frame(PD_MUNMAP, head + rest)).request else { throw Errno.ioError }
            return contents
        }
        #expect(try contents([]).get().isEmpty)
        #expect(throws: ProtocolError.self) { try contents(bytes(of: pd_mapping_count(count: .max, reserved: 0))).get() }
        let long = bytes(of: pd_mapping_count(count: 1, reserved: 0)) + bytes(of: pd_mapping_range(mapping: 3, length: 1 << 30, offset: 0))
        #expect(throws: ProtocolError.self) { try contents(long).get() }
        let one = bytes(of: pd_mapping_count(count: 1, reserved: 0)) + bytes(of: pd_mapping_range(mapping: 3, length: 3, offset: 8))
            + [9, 8, 7, 0, 0, 0, 0, 0]
        let ranges = try contents(one).get()
        #expect(ranges.count == 1 && ranges[0].offset == 8 && Array(ranges[0].bytes) == [9, 8, 7])
    }

    /// PD_IOCTL's counts and lengths, as the hostile suite sends them to a backend.
    @Test func ioctlCountsAndLengthsPastTheFrameAreMalformed() throws {
        let tiocgwinsz: UInt32 = 0x5413
        let malformed: [(UInt16, [UInt8])] = [
            (0, bytes(of: pd_ioctl(command: tiocgwinsz, region_count: .max, argument: 0x1000))),
            (0, bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 1, argument: 0x1000))
                + bytes(of: pd_region(address: 0x1000, length: .max, reserved: 0)) + [1, 2, 3, 4, 5, 6, 7, 8]),
            (0, bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 65, argument: 0x1000)) + [UInt8](repeating: 0, count: 65 * 16)),
            (UInt16(PD_IOCTL_MAPPINGS), bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 0, argument: 0x1000))
                + bytes(of: pd_mapping_count(count: .max, reserved: 0))),
            (UInt16(PD_IOCTL_MAPPINGS), bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 0, argument: 0x1000))
                + bytes(of: pd_mapping_count(count: 1, reserved: 0)) + bytes(of: pd_mapping_range(mapping: 1, length: 1 << 30, offset: 0))),
            (UInt16(PD_IOCTL_MAPPINGS), bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 0, argument: 0x1000))),
            (0, [UInt8](repeating: 0, count: MemoryLayout<pd_ioctl>.size - 1)),
            // Slots translated ahead: a count past the frame, past the bound, or no count at all.
            (UInt16(PD_IOCTL_SLOTS_AHEAD), bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 0, argument: 0x1000))
                + bytes(of: pd_slot_count(count: .max, flags: 0))),
            (UInt16(PD_IOCTL_SLOTS_AHEAD), bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 0, argument: 0x1000))
                + bytes(of: pd_slot_count(count: 65, flags: 0)) + [UInt8](repeating: 0, count: 65 * 16)),
            (UInt16(PD_IOCTL_SLOTS_AHEAD), bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 0, argument: 0x1000))),
        ]
        for (flags, body) in malformed {
            #expect(throws: ProtocolError.self) {
                try IoctlRequest(Frame(op: PD_IOCTL.code, flags: flags, body: body), maxRegions: 64)
            }
        }
        // A region with bytes, one named out, and mirror bytes.
        let body = bytes(of: pd_ioctl(command: tiocgwinsz, region_count: 2, argument: 0x1000))
            + bytes(of: pd_region(address: 0x1000, length: 3, reserved: 0)) + [1, 2, 3, 0, 0, 0, 0, 0]
            + bytes(of: pd_region(address: 0x2000, length: 8, reserved: PD_REGION_OUT))
            + bytes(of: pd_mapping_count(count: 1, reserved: 0)) + bytes(of: pd_mapping_range(mapping: 4, length: 2, offset: 16)) + [5, 6]
        let ioctl = try IoctlRequest(Frame(op: PD_IOCTL.code, flags: UInt16(PD_IOCTL_MAPPINGS | PD_IOCTL_TRANSLATED), body: body), maxRegions: 64)
        #expect(ioctl.command == tiocgwinsz && ioctl.argument == 0x1000 && ioctl.translated)
        #expect(ioctl.gathered.count == 1 && ioctl.gathered[0].address == 0x1000 && Array(ioctl.gathered[0].bytes) == [1, 2, 3])
        #expect(ioctl.named.count == 1 && ioctl.named[0].address == 0x2000 && ioctl.named[0].length == 8)
        #expect(ioctl.mirrored?.count == 1 && ioctl.mirrored?[0].mapping == 4 && ioctl.mirrored.map { Array($0[0].bytes) } == [5, 6])
        #expect(ioctl.slotsAhead == nil)
        // Descriptors translated ahead come last, after the mirror bytes.
        let ahead = try IoctlRequest(Frame(op: PD_IOCTL.code, flags: UInt16(PD_IOCTL_MAPPINGS | PD_IOCTL_SLOTS_AHEAD),
                                           body: body + [0, 0, 0, 0, 0, 0] + bytes(of: pd_slot_count(count: 1, flags: PD_NEED_ARGUMENT_FD))
                                               + bytes(of: pd_slot(address: 0x1004, width: 4, direction: 1))), maxRegions: 64)
        #expect(ahead.slotsAhead == IoctlRequest.SlotsAhead(slots: [(0x1004, 4)], argument: true))
        #expect(!ahead.translated && ahead.mirrored?.count == 1)
    }

    @Test func anInterruptNamesItsRequestAndIgnoresWhatFollows() throws {
        let body = bytes(of: pd_interrupt_request(request: 0xDEAD_BEEF, reserved: 0)) + [1, 2, 3]
        guard case .interrupt(let named) = try RequestFrame(frame(PD_INTERRUPT, request: 0, handle: 0, body)).request else {
            Issue.record("PD_INTERRUPT decoded as another request")
            return
        }
        #expect(named == 0xDEAD_BEEF)
    }

    @Test func opsNoFrontendSendsAreUnknown() throws {
        for op: UInt16 in [0, 99, PD_REPLY.code, PD_NEED.code, PD_EVENT.code, PD_HELLO.code, 0xFFFF] {
            guard case .unknown(op) = try RequestFrame(Frame(op: op, body: [1, 2, 3])).request else {
                Issue.record("op \(op) decoded as a request")
                continue
            }
        }
    }
}

/// Decode → execute → encode, with no session and no socket: the frame a guest sends, the call the
/// executor makes on a real file, and the reply the guest would read.
@Suite("Request execution without a socket")
struct RequestExecutionTests {
    @Test func pwriteThenPreadOfARealFile() throws {
        let scratch = try Scratch()
        let fd = try Syscall.open(scratch.path + "/file", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        defer { try? Syscall.close(fd) }
        let written = try RequestFrame(frame(PD_PWRITE, request: 21, bytes(of: pd_io(count: 0, offset: 3)) + Array("paradice".utf8)))
        guard case .write(let data, let offset) = written.request else { throw Errno.ioError }
        let wrote = try DecodedReply(ParadiceWire.Reply.frame(written.id, Executor.write(fd, data, offset: offset)))
        #expect(wrote.op == PD_REPLY.code && wrote.request == 21 && wrote.result == 8 && wrote.error == 0)
        var native = [UInt8](repeating: 0, count: 11)
        #expect(Glibc.pread(fd, &native, 11, 0) == 11)
        #expect(native == [0, 0, 0] + Array("paradice".utf8))

        let read = try RequestFrame(frame(PD_PREAD, request: 22, bytes(of: pd_io(count: 100, offset: 5))))
        guard case .read(let count, let at) = read.request else { throw Errno.ioError }
        let got = try DecodedReply(Executor.read(fd, count: Int(count), offset: at, request: read.id))
        #expect(got.request == 22 && got.result == 6 && got.error == 0)
        #expect(got.data == Array("radice".utf8))

        let stat = try DecodedReply(ParadiceWire.Reply.frame(1, .success(0), data: Executor.stat(fd)))
        var reader = BodyReader(stat.data)
        let st = try reader.read(pd_stat.self)
        #expect(st.mode & S_IFMT == S_IFREG && st.size == 11)
    }

    @Test func errnosTravelAsTheKernelGaveThem() throws {
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let seek = try RequestFrame(frame(PD_LLSEEK, bytes(of: pd_llseek(offset: 0, whence: SEEK_SET, reserved: 0))))
        guard case .seek(let offset, let whence) = seek.request else { throw Errno.ioError }
        let refused = try DecodedReply(ParadiceWire.Reply.frame(seek.id, Executor.seek(fds[0], offset: offset, whence: whence)))
        #expect(refused.result == -1 && refused.error == ESPIPE)

        // No descriptor (a closed number could be reused by a test running alongside).
        let closed: Int32 = -1
        let stale = try DecodedReply(Executor.read(closed, count: 8, offset: nil, request: 3))
        #expect(stale.result == -1 && stale.error == EBADF && stale.data.isEmpty)
        let fsync = try DecodedReply(ParadiceWire.Reply.frame(4, Executor.fsync(closed)))
        #expect(fsync.error == EBADF)
        #expect(Executor.open("/nonexistent/paradice", flags: O_RDONLY) == .failure(.noSuchFileOrDirectory))
    }

    @Test func pollOfAPipeSeesItsData() throws {
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let request = try RequestFrame(frame(PD_POLL, bytes(of: pd_poll(events: Int32(POLLIN), timeout_ms: 0))))
        guard case .poll(let events, let timeout, nil) = request.request else { throw Errno.ioError }
        #expect(try DecodedReply(ParadiceWire.Reply.frame(request.id, Executor.poll(fds[0], events: events, timeoutMilliseconds: timeout))).result == 0)
        #expect(Glibc.write(fds[1], "x", 1) == 1)
        let ready = try DecodedReply(ParadiceWire.Reply.frame(request.id, Executor.poll(fds[0], events: events, timeoutMilliseconds: timeout)))
        #expect(ready.result == Int64(POLLIN) && ready.error == 0)
    }

    @Test func aDirectoryAndALinkOfARealTree() throws {
        let scratch = try Scratch()
        #expect(mkdir(scratch.path + "/class", 0o755) == 0)
        #expect(symlink("class", scratch.path + "/link") == 0)
        let (listed, data) = Executor.listDirectory(scratch.path) { _ in true }
        let reply = try DecodedReply(ParadiceWire.Reply.frame(9, listed, data: data))
        var reader = BodyReader(reply.data)
        var names: [String: UInt8] = [:]
        for _ in 0..<reply.result {
            let entry = try reader.read(pd_dirent.self)
            names[String(decoding: try reader.readBytes(Int(entry.name_length)), as: UTF8.self)] = entry.type
            reader.skipPadding()
        }
        #expect(reader.remaining == 0)
        #expect(names == [".": UInt8(DT_DIR), "..": UInt8(DT_DIR), "class": UInt8(DT_DIR), "link": UInt8(DT_LNK)])
        let (none, _) = Executor.listDirectory(scratch.path + "/link/missing") { _ in true }
        #expect(none == .failure(.noSuchFileOrDirectory))
        #expect(Executor.readLink(scratch.path + "/link") == .success(Array("class".utf8)))
        #expect(Executor.readLink(scratch.path + "/class") == .failure(.invalidArgument))   // not a link
    }

    @Test func mapsADeviceSharedAndNeverExecutable() throws {
        let fd = try Syscall.open("/dev/zero", O_RDWR | O_CLOEXEC)
        defer { try? Syscall.close(fd) }
        let address = try Executor.map(fd, offset: 0, length: 4096, protection: PROT_READ | PROT_WRITE | PROT_EXEC).get()
        defer { try? Syscall.munmap(address, 4096) }
        #expect(address.load(as: UInt64.self) == 0)
        // The kernel's own view of the mapping: shared, read and write, no execute.
        let maps = try procFile("/proc/self/maps")
        let at = UInt(bitPattern: address)
        let line = maps.split(separator: "\n").first { line in
            let range = line.prefix { $0 != " " }.split(separator: "-").compactMap { UInt($0, radix: 16) }
            return range.count == 2 && range[0] <= at && at < range[1]
        }
        #expect(line?.split(separator: " ")[1] == "rw-s")
        #expect(Executor.map(-1, offset: 0, length: 4096, protection: PROT_READ) == .failure(.badFileDescriptor))
    }
}
