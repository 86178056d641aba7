import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem

// videobuf2 lets only the file that allocated a queue's buffers (REQBUFS, CREATE_BUFS) queue, dequeue or
// stream them (EBUSY for any other file), but its mmap (vb2_fop_mmap) maps any buffer of the queue for any
// file of the node, by the offset QUERYBUF tells. Every guest's files are the one backend's, so left alone
// a guest could map another guest's frames. Here a file of one guest gets EBUSY, the errno of the queue's
// other calls, for an mmap of a device whose queue a file of another guest owns. Files of one guest map
// as local files do (v4l2-compliance opens a node twice), and so does a file that owns a queue itself (a
// mem2mem node gives every file its own).

/// The guests' files that own a buffer queue of each device, for all of the plug-in's files.
final class V4L2QueueOwners: Sendable {
    /// Weak: a file that is gone owns nothing, even had its close not been seen.
    private struct Owner { weak var file: V4L2File? }
    /// Device number of the node → its owning files.
    private let owners = LockedValue<[UInt64: [Owner]]>([:])

    /// `file` owns a queue of its device, or no longer does.
    func set(_ file: V4L2File, owning: Bool) {
        owners.withLock { owners in
            var list = (owners[file.device] ?? []).filter { $0.file != nil && $0.file !== file }
            if owning { list.append(Owner(file: file)) }
            owners[file.device] = list.isEmpty ? nil : list
        }
    }

    /// Whether `file` may map its device: it owns a queue there, or no file of another guest does.
    func mayMap(_ file: V4L2File) -> Bool {
        owners.withLock { owners in
            let live = (owners[file.device] ?? []).compactMap(\.file)
            return live.contains { $0 === file } || !live.contains { $0.file.guest !== file.file.guest }
        }
    }
}

/// Which buffer types one file has allocated, from its successful REQBUFS and CREATE_BUFS.
struct V4L2QueueUse {
    private(set) var allocated: Set<UInt32> = []

    /// Whether the call changed what the file allocates: REQBUFS with a count allocates (the count the
    /// driver gave), count 0 frees; CREATE_BUFS with a count adds to the queue (count 0 only asks).
    mutating func record(_ call: CallView, _ kind: V4L2Ioctl, layout: V4L2Layout) -> Bool {
        let before = allocated
        switch kind {
        case .requestBuffers:
            guard let type = call.load(layout.requestType), let count = call.load(layout.requestCount) else { return false }
            if count > 0 { allocated.insert(type) } else { allocated.remove(type) }
        case .createBuffers:
            guard let type = call.load(layout.createType), let count = call.load(layout.createCount), count > 0 else { return false }
            allocated.insert(type)
        default:
            return false
        }
        return allocated != before
    }
}
