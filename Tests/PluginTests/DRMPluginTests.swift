@testable import DRMPlugin
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import Testing

/// A DRM ioctl's argument in this process's memory, planned as the backend would: `fields` are (path,
/// value, width) in `record`, or the bare integer the ioctl takes when `record` is nil.
func drm(_ ioctl: String, _ record: String?, _ fields: [(String, UInt64, Int)]) throws -> CallView {
    var bytes = [UInt8](repeating: 0, count: record.map { specs.record(named: $0)!.size } ?? 4)
    for (path, value, width) in fields {
        let at = record.map { specs.offset(of: path, in: $0)! } ?? 0
        for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
    let command = try specs.ioctl(named: ioctl)!.command(in: specs, parameters: [:])
    return try bytes.withUnsafeMutableBytes { raw in
        try Planner(specs: specs).plan(command: command, argument: UInt64(UInt(bitPattern: raw.baseAddress)), className: "drm",
                                       memory: LocalMemory()).before
    }
}

@Suite("drm plug-in")
struct DRMPluginTests {
    let state = DRMPlugin().state(for: DeviceFile(path: "/dev/dri/card0", descriptor: -1, specs: specs))!

    @Test func aMappedDumbBufferReachesTheDeviceWhileItsFramebufferLives() throws {
        let buffer: Range<UInt64> = 0x10_0000..<0x10_4000
        state.ioctlCompleted(try drm("DRM_IOCTL_MODE_MAP_DUMB", "drm_mode_map_dumb", [("handle", 5, 4), ("offset", buffer.lowerBound, 8)]),
                             result: 0)
        #expect(state.mappedToGuest(mapping: buffer) == [buffer])
        let addFB = try drm("DRM_IOCTL_MODE_ADDFB", "drm_mode_fb_cmd", [("handle", 5, 4), ("fb_id", 7, 4)])
        #expect(state.mappedToDevice(before: addFB) == [buffer])
        state.ioctlCompleted(addFB, result: 0)
        let show = try drm("DRM_IOCTL_MODE_SETCRTC", "drm_mode_crtc", [("fb_id", 7, 4)])
        #expect(state.mappedToDevice(before: show) == [buffer])
        #expect(state.mappedToDevice(before: try drm("DRM_IOCTL_MODE_SETCRTC", "drm_mode_crtc", [("fb_id", 8, 4)])).isEmpty)
        // RMFB's argument is the framebuffer id itself; once removed, showing it syncs nothing.
        state.ioctlCompleted(try drm("DRM_IOCTL_MODE_RMFB", nil, [("", 7, 4)]), result: 0)
        #expect(state.mappedToDevice(before: show).isEmpty)
    }
}
