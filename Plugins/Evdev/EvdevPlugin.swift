import ParadiceEngine
import ParadicePlan

/// evdev: what input.h's spec cannot say.
public final class EvdevPlugin: DevicePlugin {
    public static let name = "evdev"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }
}
