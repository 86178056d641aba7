#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec

/// ALSA: what asound.h's spec cannot say. A PCM's transfer lengths depend on the frame size negotiated by
/// HW_PARAMS on the same file; the status and control pages are updated by the driver at any time, so a
/// mirror of them would be stale: their mmap is refused as the kernel refuses it for drivers that need
/// explicit pointer syncs (ENXIO), and alsa-lib then uses SYNC_PTR, which the spec forwards. The data
/// buffer may be mirrored: it goes to the device before SYNC_PTR (playback) and back after it (capture).
public final class ALSAPlugin: DevicePlugin {
    public static let name = "alsa"

    private let layouts = SpecDerived(ALSALayout.init)

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        let name = file.path.split(separator: "/").last ?? ""
        guard name.hasPrefix("pcmC"), let layout = layouts(file.specs) else { return nil }
        return PCMFile(layout: layout, capture: name.hasSuffix("c"))
    }
}

/// The ioctls the plug-in acts on.
enum ALSAIoctl: String, CaseIterable, Sendable {
    case hwParams = "SNDRV_PCM_IOCTL_HW_PARAMS", hwFree = "SNDRV_PCM_IOCTL_HW_FREE", syncPointers = "SNDRV_PCM_IOCTL_SYNC_PTR"
}

/// Offsets and numbers from the verified spec.
struct ALSALayout: Sendable {
    let ioctls: IoctlKinds<ALSAIoctl>
    let intervals, intervalSize, intervalMin: Int             // snd_pcm_hw_params.intervals[], snd_interval.min
    let sampleBits, frameBits, channels: Int                  // indices into intervals[]
    let statusOffset: UInt64                                  // the lowest status/control mmap offset

    init?(_ specs: SpecSet) {
        func constant(_ name: String) -> Int64? { try? specs.constantValue(name) }
        guard let params = specs.record(named: "snd_pcm_hw_params"), let intervals = params.field(named: "intervals")?.offset,
              let interval = specs.record(named: "snd_interval"), let min = interval.field(named: "min")?.offset,
              let first = constant("SNDRV_PCM_HW_PARAM_FIRST_INTERVAL"),
              let sampleBits = constant("SNDRV_PCM_HW_PARAM_SAMPLE_BITS"), let frameBits = constant("SNDRV_PCM_HW_PARAM_FRAME_BITS"),
              let channels = constant("SNDRV_PCM_HW_PARAM_CHANNELS")
        else { return nil }
        let pages = ["STATUS_OLD", "CONTROL_OLD", "STATUS_NEW", "CONTROL_NEW"].compactMap { constant("SNDRV_PCM_MMAP_OFFSET_" + $0) }
        guard pages.count == 4 else { return nil }
        ioctls = IoctlKinds(specs)
        (self.intervals, intervalSize, intervalMin) = (intervals, interval.size, min)
        (self.sampleBits, self.frameBits, self.channels) = (Int(sampleBits - first), Int(frameBits - first), Int(channels - first))
        statusOffset = UInt64(pages.min()!)
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
        guard ["frame_bytes", "sample_bytes", "channels"].contains(name) else { return nil }
        // Before HW_PARAMS the driver refuses transfers with EBADFD; so does the plan.
        guard let n = negotiated.withLock({ $0 }) else {
            throw PlanError.rejected(errno: EBADFD, message: "PCM transfer before HW_PARAMS")
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
                call.load(UInt32.self, at: layout.intervals + index * layout.intervalSize + layout.intervalMin).map(Int64.init)
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

    func mayMap(offset: UInt64, length: UInt64) -> Int32? {
        offset >= layout.statusOffset ? ENXIO : nil
    }

    /// alsa-lib moves appl_ptr with SYNC_PTR once the control page is refused: a mirrored playback buffer
    /// reaches the device just before, a capture buffer comes back just after.
    private var data: [Range<UInt64>] { [0..<layout.statusOffset] }

    func mappedToDevice(before call: CallView) -> [Range<UInt64>] {
        !capture && layout.ioctls(call) == .syncPointers ? data : []
    }

    func mappedToGuest(after call: CallView, result: Int64) -> [Range<UInt64>] {
        capture && result >= 0 && layout.ioctls(call) == .syncPointers ? data : []
    }
}
