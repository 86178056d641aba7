#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// ALSA: what asound.h's spec cannot say. A PCM's transfer lengths depend on the frame size negotiated by
/// HW_PARAMS on the same file; SYNC_PTR's spec syncs the data buffer, `$capture` says which way. (The
/// refused mmap of the status and control pages is the spec's `mmap refuse`.)
public final class ALSAPlugin: DevicePlugin {
    public static let name = "alsa"

    private let layouts = SpecDerived(ALSALayout.init)

    public init() {}

    public func check(_ specs: SpecSet) throws { try layouts.check(specs) }

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        let name = file.path.split(separator: "/").last ?? ""
        guard name.hasPrefix("pcmC"), let layout = layouts(file.specs) else { return nil }
        return PCMFile(layout: layout, capture: name.hasSuffix("c"))
    }
}

/// The ioctls the plug-in acts on.
enum ALSAIoctl: String, CaseIterable, Sendable {
    case hwParams = "SNDRV_PCM_IOCTL_HW_PARAMS", hwFree = "SNDRV_PCM_IOCTL_HW_FREE"
}

/// Offsets and numbers from the verified spec.
struct ALSALayout: Sendable {
    let ioctls: IoctlKinds<ALSAIoctl>
    let intervals, intervalSize: Int                          // snd_pcm_hw_params.intervals[]
    let intervalMin: SpecField<UInt32>
    let sampleBits, frameBits, channels: Int                  // indices into intervals[]

    init(_ specs: SpecSet) throws {
        let l = SpecLayout(specs)
        ioctls = IoctlKinds(specs)
        (intervals, intervalSize, intervalMin) = (l.offset("snd_pcm_hw_params", "intervals"), l.size(of: "snd_interval"),
                                                  l.field("snd_interval", "min"))
        let first = l.constant("SNDRV_PCM_HW_PARAM_FIRST_INTERVAL")
        sampleBits = Int(l.constant("SNDRV_PCM_HW_PARAM_SAMPLE_BITS") - first)
        frameBits = Int(l.constant("SNDRV_PCM_HW_PARAM_FRAME_BITS") - first)
        channels = Int(l.constant("SNDRV_PCM_HW_PARAM_CHANNELS") - first)
        try l.check()
    }
}

final class PCMFile: DeviceFileState, @unchecked Sendable {
    let layout: ALSALayout
    let capture: Bool
    /// Bits per frame, per sample, and channels of the HW_PARAMS in force; nil before it or after HW_FREE.
    private let negotiated = LockedValue<(frame: Int64, sample: Int64, channels: Int64)?>(nil)

    init(layout: ALSALayout, capture: Bool) {
        self.layout = layout
        self.capture = capture
    }

    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        if name == "capture" { return capture ? 1 : 0 }
        guard ["frame_bytes", "sample_bytes", "channels"].contains(name) else { return nil }
        // Before HW_PARAMS the driver refuses transfers with EBADFD; so does the plan.
        guard let n = negotiated.withLock({ $0 }) else {
            throw PlanError.rejected(errno: .fileDescriptorInBadState, message: "PCM transfer before HW_PARAMS")
        }
        switch name {
        case "frame_bytes": return (n.frame + 7) / 8   // whole bytes: never less than the driver reads
        case "sample_bytes": return (n.sample + 7) / 8
        default: return n.channels
        }
    }

    func ioctlCompleted(_ call: CallView, result: Int64) {
        switch layout.ioctls(call) {
        case .hwParams?:
            // The driver leaves one value in each interval; a failed HW_PARAMS leaves the stream unset.
            func interval(_ index: Int) -> Int64? {
                call.load(UInt32.self, at: layout.intervals + index * layout.intervalSize + layout.intervalMin.offset).map(Int64.init)
            }
            var found: (Int64, Int64, Int64)?
            if result >= 0, let f = interval(layout.frameBits), let s = interval(layout.sampleBits),
               let c = interval(layout.channels), f > 0, s > 0, c > 0 {
                found = (f, s, c)
            }
            negotiated.withLock { $0 = found }
        case .hwFree? where result >= 0:
            negotiated.withLock { $0 = nil }
        default:
            break
        }
    }
}
