import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// A `foreground` DRM export: only the foreground guest's files are DRM master, so only it sets modes;
/// a background guest's file is dropped from master, and its mode setting then fails as the driver makes
/// it fail for a program of an inactive VT (EACCES).
/// The kernel makes the first opener of a masterless device its master: a background guest's open is
/// dropped again at once. A background file's own SET_MASTER never reaches the driver, which would grant
/// it to the backend (CAP_SYS_ADMIN) whenever no file is master, after the foreground guest's own
/// DROP_MASTER, say: it is answered EACCES, as the driver answers a program that may not be master.
extension DRMPlugin {
    public func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        guard let master = DRMMaster.numbers(file.specs) else { return }
        file.guest.value { DRMBackgroundFiles() }.set(file.descriptor, background: !isForeground)
        // Dropping a file that is not master is EINVAL, and setting one while the device has another
        // master is EBUSY (a second file of the foreground guest): neither changes who is master.
        _ = try? file.ioctl(isForeground ? master.set : master.drop, value: 0)
    }
}

enum DRMMaster {
    /// DRM_IOCTL_SET_MASTER and DRM_IOCTL_DROP_MASTER, from the verified specs.
    static let numbers = SpecDerived { specs throws -> (set: UInt32, drop: UInt32) in
        let l = SpecLayout(specs)
        let numbers = (set: l.command("DRM_IOCTL_SET_MASTER"), drop: l.command("DRM_IOCTL_DROP_MASTER"))
        try l.check()
        return numbers
    }
}

/// One guest's files of foreground DRM exports that are the background's now, by descriptor.
final class DRMBackgroundFiles: @unchecked Sendable {
    private let descriptors = LockedValue(Set<Int32>())

    func set(_ descriptor: Int32, background: Bool) {
        descriptors.withLock { if background { $0.insert(descriptor) } else { $0.remove(descriptor) } }
    }

    func contains(_ descriptor: Int32) -> Bool { descriptors.withLock { $0.contains(descriptor) } }
}

/// What a DRM file of a `foreground` export answers itself: SET_MASTER while it is the background's.
struct DRMForegroundFile {
    let file: DeviceFile
    let background: DRMBackgroundFiles

    init?(_ file: DeviceFile) {
        guard file.sharing == .foreground else { return nil }
        (self.file, background) = (file, file.guest.value { DRMBackgroundFiles() })
    }

    func answer(setMaster call: CallView) -> Result<Int64, Errno>? {
        background.contains(file.descriptor) ? .failure(.permissionDenied) : nil
    }

    /// A SET_MASTER that passed `answer` just before a switch made the file the background's reached the
    /// driver after the switch's drop: drop it again, as a VT switch right after it would.
    func completed(setMaster call: CallView, result: Int64) {
        guard result == 0, background.contains(file.descriptor), let master = DRMMaster.numbers(file.specs) else { return }
        _ = try? file.ioctl(master.drop, value: 0)
    }

    func willClose() { background.set(file.descriptor, background: false) }
}
