import ParadiceEngine
import ParadicePlan
import ParadiceSpec

/// ALSA: what asound.h's spec cannot say. SYNC_PTR's spec syncs the data buffer, `$capture` says which
/// way: a capture PCM's node name ends in "c". (What a PCM learns from HW_PARAMS is the spec's `state`
/// and `remember`; the refused mmap of its status and control pages, the spec's `mmap refuse`.)
public final class ALSAPlugin: DevicePlugin {
    public static let name = "alsa"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        let name = file.path.split(separator: "/").last ?? ""
        guard name.hasPrefix("pcmC") else { return nil }
        return PCMFile(capture: name.hasSuffix("c"))
    }
}

final class PCMFile: DeviceFileState, Sendable {
    let capture: Bool

    init(capture: Bool) { self.capture = capture }

    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        name == "capture" ? (capture ? 1 : 0) : nil
    }
}
