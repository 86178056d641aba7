import CParadice
import Foundation
@testable import ParadiceClient
import ParadiceTransport
import ParadiceWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The other end of a socketpair speaking raw frames: a backend that answers each request as the test
/// says, however wrong. `answer` gets every request after the handshake and returns the frames to send.
final class RawBackend: @unchecked Sendable {
    let client: ParadiceClient
    private let peer: FrameSocket
    private let log = FrameLog()

    init(answer: @escaping @Sendable (Frame) -> [[UInt8]]) throws {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw Errno.current }
        let peer = FrameSocket(fd: fds[1], peer: "test peer")
        self.peer = peer
        let log = log
        let thread = Thread { [peer] in
            guard let hello = try? peer.receive() else { return }
            var w = BodyWriter()
            w.append(pd_hello_reply(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                                    capabilities: PD_CAP_EVENTS, session: 1, device_count: 0, token: 1))
            try? peer.sendRaw(w.frame(op: PD_REPLY.code, request: hello.request))
            while let frame = try? peer.receive() {
                log.add(frame)
                for bytes in answer(frame) { try? peer.sendRaw(bytes) }
            }
        }
        thread.start()
        client = try ParadiceClient(descriptor: fds[0], endpoint: .unix(path: "socketpair"), name: "test")
    }

    deinit {
        client.disconnect()
        peer.shutdownBoth()
    }

    var requests: [Frame] { log.frames }
}

final class FrameLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [Frame] = []
    func add(_ frame: Frame) { lock.lock(); seen.append(frame); lock.unlock() }
    var frames: [Frame] { lock.lock(); defer { lock.unlock() }; return seen }
}

/// Reply bodies, built as a backend would (or would not).
enum Reply {
    static func done(_ request: UInt32, result: Int64 = 0, regions: [(UInt64, [UInt8])] = [], regionCount: UInt32? = nil,
                     slotCount: UInt32 = 0, mappingCount: UInt32 = 0) -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_reply(result: result, error: 0, reserved: 0))
        w.append(pd_ioctl_done(region_count: regionCount ?? UInt32(regions.count), slot_count: slotCount, flags: 0, mapping_count: mappingCount))
        for (address, bytes) in regions {
            w.append(pd_region(address: address, length: UInt32(bytes.count), reserved: 0))
            w.append(bytes: bytes)
            w.pad()
        }
        return w.frame(op: PD_REPLY.code, request: request)
    }

    static func need(_ request: UInt32, regions: [(UInt64, UInt32)], regionCount: UInt32? = nil, out: [(UInt64, UInt32)] = []) -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_need(region_count: regionCount ?? UInt32(regions.count + out.count), slot_count: 0, flags: 0, mapping_count: 0))
        for (address, length) in regions { w.append(pd_region(address: address, length: length, reserved: 0)) }
        for (address, length) in out { w.append(pd_region(address: address, length: length, reserved: PD_REGION_OUT)) }
        return w.frame(op: PD_NEED.code, request: request)
    }

    static func result(_ request: UInt32, _ result: Int64, data: [UInt8] = []) -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_reply(result: result, error: 0, reserved: 0))
        w.append(bytes: data)
        return w.frame(op: PD_REPLY.code, request: request)
    }

    static func opened(_ request: UInt32, handle: Int64 = 3) -> [UInt8] {
        var w = BodyWriter()
        w.append(pd_reply(result: handle, error: 0, reserved: 0))
        w.append(pd_stat())
        return w.frame(op: PD_REPLY.code, request: request)
    }
}

func ioctlArgument(_ frame: Frame) -> UInt64 {
    var reader = BodyReader(frame.body)
    return (try? reader.read(pd_ioctl.self).argument) ?? 0
}

@Suite("the client's checks of the backend's replies")
struct ClientReplyTests {
    static let command: UInt32 = 0xC008_AB01

    /// The argument is asked for, then written back: the ordinary exchange passes.
    @Test func aReplyWritingWhatItAskedForPasses() throws {
        let backend = try RawBackend { frame in
            var reader = BodyReader(frame.body)
            guard frame.op == PD_IOCTL.code, let request = try? reader.read(pd_ioctl.self) else { return [] }
            if request.region_count == 0 { return [Reply.need(frame.request, regions: [(request.argument, 8)])] }
            return [Reply.done(frame.request, result: 7, regions: [(request.argument, [1, 2, 3, 4, 5, 6, 7, 8])])]
        }
        let file = backend.client.adopt(handle: 3)
        let argument = Buffer(8)
        #expect(try file.ioctl(Self.command, argument.pointer) == 7)
        #expect(argument.bytes == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    /// An out-only argument, never read: the backend names it as written (PD_REGION_OUT), the request
    /// names it back without its bytes, and the reply may write it.
    @Test func aReplyMayWriteAnOutRegionItNamed() throws {
        let backend = try RawBackend { frame in
            var reader = BodyReader(frame.body)
            guard let request = try? reader.read(pd_ioctl.self) else { return [] }
            if request.region_count == 0 { return [Reply.need(frame.request, regions: [], out: [(request.argument, 4)])] }
            return [Reply.done(frame.request, regions: [(request.argument, [9, 9, 9, 9])])]
        }
        let argument = Buffer(4)
        try backend.client.adopt(handle: 3).ioctl(Self.command, argument.pointer)
        #expect(argument.bytes == [9, 9, 9, 9])
        // The named region went back as a name only: no bytes of the program's behind it.
        let last = try #require(backend.requests.last)
        var reader = BodyReader(last.body)
        _ = try reader.read(pd_ioctl.self)
        let named = try reader.read(pd_region.self)
        #expect(named.reserved & PD_REGION_OUT != 0 && named.length == 4 && reader.remaining == 0)
    }

    /// A write at the argument that the backend neither was sent nor named is refused like any other.
    @Test func aReplyWritingAnArgumentItWasNotSentFailsWithEio() throws {
        let backend = try RawBackend { frame in
            [Reply.done(frame.request, regions: [(ioctlArgument(frame), [9, 9, 9, 9])])]
        }
        let argument = Buffer(4)
        #expect(throws: Errno.ioError) { try backend.client.adopt(handle: 3).ioctl(Self.command, argument.pointer) }
        #expect(argument.bytes == [0, 0, 0, 0])
    }

    /// A write to memory the call never handed over (another variable of the program) fails the call with
    /// EIO, and nothing is written: not there, and not the argument either.
    @Test func aReplyWritingElsewhereFailsWithEioAndWritesNothing() throws {
        let victim = Buffer(16)
        let victimAddress = UInt64(UInt(bitPattern: victim.pointer))
        let backend = try RawBackend { frame in
            let argument = ioctlArgument(frame)
            return [Reply.done(frame.request, regions: [(argument, [1, 1, 1, 1]), (victimAddress, [UInt8](repeating: 0xAA, count: 16))])]
        }
        let argument = Buffer(4)
        #expect(throws: Errno.ioError) { try backend.client.adopt(handle: 3).ioctl(Self.command, argument.pointer) }
        #expect(victim.bytes == [UInt8](repeating: 0, count: 16))
        #expect(argument.bytes == [0, 0, 0, 0])
        // Past the end of what was sent: the same.
        let overrun = try RawBackend { frame in
            let argument = ioctlArgument(frame)
            var reader = BodyReader(frame.body)
            guard let request = try? reader.read(pd_ioctl.self) else { return [] }
            if request.region_count == 0 { return [Reply.need(frame.request, regions: [(argument + 8, 4)])] }
            return [Reply.done(frame.request, regions: [(argument + 8, [UInt8](repeating: 0xBB, count: 8))])]
        }
        let sent = Buffer(16)
        #expect(throws: Errno.ioError) { try overrun.client.adopt(handle: 3).ioctl(Self.command, sent.pointer) }
        #expect(sent.bytes == [UInt8](repeating: 0, count: 16))
    }

    /// Counts that the frame cannot hold: EIO, no crash, no allocation sized by them.
    @Test func countsPastTheFrameFailWithEio() throws {
        let hugeDone = try RawBackend { frame in [Reply.done(frame.request, regionCount: .max)] }
        #expect(throws: Errno.ioError) { try hugeDone.client.adopt(handle: 3).ioctl(Self.command, Buffer(8).pointer) }
        let hugeSlots = try RawBackend { frame in [Reply.done(frame.request, slotCount: 1 << 30)] }
        #expect(throws: Errno.ioError) { try hugeSlots.client.adopt(handle: 3).ioctl(Self.command, Buffer(8).pointer) }
        let hugeMappings = try RawBackend { frame in [Reply.done(frame.request, mappingCount: 1 << 30)] }
        #expect(throws: Errno.ioError) { try hugeMappings.client.adopt(handle: 3).ioctl(Self.command, Buffer(8).pointer) }
        let hugeNeed = try RawBackend { frame in [Reply.need(frame.request, regions: [], regionCount: .max)] }
        #expect(throws: Errno.ioError) { try hugeNeed.client.adopt(handle: 3).ioctl(Self.command, Buffer(8).pointer) }
        // One region of 4 GiB: more than any request can carry, refused before anything is read for it.
        let hugeRegion = try RawBackend { frame in [Reply.need(frame.request, regions: [(ioctlArgument(frame), .max)])] }
        #expect(throws: Errno.ioError) { try hugeRegion.client.adopt(handle: 3).ioctl(Self.command, Buffer(8).pointer) }
    }

    /// A backend that asks again and again never converges: the call fails after the cap of rounds.
    @Test func needRoundsThatNeverConvergeFailWithEio() throws {
        let backend = try RawBackend { frame in
            // Each round asks for one more byte of the argument: always something new.
            let round = UInt32(frame.body.count)
            return [Reply.need(frame.request, regions: [(ioctlArgument(frame), min(round, 64))])]
        }
        #expect(throws: Errno.ioError) { try backend.client.adopt(handle: 3).ioctl(Self.command, Buffer(64).pointer) }
        #expect(backend.requests.count == RemoteFile.needRoundLimit + 1)
    }

    /// Reads and writes answered with more than was asked, and opens answered with no handle.
    @Test func readsWritesAndOpensAreBounded() throws {
        let backend = try RawBackend { frame in
            switch frame.op {
            case PD_READ.code: return [Reply.result(frame.request, 64, data: [UInt8](repeating: 7, count: 64))]
            case PD_WRITE.code: return [Reply.result(frame.request, 1000)]
            case PD_OPEN.code: return [Reply.result(frame.request, -5)]
            default: return []
            }
        }
        let file = backend.client.adopt(handle: 3)
        var small = [UInt8](repeating: 0, count: 4)
        #expect(throws: Errno.ioError) { _ = try small.withUnsafeMutableBytes { try file.read(into: $0) } }
        #expect(small == [0, 0, 0, 0])
        #expect(throws: Errno.ioError) { try file.write([1, 2, 3]) }
        #expect(throws: Errno.ioError) { try backend.client.open("/dev/null") }
    }

    /// A reply to a request that is not waiting (never sent, or answered already) is dropped; the
    /// connection goes on.
    @Test func aReplyForNobodyIsDropped() throws {
        let backend = try RawBackend { frame in
            [Reply.result(frame.request &+ 1000, 0), Reply.result(frame.request, 3)]
        }
        let file = backend.client.adopt(handle: 3)
        #expect(try file.write([1, 2, 3]) == 3)
        #expect(try file.write([1, 2, 3]) == 3)
    }
}
