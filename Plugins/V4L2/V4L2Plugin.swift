#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceEngine
import ParadicePlan
import ParadiceSpec

/// V4L2: what videodev2.h's specs cannot say. Whether a control's value is a pointer (asked of the
/// driver), how many pads and links a media entity has, and when mmap'd buffers change hands: a capture
/// buffer's frame reaches the guest's mirror after DQBUF; an output buffer reaches the device at QBUF.
public final class V4L2Plugin: DevicePlugin {
    public static let name = "v4l2"

    private let layouts = SpecDerived(V4L2Layout.init)

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        guard let layout = layouts(file.specs) else { return nil }
        return V4L2File(file: file, layout: layout)
    }
}

/// The ioctls the plug-in acts on.
enum V4L2Ioctl: String, CaseIterable, Sendable {
    case requestBuffers = "VIDIOC_REQBUFS", queryBuffer = "VIDIOC_QUERYBUF", queue = "VIDIOC_QBUF"
    case dequeue = "VIDIOC_DQBUF", prepare = "VIDIOC_PREPARE_BUF"
}

/// Offsets and numbers from the verified specs, so that nothing here restates the header.
struct V4L2Layout: Sendable {
    let ioctls: IoctlKinds<V4L2Ioctl>
    let type, index, memory, length, m, bytesUsed: Int        // in struct v4l2_buffer
    let planeSize, planeLength, planeOffset, planeBytesUsed: Int   // in struct v4l2_plane (m.mem_offset)
    let queryExtCtrl: UInt32, queryExtCtrlSize, controlID, controlFlags: Int
    let hasPayload: Int64, memoryMMAP: Int64, memoryUserPointer: Int64
    let enumEntities: UInt32, entitySize, entityID, entityPads, entityLinks: Int
    let getFormat: UInt32, formatSize, formatType, windowWidth, windowHeight, windowClips, windowClipCount, windowBitmap: Int

    init?(_ specs: SpecSet) {
        func offset(_ record: String, _ field: String) -> Int? { specs.offset(of: field, in: record) }
        func number(_ name: String) -> UInt32? { try? specs.ioctl(named: name)?.command(in: specs, parameters: [:]) }
        guard let type = offset("v4l2_buffer", "type"), let index = offset("v4l2_buffer", "index"),
              let memory = offset("v4l2_buffer", "memory"), let length = offset("v4l2_buffer", "length"),
              let m = offset("v4l2_buffer", "m"), let bytesUsed = offset("v4l2_buffer", "bytesused"),
              let planeBytesUsed = offset("v4l2_plane", "bytesused"),
              let userPointer = try? specs.constantValue("V4L2_MEMORY_USERPTR"),
              let plane = specs.record(named: "v4l2_plane"), let planeLength = offset("v4l2_plane", "length"),
              let planeOffset = offset("v4l2_plane", "m.mem_offset"),
              let query = number("VIDIOC_QUERY_EXT_CTRL"), let queryRecord = specs.record(named: "v4l2_query_ext_ctrl"),
              let controlID = offset("v4l2_query_ext_ctrl", "id"), let controlFlags = offset("v4l2_query_ext_ctrl", "flags"),
              let hasPayload = try? specs.constantValue("V4L2_CTRL_FLAG_HAS_PAYLOAD"),
              let mmap = try? specs.constantValue("V4L2_MEMORY_MMAP"),
              let enumEntities = number("MEDIA_IOC_ENUM_ENTITIES"), let entity = specs.record(named: "media_entity_desc"),
              let entityID = offset("media_entity_desc", "id"), let pads = offset("media_entity_desc", "pads"),
              let links = offset("media_entity_desc", "links"),
              let getFormat = number("VIDIOC_G_FMT"), let format = specs.record(named: "v4l2_format_get"),
              let formatType = offset("v4l2_format_get", "type"),
              let width = offset("v4l2_format_get", "fmt.win.w.width"), let height = offset("v4l2_format_get", "fmt.win.w.height"),
              let clips = offset("v4l2_format_get", "fmt.win.clips"), let clipCount = offset("v4l2_format_get", "fmt.win.clipcount"),
              let bitmap = offset("v4l2_format_get", "fmt.win.bitmap")
        else { return nil }
        ioctls = IoctlKinds(specs)
        (self.getFormat, formatSize, self.formatType, windowWidth, windowHeight) = (getFormat, format.size, formatType, width, height)
        (windowClips, windowClipCount, windowBitmap) = (clips, clipCount, bitmap)
        (self.type, self.index, self.memory, self.length, self.m, self.bytesUsed) = (type, index, memory, length, m, bytesUsed)
        (planeSize, self.planeLength, self.planeOffset, self.planeBytesUsed) = (plane.size, planeLength, planeOffset, planeBytesUsed)
        memoryUserPointer = userPointer
        (queryExtCtrl, queryExtCtrlSize, self.controlID, self.controlFlags) = (query, queryRecord.size, controlID, controlFlags)
        (self.hasPayload, memoryMMAP) = (hasPayload, mmap)
        (self.enumEntities, entitySize, self.entityID, entityPads, entityLinks) = (enumEntities, entity.size, entityID, pads, links)
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

    /// Capture and output buffer types (videodev2.h's enum v4l2_buf_type), and the multi-planar ones.
    private static let capture: Set<UInt32> = [1, 4, 6, 9, 11, 13]
    private static let output: Set<UInt32> = [2, 5, 7, 8, 10, 12, 14]
    private static let multiplanar: Set<UInt32> = [9, 10]

    init(file: DeviceFile, layout: V4L2Layout) {
        self.file = file
        self.layout = layout
    }

    deinit {
        for b in lent.values { munmap(b.baseAddress, b.count) }
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
        let r = format.withUnsafeMutableBytes { raw -> Int in
            raw.storeBytes(of: UInt32(3), toByteOffset: layout.formatType, as: UInt32.self)   // VIDEO_OVERLAY
            return paradice_ioctl(file.descriptor, UInt(layout.getFormat), UInt(bitPattern: raw.baseAddress))
        }
        guard r == 0 else { return 0 }
        return format.withUnsafeBytes { raw in
            let width = Int64(raw.loadUnaligned(fromByteOffset: layout.windowWidth, as: UInt32.self))
            let height = Int64(raw.loadUnaligned(fromByteOffset: layout.windowHeight, as: UInt32.self))
            return (width + 7) / 8 * height
        }
    }

    /// VIDIOC_QUERY_EXT_CTRL, asked of the driver once per control.
    private func controlIsPointer(_ id: UInt32) throws -> Bool {
        if let known = locked({ pointerControls[id] }) { return known }
        var query = [UInt8](repeating: 0, count: layout.queryExtCtrlSize)
        let r = query.withUnsafeMutableBytes { raw -> Int in
            raw.storeBytes(of: id, toByteOffset: layout.controlID, as: UInt32.self)
            return paradice_ioctl(file.descriptor, UInt(layout.queryExtCtrl), UInt(bitPattern: raw.baseAddress))
        }
        // A control the driver does not know holds no pointer: the driver itself then answers the call
        // (and sets error_idx, which v4l2-compliance checks).
        guard r == 0 else { return false }
        let flags = query.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: layout.controlFlags, as: UInt32.self) }
        let pointer = Int64(flags) & layout.hasPayload != 0
        locked { pointerControls[id] = pointer }
        return pointer
    }

    /// MEDIA_IOC_ENUM_ENTITIES for one entity: its pad or link count.
    private func entityCount(_ entity: UInt32, links: Bool) throws -> Int64 {
        var desc = [UInt8](repeating: 0, count: layout.entitySize)
        let r = desc.withUnsafeMutableBytes { raw -> Int in
            raw.storeBytes(of: entity, toByteOffset: layout.entityID, as: UInt32.self)
            return paradice_ioctl(file.descriptor, UInt(layout.enumEntities), UInt(bitPattern: raw.baseAddress))
        }
        guard r == 0 else { throw PlanError.rejected(errno: errno, message: "media entity \(entity) is unknown to the driver") }
        return desc.withUnsafeBytes { Int64($0.loadUnaligned(fromByteOffset: links ? layout.entityLinks : layout.entityPads, as: UInt16.self)) }
    }

    // MARK: mmap'd buffers changing hands

    private func field(_ call: CallView, _ offset: Int) -> UInt32 { call.load(UInt32.self, at: offset) ?? 0 }

    private func key(_ type: UInt32, _ index: UInt32) -> UInt64 { UInt64(type) << 32 | UInt64(index) }

    /// The device offsets of the buffer a v4l2_buffer argument describes, as the driver filled it in.
    private func ranges(of call: CallView) -> [Range<UInt64>] {
        guard Int64(field(call, layout.memory)) == layout.memoryMMAP else { return [] }
        let type = field(call, layout.type)
        if Self.multiplanar.contains(type) {
            guard let planes = planes(of: call) else { return [] }
            return (0..<planes.count).map { i in
                let base = i * layout.planeSize
                let offset = UInt64(call.load(UInt32.self, at: base + layout.planeOffset, region: planes.region) ?? 0)
                let length = UInt64(call.load(UInt32.self, at: base + layout.planeLength, region: planes.region) ?? 0)
                return offset..<(offset + length)
            }
        }
        let offset = UInt64(field(call, layout.m)), length = UInt64(field(call, layout.length))
        return [offset..<(offset + length)]
    }

    /// A multi-planar buffer's planes: m.planes points at their region (the pointer slot at m says which).
    private func planes(of call: CallView) -> (region: Int, count: Int)? {
        guard let target = call.target(ofPointerAt: layout.m) else { return nil }
        return (target, min(Int(field(call, layout.length)), call.bytes[target].count / layout.planeSize))
    }

    func ioctlCompleted(_ call: CallView, result: Int64) {
        guard result >= 0, let ioctl = layout.ioctls(call) else { return }
        if ioctl == .requestBuffers { return releaseLent() }
        if Int64(field(call, layout.memory)) == layout.memoryUserPointer { return }
        let found = ranges(of: call)
        guard !found.isEmpty else { return }
        let k = key(field(call, layout.type), field(call, layout.index))
        locked { buffers[k] = found }
    }

    func mappedToDevice(before call: CallView) -> [Range<UInt64>] {
        let kind = layout.ioctls(call)
        guard kind == .queue || kind == .prepare,
              Self.output.contains(field(call, layout.type)), Int64(field(call, layout.memory)) == layout.memoryMMAP
        else { return [] }
        let k = key(field(call, layout.type), field(call, layout.index))
        return locked { buffers[k] ?? [] }
    }

    func mappedToGuest(after call: CallView, result: Int64) -> [Range<UInt64>] {
        guard result >= 0, layout.ioctls(call) == .dequeue, Self.capture.contains(field(call, layout.type)) else { return [] }
        return ranges(of: call)
    }

    // MARK: USERPTR buffers

    /// The driver keeps a USERPTR buffer from QBUF to DQBUF: it gets memory of the backend's own, one
    /// mapping per guest buffer, kept until the next REQBUFS (which lets go of every buffer) or the close.
    /// Unmapping one the driver still holds is safe: the pages it pinned stay its own until it lets go.
    func lend(guestAddress: UInt64, length: Int, for call: CallView) -> UnsafeMutableRawBufferPointer? {
        locked {
            if let known = lent[guestAddress], known.count >= length { return known }
            if let smaller = lent.removeValue(forKey: guestAddress) { munmap(smaller.baseAddress, smaller.count) }
            guard lent.count < Self.lentLimit else { return nil }
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let size = (max(length, 1) + page - 1) / page * page
            guard let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  memory != MAP_FAILED else { return nil }
            let buffer = UnsafeMutableRawBufferPointer(start: memory, count: size)
            lent[guestAddress] = buffer
            return buffer
        }
    }

    /// More buffers than any queue holds (VIDEO_MAX_FRAME is 64, per type).
    private static let lentLimit = 256

    private func releaseLent() {
        locked {
            for b in lent.values { munmap(b.baseAddress, b.count) }
            lent.removeAll()
        }
    }

    /// The buffer calls report the address the driver holds, which is the lent memory's (a QBUF of a
    /// prepared buffer with no pointer reports it too): the guest sees its own. After DQBUF of a capture
    /// buffer the frame goes to the guest's buffer.
    func edits(after call: CallView, result: Int64) -> CallEdits {
        guard result >= 0, let ioctl = layout.ioctls(call), ioctl != .requestBuffers,
              Int64(field(call, layout.memory)) == layout.memoryUserPointer else { return CallEdits() }
        let type = field(call, layout.type)
        let captured = layout.ioctls(call) == .dequeue && Self.capture.contains(type)
        var edits = CallEdits()
        // One (region, offset of the address, offset of bytesused) per plane.
        var places: [(region: Int, pointer: Int, used: Int)] = []
        if Self.multiplanar.contains(type) {
            guard let planes = planes(of: call) else { return edits }
            places = (0..<planes.count).map {
                (planes.region, $0 * layout.planeSize + layout.planeOffset, $0 * layout.planeSize + layout.planeBytesUsed)
            }
        } else {
            places = [(0, layout.m, layout.bytesUsed)]
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
