import ParadiceEngine
import ParadicePlan

/// DRM: what drm.h's spec cannot say.
public final class DRMPlugin: DevicePlugin {
    public static let name = "drm"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }
}
