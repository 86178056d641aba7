#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec

/// DRM: what drm.h's spec cannot say. Which mmap'd buffer objects a call reads: a guest's mirror of a
/// dumb buffer reaches the device before the framebuffer made of it is created, shown, flipped to or
/// marked dirty, and before the buffer is exported as a PRIME fd; a new mirror starts with what the
/// buffer holds (one imported from another file, say). Handles, their mmap offsets (MAP_DUMB) and
/// framebuffers are learnt from completed calls. Events, PRIME fds and master state need nothing here:
/// they are the backend's own file's, read, passed and held as a local program's would be.
public final class DRMPlugin: DevicePlugin {
    public static let name = "drm"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        guard let layout = DRMLayout(file.specs) else { return nil }
        return DRMFile(layout: layout)
    }
}

/// Field offsets from the verified specs, so that nothing here restates the header.
struct DRMLayout {
    let offsets: [String: Int]
    let cursorBO: UInt32

    private static let needed = [
        "drm_mode_map_dumb.handle", "drm_mode_map_dumb.offset", "drm_mode_destroy_dumb.handle", "drm_gem_close.handle",
        "drm_mode_fb_cmd.fb_id", "drm_mode_fb_cmd.handle", "drm_mode_fb_cmd2.fb_id", "drm_mode_fb_cmd2.handles",
        "drm_mode_crtc.fb_id", "drm_mode_crtc_page_flip.fb_id", "drm_mode_fb_dirty_cmd.fb_id", "drm_mode_set_plane.fb_id",
        "drm_mode_cursor.flags", "drm_mode_cursor.handle", "drm_mode_cursor2.flags", "drm_mode_cursor2.handle",
        "drm_prime_handle_export.handle", "drm_mode_atomic.prop_values_ptr",
    ]

    init?(_ specs: SpecSet) {
        var offsets: [String: Int] = [:]
        for name in Self.needed {
            let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
            guard let found = specs.offset(of: parts[1], in: parts[0]) else { return nil }
            offsets[name] = found
        }
        guard let bo = try? specs.constantValue("DRM_MODE_CURSOR_BO") else { return nil }
        self.offsets = offsets
        cursorBO = UInt32(bo)
    }

    subscript(_ name: String) -> Int { offsets[name]! }
}

final class DRMFile: DeviceFileState, @unchecked Sendable {
    let layout: DRMLayout
    private let lock = Lock()
    private var offsets: [UInt32: UInt64] = [:]        // GEM handle → its mmap offset (MAP_DUMB)
    private var mapped: [UInt64: UInt64] = [:]         // mmap offset → the most the guest mapped there
    private var framebuffers: [UInt32: [UInt32]] = [:] // fb id → the handles it is made of

    init(layout: DRMLayout) {
        self.layout = layout
    }

    private func locked<T>(_ body: () -> T) -> T { lock.withLock(body) }

    func value(of name: String, arguments: [Int64]) throws -> Int64? { nil }

    private func u32(_ call: PlannedCall, _ field: String, index: Int = 0) -> UInt32 {
        call.load(UInt32.self, at: layout[field] + 4 * index) ?? 0
    }

    func ioctlCompleted(_ call: PlannedCall, result: Int64) {
        guard result >= 0 else { return }
        switch call.ioctl.name {
        case "DRM_IOCTL_MODE_MAP_DUMB":
            guard let offset = call.load(UInt64.self, at: layout["drm_mode_map_dumb.offset"]) else { return }
            let handle = u32(call, "drm_mode_map_dumb.handle")
            locked { offsets[handle] = offset }
        case "DRM_IOCTL_MODE_ADDFB":
            let handle = u32(call, "drm_mode_fb_cmd.handle"), fb = u32(call, "drm_mode_fb_cmd.fb_id")
            locked { framebuffers[fb] = [handle] }
        case "DRM_IOCTL_MODE_ADDFB2":
            let handles = (0..<4).map { u32(call, "drm_mode_fb_cmd2.handles", index: $0) }.filter { $0 != 0 }
            let fb = u32(call, "drm_mode_fb_cmd2.fb_id")
            locked { framebuffers[fb] = handles }
        case "DRM_IOCTL_MODE_RMFB":
            let fb = call.load(UInt32.self, at: 0) ?? 0
            locked { _ = framebuffers.removeValue(forKey: fb) }
        case "DRM_IOCTL_GEM_CLOSE", "DRM_IOCTL_MODE_DESTROY_DUMB":
            let handle = u32(call, call.ioctl.name == "DRM_IOCTL_GEM_CLOSE" ? "drm_gem_close.handle" : "drm_mode_destroy_dumb.handle")
            locked { _ = offsets.removeValue(forKey: handle) }
        default:
            break
        }
    }

    /// The device offsets of the buffers behind these handles, as far as the guest mapped them.
    private func ranges(_ handles: [UInt32]) -> [Range<UInt64>] {
        locked {
            handles.compactMap { h in
                guard let offset = offsets[h], let length = mapped[offset] else { return nil }
                return offset..<(offset + length)
            }
        }
    }

    private func framebuffer(_ call: PlannedCall, _ field: String) -> [Range<UInt64>] {
        let fb = u32(call, field)
        return ranges(locked { framebuffers[fb] ?? [] })
    }

    func mappedToDevice(before call: PlannedCall) -> [Range<UInt64>] {
        switch call.ioctl.name {
        case "DRM_IOCTL_MODE_ADDFB": return ranges([u32(call, "drm_mode_fb_cmd.handle")])
        case "DRM_IOCTL_MODE_ADDFB2": return ranges((0..<4).map { u32(call, "drm_mode_fb_cmd2.handles", index: $0) })
        case "DRM_IOCTL_MODE_SETCRTC": return framebuffer(call, "drm_mode_crtc.fb_id")
        case "DRM_IOCTL_MODE_PAGE_FLIP": return framebuffer(call, "drm_mode_crtc_page_flip.fb_id")
        case "DRM_IOCTL_MODE_DIRTYFB": return framebuffer(call, "drm_mode_fb_dirty_cmd.fb_id")
        case "DRM_IOCTL_MODE_SETPLANE": return framebuffer(call, "drm_mode_set_plane.fb_id")
        case "DRM_IOCTL_MODE_CURSOR", "DRM_IOCTL_MODE_CURSOR2":
            let record = call.ioctl.name == "DRM_IOCTL_MODE_CURSOR" ? "drm_mode_cursor" : "drm_mode_cursor2"
            guard u32(call, record + ".flags") & layout.cursorBO != 0 else { return [] }
            return ranges([u32(call, record + ".handle")])
        case "DRM_IOCTL_PRIME_HANDLE_TO_FD": return ranges([u32(call, "drm_prime_handle_export.handle")])
        case "DRM_IOCTL_MODE_ATOMIC":
            // Which values are FB_IDs depends on property ids the spec cannot know: any value that names
            // one of this file's framebuffers is taken for one (at worst a buffer is synced early).
            guard let slot = call.plan.pointers.first(where: { $0.region == 0 && $0.offset == layout["drm_mode_atomic.prop_values_ptr"] }),
                  slot.target < call.buffers.count else { return [] }
            let values = call.buffers[slot.target].withUnsafeBytes { raw in
                (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
            }
            let handles = locked { values.compactMap { $0 <= UInt64(UInt32.max) ? framebuffers[UInt32($0)] : nil }.flatMap { $0 } }
            return ranges(handles)
        default:
            return []
        }
    }

    /// Every DRM mapping is a buffer object's: a new mirror starts with its contents. The length tells how
    /// much of the object the guest can have written, for the sync points above.
    func mappedToGuest(mapping range: Range<UInt64>) -> [Range<UInt64>] {
        locked { mapped[range.lowerBound] = max(mapped[range.lowerBound] ?? 0, UInt64(range.count)) }
        return [range]
    }
}
