import ParadiceEngine
import ParadicePlan

/// ALSA: what asound.h's spec cannot say.
public final class ALSAPlugin: DevicePlugin {
    public static let name = "alsa"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }
}
