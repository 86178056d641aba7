import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import Testing
@testable import V4L2Plugin

let specs: SpecSet = {
    let parts = #filePath.split(separator: "/").dropLast(3)
    return try! SpecSet.load(directory: "/" + parts.joined(separator: "/") + "/Specs")
}()

/// A v4l2_buffer (and planes) in this process's memory, planned as the backend would.
final class Buffer {
    let record = specs.record(named: "v4l2_buffer")!
    let pointer = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 16)
    let planes = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 16)
    init() {
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: 256)
        planes.initializeMemory(as: UInt8.self, repeating: 0, count: 512)
    }
    deinit { pointer.deallocate(); planes.deallocate() }
    func set(_ path: String, _ value: UInt64, in base: UnsafeMutableRawPointer? = nil, record: Record? = nil) {
        var r = record ?? self.record
        var at = 0
        var size = 0
        for part in path.split(separator: ".") {
            let (f, o) = r.field(named: String(part))!
            at += o
            size = f.type.size
            if case .record(let inner) = f.type { r = inner }
        }
        for i in 0..<size { (base ?? pointer).storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))), toByteOffset: at + i, as: UInt8.self) }
    }
    /// The call as planned; with no driver behind it, its answer is what the guest sent.
    func plan(_ name: String) throws -> CallView {
        let command = try specs.ioctl(named: name)!.command(in: specs, parameters: [:])
        return try Planner(specs: specs).plan(command: command, argument: UInt64(UInt(bitPattern: pointer)), className: "v4l2", memory: LocalMemory()).before
    }
}

@Suite("v4l2 plug-in")
struct V4L2PluginTests {
    let state = V4L2Plugin().state(for: DeviceFile(path: "/dev/video0", descriptor: -1, specs: specs))!

    @Test func aCapturedFrameGoesToTheGuestAfterDQBUF() throws {
        let b = Buffer()
        b.set("type", 1)                 // VIDEO_CAPTURE
        b.set("memory", 1)               // MMAP
        b.set("index", 2)
        b.set("m.offset", 0x20_0000)
        b.set("length", 614_400)
        let call = try b.plan("VIDIOC_DQBUF")
        #expect(state.mappedToGuest(after: call, result: 0) == [0x20_0000..<(0x20_0000 + 614_400)])
        #expect(state.mappedToGuest(after: call, result: -1).isEmpty)
        #expect(state.mappedToDevice(before: call).isEmpty)
    }

    @Test func multiplanarBuffersSyncEachPlane() throws {
        let b = Buffer()
        let plane = specs.record(named: "v4l2_plane")!
        b.set("type", 9)                 // VIDEO_CAPTURE_MPLANE
        b.set("memory", 1)
        b.set("length", 2)
        b.set("m.planes", UInt64(UInt(bitPattern: b.planes)))
        b.set("m.mem_offset", 0x1000, in: b.planes, record: plane)
        b.set("length", 100, in: b.planes, record: plane)
        b.set("m.mem_offset", 0x9000, in: b.planes + plane.size, record: plane)
        b.set("length", 50, in: b.planes + plane.size, record: plane)
        let call = try b.plan("VIDIOC_DQBUF")
        #expect(state.mappedToGuest(after: call, result: 0) == [0x1000..<0x1064, 0x9000..<0x9032])
    }

    @Test func anOutputBufferReachesTheDeviceAtQBUF() throws {
        let b = Buffer()
        b.set("type", 2)                 // VIDEO_OUTPUT
        b.set("memory", 1)
        b.set("index", 0)
        b.set("m.offset", 0x4000)
        b.set("length", 4096)
        // QUERYBUF tells where buffer 0 lives; QBUF later names only its index.
        let query = try b.plan("VIDIOC_QUERYBUF")
        state.ioctlCompleted(query, result: 0)
        b.set("m.offset", 0)
        let queue = try b.plan("VIDIOC_QBUF")
        #expect(state.mappedToDevice(before: queue) == [0x4000..<0x5000])
        #expect(state.mappedToGuest(after: queue, result: 0).isEmpty)
    }

    @Test func aUserPointerBufferShowsTheGuestItsOwnAddressAndItsFrame() throws {
        let b = Buffer()
        let guest: UInt64 = 0x7000_0000
        let lent = try #require(state.lend(guestAddress: guest, length: 4096, for: try b.plan("VIDIOC_QBUF")))
        lent.storeBytes(of: 0xdead_beef, as: UInt32.self)
        // The driver's DQBUF answer names the lent buffer, which the guest must never see.
        b.set("type", 1)                 // VIDEO_CAPTURE
        b.set("memory", 2)               // USERPTR
        b.set("m.userptr", UInt64(UInt(bitPattern: lent.baseAddress)))
        b.set("bytesused", 4)
        let answer = try b.plan("VIDIOC_DQBUF")
        let edits = state.edits(after: answer, result: 0)
        let m = specs.offset(of: "m", in: "v4l2_buffer")!
        #expect(edits.values.map { [$0.region, $0.offset] } == [[0, m]] && edits.values.map(\.value) == [guest])
        #expect(edits.guestWrites.map(\.address) == [guest] && edits.guestWrites.map(\.bytes.count) == [4])
        #expect(edits.guestWrites.first.map { $0.bytes.load(as: UInt32.self) } == 0xdead_beef)
        // A failed call, or an output buffer, writes nothing into the guest.
        #expect(state.edits(after: answer, result: -1).isEmpty)
        b.set("type", 2)                 // VIDEO_OUTPUT
        #expect(try state.edits(after: b.plan("VIDIOC_DQBUF"), result: 0).guestWrites.isEmpty)
    }

    @Test func variablesComeFromTheDriverNotFromGuesses() throws {
        // No device behind this state (descriptor -1): no overlay window, so no bitmap; an unknown control
        // holds no pointer (the driver then answers the call itself); unknown names have no value.
        #expect(try state.value(of: "overlay_bitmap_bytes", arguments: []) == 0)
        #expect(try state.value(of: "ctrl_is_ptr", arguments: [0x0098_0900]) == 0)
        #expect(try state.value(of: "no_such_variable", arguments: []) == nil)
    }
}
