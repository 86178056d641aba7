#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// V4L2: what videodev2.h's specs cannot say. Whether a control's value is a pointer (asked of the
/// driver), how many pads and links a media entity has, and when mmap'd buffers change hands: a capture
/// buffer's frame reaches the guest's mirror after DQBUF; an output buffer reaches the device at QBUF.
public final class V4L2Plugin: DevicePlugin {
    public static let name = "v4l2"

    private let layouts = SpecDerived(V4L2Layout.init)
    /// Which guests' files own each device's buffer queue (V4L2QueueOwners.swift).
    private let owners = V4L2QueueOwners()

    public init() {}

    public func check(_ specs: SpecSet) throws { try layouts.check(specs) }

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        guard let layout = layouts(file.specs) else { return nil }
        return V4L2File(file: file, layout: layout, owners: owners)
    }
}

/// The ioctls the plug-in acts on.
enum V4L2Ioctl: String, CaseIterable, Sendable {
    case requestBuffers = "VIDIOC_REQBUFS", queryBuffer = "VIDIOC_QUERYBUF", queue = "VIDIOC_QBUF"
    case dequeue = "VIDIOC_DQBUF", prepare = "VIDIOC_PREPARE_BUF", createBuffers = "VIDIOC_CREATE_BUFS"
}

/// Fields, numbers and buffer types from the verified specs, so that nothing here restates the header.
struct V4L2Layout: Sendable {
    let ioctls: IoctlKinds<V4L2Ioctl>
    let type, index, memory, length, m, bytesUsed: SpecField<UInt32>    // in struct v4l2_buffer (m.offset)
    let planeSize: Int, planeLength, planeOffset, planeBytesUsed: SpecField<UInt32>   // struct v4l2_plane (m.mem_offset)
    let userPointer, planeUserPointer: SpecField<UInt64>                               // m.userptr of each
    let requestType, requestCount, createType, createCount: SpecField<UInt32>          // REQBUFS, CREATE_BUFS
    let queryExtCtrl: UInt32, queryExtCtrlSize: Int, controlID, controlFlags: SpecField<UInt32>
    let hasPayload, memoryMMAP, memoryUserPointer: Int64
    let enumEntities: UInt32, entitySize: Int, entityID: SpecField<UInt32>, entityPads, entityLinks: SpecField<UInt16>
    let getFormat: UInt32, formatSize: Int, formatType, windowWidth, windowHeight: SpecField<UInt32>
    /// Capture and output buffer types (enum v4l2_buf_type), the multi-planar ones, and the overlay.
    let capture, output, multiplanar: Set<UInt32>
    let overlay: UInt32

    init(_ specs: SpecSet) throws {
        let l = SpecLayout(specs)
        ioctls = IoctlKinds(specs)
        func buffer(_ name: String) -> SpecField<UInt32> { l.field("v4l2_buffer", name) }
        (type, index, memory, length, m, bytesUsed) = (buffer("type"), buffer("index"), buffer("memory"), buffer("length"),
                                                       buffer("m.offset"), buffer("bytesused"))
        (userPointer, planeUserPointer) = (l.field("v4l2_buffer", "m.userptr"), l.field("v4l2_plane", "m.userptr"))
        planeSize = l.size(of: "v4l2_plane")
        (requestType, requestCount) = (l.field("v4l2_requestbuffers", "type"), l.field("v4l2_requestbuffers", "count"))
        (createType, createCount) = (l.field("v4l2_create_buffers", "format.type"), l.field("v4l2_create_buffers", "count"))
        (planeLength, planeOffset, planeBytesUsed) = (l.field("v4l2_plane", "length"), l.field("v4l2_plane", "m.mem_offset"),
                                                      l.field("v4l2_plane", "bytesused"))
        (queryExtCtrl, queryExtCtrlSize) = (l.command("VIDIOC_QUERY_EXT_CTRL"), l.size(of: "v4l2_query_ext_ctrl"))
        (controlID, controlFlags) = (l.field("v4l2_query_ext_ctrl", "id"), l.field("v4l2_query_ext_ctrl", "flags"))
        hasPayload = l.constant("V4L2_CTRL_FLAG_HAS_PAYLOAD")
        (memoryMMAP, memoryUserPointer) = (l.constant("V4L2_MEMORY_MMAP"), l.constant("V4L2_MEMORY_USERPTR"))
        (enumEntities, entitySize) = (l.command("MEDIA_IOC_ENUM_ENTITIES"), l.size(of: "media_entity_desc"))
        entityID = l.field("media_entity_desc", "id")
        (entityPads, entityLinks) = (l.field("media_entity_desc", "pads"), l.field("media_entity_desc", "links"))
        (getFormat, formatSize, formatType) = (l.command("VIDIOC_G_FMT"), l.size(of: "v4l2_format_get"), l.field("v4l2_format_get", "type"))
        (windowWidth, windowHeight) = (l.field("v4l2_format_get", "fmt.win.w.width"), l.field("v4l2_format_get", "fmt.win.w.height"))
        func types(_ names: String...) -> Set<UInt32> { Set(names.map { UInt32(l.constant("V4L2_BUF_TYPE_" + $0)) }) }
        capture = types("VIDEO_CAPTURE", "VBI_CAPTURE", "SLICED_VBI_CAPTURE", "VIDEO_CAPTURE_MPLANE", "SDR_CAPTURE", "META_CAPTURE")
        output = types("VIDEO_OUTPUT", "VBI_OUTPUT", "SLICED_VBI_OUTPUT", "VIDEO_OUTPUT_OVERLAY", "VIDEO_OUTPUT_MPLANE",
                       "SDR_OUTPUT", "META_OUTPUT")
        multiplanar = types("VIDEO_CAPTURE_MPLANE", "VIDEO_OUTPUT_MPLANE")
        overlay = UInt32(l.constant("V4L2_BUF_TYPE_VIDEO_OVERLAY"))
        try l.check()
    }
}

final class V4L2File: DeviceFileState, @unchecked Sendable {
    let file: DeviceFile
    let layout: V4L2Layout
    private let lock = Lock()
    private var pointerControls: [UInt32: Bool] = [:]
    /// (buffer type, index) → the device offsets of its planes, as the driver reported them.
    private var buffers: [UInt64: [Range<UInt64>]] = [:]
    /// USERPTR buffers: the guest's address → the memory lent to the driver in its place.
    private var lent: [UInt64: UnsafeMutableRawBufferPointer] = [:]
    /// The buffer types this file allocated, which make it an owner of its device's queue.
    private var queues = V4L2QueueUse()
    let owners: V4L2QueueOwners
    /// Queues are per device: the device number of the node.
    let device: UInt64

    init(file: DeviceFile, layout: V4L2Layout, owners: V4L2QueueOwners) {
        self.file = file
        self.layout = layout
        self.owners = owners
        device = (try? Syscall.fstat(file.descriptor)).map { UInt64($0.st_rdev) } ?? 0
    }

    /// An mmap of a device whose queue another guest's file owns: EBUSY, as that queue's other calls get.
    func mayMap(offset: UInt64, length: UInt64) -> Errno? {
        owners.mayMap(self) ? nil : .resourceBusy
    }

    func willClose() { owners.set(self, owning: false) }

    deinit {
        lent.values.forEach(Self.unmap)
    }

    /// Lent memory goes back; a failure (EINVAL for a range never mapped) leaves nothing to do.
    private static func unmap(_ buffer: UnsafeMutableRawBufferPointer) {
        if let base = buffer.baseAddress { try? Syscall.munmap(base, buffer.count) }
    }

    private func locked<T>(_ body: () -> T) -> T { lock.withLock(body) }

    // MARK: variables the specs read

    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        switch name {
        case "ctrl_is_ptr":
            guard let id = arguments.first.map({ UInt32(truncatingIfNeeded: $0) }) else { return nil }
            return try controlIsPointer(id) ? 1 : 0
        case "media_entity_pads", "media_entity_links":
            guard let entity = arguments.first else { return nil }
            return try entityCount(UInt32(truncatingIfNeeded: entity), links: name == "media_entity_links")
        case "overlay_bitmap_bytes":
            return try overlayBitmapBytes()
        default:
            return nil
        }
    }

    /// The overlay bitmap G_FMT writes: one bit per pixel of the window, lines padded to bytes. The window
    /// is asked of the driver with no clips and no bitmap.
    private func overlayBitmapBytes() throws -> Int64 {
        var format = [UInt8](repeating: 0, count: layout.formatSize)
        format.withUnsafeMutableBytes { layout.formatType.store(layout.overlay, into: $0) }
        guard (try? file.ioctl(layout.getFormat, &format)) == 0 else { return 0 }
        return format.withUnsafeBytes { raw in
            let width = Int64(layout.windowWidth.load(from: raw) ?? 0), height = Int64(layout.windowHeight.load(from: raw) ?? 0)
            return (width + 7) / 8 * height
        }
    }

    /// VIDIOC_QUERY_EXT_CTRL, asked of the driver once per control.
    private func controlIsPointer(_ id: UInt32) throws -> Bool {
        if let known = locked({ pointerControls[id] }) { return known }
        var query = [UInt8](repeating: 0, count: layout.queryExtCtrlSize)
        query.withUnsafeMutableBytes { layout.controlID.store(id, into: $0) }
        // A control the driver does not know holds no pointer: the driver itself then answers the call
        // (and sets error_idx, which v4l2-compliance checks).
        guard (try? file.ioctl(layout.queryExtCtrl, &query)) == 0 else { return false }
        let flags = query.withUnsafeBytes { layout.controlFlags.load(from: $0) ?? 0 }
        let pointer = Int64(flags) & layout.hasPayload != 0
        locked { pointerControls[id] = pointer }
        return pointer
    }

    /// MEDIA_IOC_ENUM_ENTITIES for one entity: its pad or link count.
    private func entityCount(_ entity: UInt32, links: Bool) throws -> Int64 {
        var desc = [UInt8](repeating: 0, count: layout.entitySize)
        desc.withUnsafeMutableBytes { layout.entityID.store(entity, into: $0) }
        do { try file.ioctl(layout.enumEntities, &desc) } catch {
            throw PlanError.rejected(errno: error, message: "media entity \(entity) is unknown to the driver")
        }
        return desc.withUnsafeBytes { Int64((links ? layout.entityLinks : layout.entityPads).load(from: $0) ?? 0) }
    }

    // MARK: mmap'd buffers changing hands

    private func field(_ call: CallView, _ field: SpecField<UInt32>) -> UInt32 { call.load(field) ?? 0 }

    private func key(_ type: UInt32, _ index: UInt32) -> UInt64 { UInt64(type) << 32 | UInt64(index) }

    /// The device offsets of the buffer a v4l2_buffer argument describes, as the driver filled it in.
    private func ranges(of call: CallView) -> [Range<UInt64>] {
        guard Int64(field(call, layout.memory)) == layout.memoryMMAP else { return [] }
        let type = field(call, layout.type)
        if layout.multiplanar.contains(type) {
            guard let planes = planes(of: call) else { return [] }
            return (0..<planes.count).map { i in
                let base = i * layout.planeSize
                let offset = UInt64(call.load(UInt32.self, at: base + layout.planeOffset.offset, region: planes.region) ?? 0)
                let length = UInt64(call.load(UInt32.self, at: base + layout.planeLength.offset, region: planes.region) ?? 0)
                return offset..<(offset + length)
            }
        }
        let offset = UInt64(field(call, layout.m)), length = UInt64(field(call, layout.length))
        return [offset..<(offset + length)]
    }

    /// A multi-planar buffer's planes: m.planes points at their region (the pointer slot at m says which).
    private func planes(of call: CallView) -> (region: Int, count: Int)? {
        guard let target = call.target(ofPointerAt: layout.m.offset) else { return nil }
        return (target, min(Int(field(call, layout.length)), call.bytes[target].count / layout.planeSize))
    }

    func ioctlCompleted(_ call: CallView, result: Int64) {
        guard result >= 0, let ioctl = layout.ioctls(call) else { return }
        // Under the file's lock, so that two calls on the file leave the registry as the last one says.
        locked {
            if queues.record(call, ioctl, layout: layout) { owners.set(self, owning: !queues.allocated.isEmpty) }
        }
        if ioctl == .requestBuffers { return releaseLent() }
        if ioctl == .createBuffers { return }
        if Int64(field(call, layout.memory)) == layout.memoryUserPointer { return }
        let found = ranges(of: call)
        guard !found.isEmpty else { return }
        let k = key(field(call, layout.type), field(call, layout.index))
        locked { buffers[k] = found }
    }

    func mappedToDevice(before call: CallView) -> [Range<UInt64>] {
        let kind = layout.ioctls(call)
        guard kind == .queue || kind == .prepare,
              layout.output.contains(field(call, layout.type)), Int64(field(call, layout.memory)) == layout.memoryMMAP
        else { return [] }
        let k = key(field(call, layout.type), field(call, layout.index))
        return locked { buffers[k] ?? [] }
    }

    func mappedToGuest(after call: CallView, result: Int64) -> [Range<UInt64>] {
        guard result >= 0, layout.ioctls(call) == .dequeue, layout.capture.contains(field(call, layout.type)) else { return [] }
        return ranges(of: call)
    }

    // MARK: USERPTR buffers

    /// The driver keeps a USERPTR buffer from QBUF to DQBUF: it gets memory of the backend's own, one
    /// mapping per guest buffer, kept until the next REQBUFS (which lets go of every buffer) or the close.
    /// Unmapping one the driver still holds is safe: the pages it pinned stay its own until it lets go.
    func lend(guestAddress: UInt64, length: Int, for call: CallView) -> UnsafeMutableRawBufferPointer? {
        locked {
            if let known = lent[guestAddress], known.count >= length { return known }
            if let smaller = lent.removeValue(forKey: guestAddress) { Self.unmap(smaller) }
            guard lent.count < Self.lentLimit else { return nil }
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let size = (max(length, 1) + page - 1) / page * page
            guard let memory = try? Syscall.mmap(size, protection: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS, -1, offset: 0)
            else { return nil }
            let buffer = UnsafeMutableRawBufferPointer(start: memory, count: size)
            lent[guestAddress] = buffer
            return buffer
        }
    }

    /// More buffers than any queue holds (VIDEO_MAX_FRAME is 64, per type).
    private static let lentLimit = 256

    private func releaseLent() {
        locked {
            lent.values.forEach(Self.unmap)
            lent.removeAll()
        }
    }

    /// The buffer calls report the address the driver holds, which is the lent memory's (a QBUF of a
    /// prepared buffer with no pointer reports it too): the guest sees its own. After DQBUF of a capture
    /// buffer the frame goes to the guest's buffer.
    func edits(after call: CallView, result: Int64) -> CallEdits {
        guard result >= 0, let ioctl = layout.ioctls(call), ioctl != .requestBuffers, ioctl != .createBuffers,
              Int64(field(call, layout.memory)) == layout.memoryUserPointer else { return CallEdits() }
        let type = field(call, layout.type)
        let captured = layout.ioctls(call) == .dequeue && layout.capture.contains(type)
        var edits = CallEdits()
        // One (region, offset of the address, offset of bytesused) per plane.
        var places: [(region: Int, pointer: Int, used: Int)] = []
        if layout.multiplanar.contains(type) {
            guard let planes = planes(of: call) else { return edits }
            places = (0..<planes.count).map {
                (planes.region, $0 * layout.planeSize + layout.planeUserPointer.offset, $0 * layout.planeSize + layout.planeBytesUsed.offset)
            }
        } else {
            places = [(0, layout.userPointer.offset, layout.bytesUsed.offset)]
        }
        locked {
            for place in places {
                guard let held = call.load(UInt64.self, at: place.pointer, region: place.region),
                      let (guest, buffer) = lent.first(where: { UInt64(UInt(bitPattern: $0.value.baseAddress)) == held }) else { continue }
                edits.values.append((place.region, place.pointer, guest))
                if captured {
                    let used = Int(call.load(UInt32.self, at: place.used, region: place.region) ?? 0)
                    edits.guestWrites.append((guest, UnsafeRawBufferPointer(rebasing: buffer[0..<min(used, buffer.count)])))
                }
            }
        }
        return edits
    }
}
