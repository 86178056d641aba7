import ParadiceEngine

/// ALSA: what asound.h's spec cannot say, which is nothing now: alsa.spec remembers a PCM's sizes from
/// HW_PARAMS (`state`, `remember`, `forget`), refuses the mmap of its status and control pages (`mmap
/// refuse`) and says which way SYNC_PTR syncs the data buffer (`path capture`). The plug-in stays
/// registered so that the spec's `plugin alsa` names it.
public final class ALSAPlugin: DevicePlugin {
    public static let name = "alsa"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }
}
