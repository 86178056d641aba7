import ALSAPlugin
@testable import DRMPlugin
import EvdevPlugin
@testable import KVMPlugin
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import Testing
@testable import V4L2Plugin

/// A plug-in names the ioctls it acts on; a name the specs do not have would make it silently do nothing.
@Test func everyIoctlAPluginActsOnIsInTheSpecs() {
    func missing<Kind: RawRepresentable & CaseIterable>(_: Kind.Type) -> [String] where Kind.RawValue == String {
        Kind.allCases.map(\.rawValue).filter { specs.ioctl(named: $0) == nil }
    }
    #expect(missing(DRMIoctl.self) == [])
    #expect(missing(FlinkIoctl.self) == [])
    #expect(missing(V4L2Ioctl.self) == [])
}

/// Plug-ins build their layouts once, for every file of the backend.
@Test func aPluginsLayoutIsMadeOnce() {
    var made = 0
    let derived = SpecDerived<Int> { _ in made += 1; return made }
    #expect(derived(specs) == 1 && derived(specs) == 1 && made == 1)
}

/// Every plug-in's fields, constants and ioctl numbers resolve in the repository's specs: a renamed spec
/// field would otherwise stop the backend at its start (and, before that check, silently disable the plug-in).
@Test func everyPluginsLayoutResolves() throws {
    let plugins: [any DevicePlugin] = [ALSAPlugin(), DRMPlugin(), V4L2Plugin(), KVMPlugin(), EvdevPlugin()]
    for plugin in plugins { try plugin.check(specs) }
    #expect(DRMPlugin().state(for: DeviceFile(path: "/dev/dri/card0", descriptor: -1, specs: specs)) != nil)
}

/// A layout names what is missing, all of it, and a field read with the wrong width is missing too.
@Test func aLayoutThatDoesNotResolveSaysWhy() throws {
    let layout = SpecLayout(specs)
    let good: SpecField<UInt32> = layout.field("v4l2_buffer", "memory")
    let handles: SpecField<UInt32> = layout.field("drm_mode_fb_cmd2", "handles")
    #expect(layout.problems.isEmpty && handles.count == 4 && good.offset == specs.offset(of: "memory", in: "v4l2_buffer"))
    let _: SpecField<UInt32> = layout.field("v4l2_buffer", "no_such_field")
    let _: SpecField<UInt16> = layout.field("v4l2_buffer", "memory")
    let _: SpecField<UInt64> = layout.argument(of: "DRM_IOCTL_MODE_RMFB")
    _ = layout.constant("NO_SUCH_CONSTANT")
    _ = layout.command("NO_SUCH_IOCTL")
    let error = try #require(throws: SpecLayoutError.self) { try layout.check() }
    #expect(error.problems.count == 5)
    #expect(error.description.contains("v4l2_buffer.no_such_field") && error.description.contains("NO_SUCH_CONSTANT"))
}
