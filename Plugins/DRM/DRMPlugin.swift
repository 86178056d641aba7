#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// DRM: what drm.h's spec cannot say. Which mmap'd buffer objects a call reads: a guest's mirror of a
/// dumb buffer reaches the device before the framebuffer made of it is created, shown, flipped to or
/// marked dirty, and before the buffer is exported as a PRIME fd; a new mirror starts with what the
/// buffer holds (one imported from another file, say). Handles, their mmap offsets (MAP_DUMB) and
/// framebuffers are learnt from completed calls. Events, PRIME fds and master state need nothing here:
/// they are the backend's own file's, read, passed and held as a local program's would be (but for a
/// `foreground` export's master: DRMForeground.swift).
public final class DRMPlugin: DevicePlugin {
    public static let name = "drm"
    private let layouts = SpecDerived(DRMLayout.init)
    private let flinkLayouts = SpecDerived(FlinkLayout.init)

    public init() {}

    public func check(_ specs: SpecSet) throws {
        try layouts.check(specs)
        try flinkLayouts.check(specs)
        try DRMMaster.numbers.check(specs)
    }

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        guard let layout = layouts(file.specs), let flink = flinkLayouts(file.specs) else { return nil }
        return DRMFile(layout: layout, names: FlinkNameFile(layout: flink, file: file), foreground: DRMForegroundFile(file))
    }
}

/// The ioctls the plug-in acts on.
enum DRMIoctl: String, CaseIterable, Sendable {
    case mapDumb = "DRM_IOCTL_MODE_MAP_DUMB", destroyDumb = "DRM_IOCTL_MODE_DESTROY_DUMB", gemClose = "DRM_IOCTL_GEM_CLOSE"
    case addFB = "DRM_IOCTL_MODE_ADDFB", addFB2 = "DRM_IOCTL_MODE_ADDFB2", removeFB = "DRM_IOCTL_MODE_RMFB"
    case setCRTC = "DRM_IOCTL_MODE_SETCRTC", pageFlip = "DRM_IOCTL_MODE_PAGE_FLIP", dirtyFB = "DRM_IOCTL_MODE_DIRTYFB"
    case setPlane = "DRM_IOCTL_MODE_SETPLANE", cursor = "DRM_IOCTL_MODE_CURSOR", cursor2 = "DRM_IOCTL_MODE_CURSOR2"
    case primeExport = "DRM_IOCTL_PRIME_HANDLE_TO_FD", atomic = "DRM_IOCTL_MODE_ATOMIC"
    case setMaster = "DRM_IOCTL_SET_MASTER"
}

/// Fields from the verified specs, so that nothing here restates the header.
struct DRMLayout: Sendable {
    let ioctls: IoctlKinds<DRMIoctl>
    let mapDumbHandle, destroyDumbHandle, gemCloseHandle, fbID, fbHandle, fb2ID, fb2Handles: SpecField<UInt32>
    let mapDumbOffset: SpecField<UInt64>
    let crtcFB, pageFlipFB, dirtyFB, planeFB, removeFB: SpecField<UInt32>
    let cursorFlags, cursorHandle, cursor2Flags, cursor2Handle, primeHandle: SpecField<UInt32>
    let atomicValues: SpecField<UInt64>
    let cursorBO: UInt32

    init(_ specs: SpecSet) throws {
        let l = SpecLayout(specs)
        ioctls = IoctlKinds(specs)
        (mapDumbHandle, mapDumbOffset) = (l.field("drm_mode_map_dumb", "handle"), l.field("drm_mode_map_dumb", "offset"))
        (destroyDumbHandle, gemCloseHandle) = (l.field("drm_mode_destroy_dumb", "handle"), l.field("drm_gem_close", "handle"))
        (fbID, fbHandle) = (l.field("drm_mode_fb_cmd", "fb_id"), l.field("drm_mode_fb_cmd", "handle"))
        (fb2ID, fb2Handles) = (l.field("drm_mode_fb_cmd2", "fb_id"), l.field("drm_mode_fb_cmd2", "handles"))
        (crtcFB, pageFlipFB) = (l.field("drm_mode_crtc", "fb_id"), l.field("drm_mode_crtc_page_flip", "fb_id"))
        (dirtyFB, planeFB) = (l.field("drm_mode_fb_dirty_cmd", "fb_id"), l.field("drm_mode_set_plane", "fb_id"))
        removeFB = l.argument(of: "DRM_IOCTL_MODE_RMFB")
        (cursorFlags, cursorHandle) = (l.field("drm_mode_cursor", "flags"), l.field("drm_mode_cursor", "handle"))
        (cursor2Flags, cursor2Handle) = (l.field("drm_mode_cursor2", "flags"), l.field("drm_mode_cursor2", "handle"))
        (primeHandle, atomicValues) = (l.field("drm_prime_handle_export", "handle"), l.field("drm_mode_atomic", "prop_values_ptr"))
        cursorBO = UInt32(l.constant("DRM_MODE_CURSOR_BO"))
        try l.check()
    }
}

final class DRMFile: DeviceFileState, @unchecked Sendable {
    let layout: DRMLayout
    private struct Buffers {
        var offsets: [UInt32: UInt64] = [:]        // GEM handle → its mmap offset (MAP_DUMB)
        var mapped: [UInt64: UInt64] = [:]         // mmap offset → the most the guest mapped there
        var framebuffers: [UInt32: [UInt32]] = [:] // fb id → the handles it is made of
    }

    private let buffers = LockedValue(Buffers())
    /// The guest's own GEM flink names (DRMFlinkNames.swift).
    let names: FlinkNameFile
    /// What a file of a `foreground` export answers itself (DRMForeground.swift); nil on other exports.
    let foreground: DRMForegroundFile?

    init(layout: DRMLayout, names: FlinkNameFile, foreground: DRMForegroundFile?) {
        self.layout = layout
        self.names = names
        self.foreground = foreground
    }

    func refusal(before call: CallView) -> Errno? { names.refusal(before: call) }

    func answer(instead call: CallView) -> Result<Int64, Errno>? {
        layout.ioctls(call) == .setMaster ? foreground?.answer(setMaster: call) : nil
    }

    func willClose() {
        names.willClose()
        foreground?.willClose()
    }

    func value(of name: String, arguments: [Int64]) throws -> Int64? { nil }

    private func u32(_ call: CallView, _ field: SpecField<UInt32>, index: Int = 0) -> UInt32 {
        call.load(field, index: index) ?? 0
    }

    func ioctlCompleted(_ call: CallView, result: Int64) {
        names.completed(call, result: result)
        guard result >= 0 else { return }
        switch layout.ioctls(call) {
        case .setMaster?:
            foreground?.completed(setMaster: call, result: result)
        case .mapDumb?:
            guard let offset = call.load(layout.mapDumbOffset) else { return }
            let handle = u32(call, layout.mapDumbHandle)
            buffers.withLock { $0.offsets[handle] = offset }
        case .addFB?:
            let handle = u32(call, layout.fbHandle), fb = u32(call, layout.fbID)
            buffers.withLock { $0.framebuffers[fb] = [handle] }
        case .addFB2?:
            let handles = (0..<layout.fb2Handles.count).map { u32(call, layout.fb2Handles, index: $0) }.filter { $0 != 0 }
            let fb = u32(call, layout.fb2ID)
            buffers.withLock { $0.framebuffers[fb] = handles }
        case .removeFB?:
            let fb = u32(call, layout.removeFB)
            buffers.withLock { _ = $0.framebuffers.removeValue(forKey: fb) }
        case .gemClose?:
            let handle = u32(call, layout.gemCloseHandle)
            buffers.withLock { _ = $0.offsets.removeValue(forKey: handle) }
        case .destroyDumb?:
            let handle = u32(call, layout.destroyDumbHandle)
            buffers.withLock { _ = $0.offsets.removeValue(forKey: handle) }
        default:
            break
        }
    }

    /// The device offsets of the buffers behind these handles, as far as the guest mapped them.
    private func ranges(_ handles: [UInt32]) -> [Range<UInt64>] {
        buffers.withLock { b in
            b.mapped.isEmpty ? [] : handles.compactMap { h in
                guard let offset = b.offsets[h], let length = b.mapped[offset] else { return nil }
                return offset..<(offset + length)
            }
        }
    }

    private func framebuffer(_ call: CallView, _ field: SpecField<UInt32>) -> [Range<UInt64>] {
        let fb = u32(call, field)
        return ranges(buffers.withLock { $0.framebuffers[fb] ?? [] })
    }

    func mappedToDevice(before call: CallView) -> [Range<UInt64>] {
        switch layout.ioctls(call) {
        case .addFB?: return ranges([u32(call, layout.fbHandle)])
        case .addFB2?: return ranges((0..<layout.fb2Handles.count).map { u32(call, layout.fb2Handles, index: $0) })
        case .setCRTC?: return framebuffer(call, layout.crtcFB)
        case .pageFlip?: return framebuffer(call, layout.pageFlipFB)
        case .dirtyFB?: return framebuffer(call, layout.dirtyFB)
        case .setPlane?: return framebuffer(call, layout.planeFB)
        case .cursor?:
            return u32(call, layout.cursorFlags) & layout.cursorBO != 0 ? ranges([u32(call, layout.cursorHandle)]) : []
        case .cursor2?:
            return u32(call, layout.cursor2Flags) & layout.cursorBO != 0 ? ranges([u32(call, layout.cursor2Handle)]) : []
        case .primeExport?: return ranges([u32(call, layout.primeHandle)])
        case .atomic?:
            // Which values are FB_IDs depends on property ids the spec cannot know: any value that names
            // one of this file's framebuffers is taken for one (at worst a buffer is synced early).
            guard let target = call.target(ofPointerAt: layout.atomicValues.offset) else { return [] }
            let values = call.bytes[target].withUnsafeBytes { raw in
                (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
            }
            let handles = buffers.withLock { b in values.compactMap { $0 <= UInt64(UInt32.max) ? b.framebuffers[UInt32($0)] : nil }.flatMap { $0 } }
            return ranges(handles)
        default:
            return []
        }
    }

    /// Every DRM mapping is a buffer object's: a new mirror starts with its contents. The length tells how
    /// much of the object the guest can have written, for the sync points above.
    func mappedToGuest(mapping range: Range<UInt64>) -> [Range<UInt64>] {
        buffers.withLock { $0.mapped[range.lowerBound] = max($0.mapped[range.lowerBound] ?? 0, UInt64(range.count)) }
        return [range]
    }
}
