import ParadiceEngine
import ParadiceSpec

/// A `foreground` DRM export: only the foreground guest's files are DRM master, so only it sets modes;
/// a background guest's file is dropped from master, and its mode setting and SET_MASTER then fail as
/// the driver makes them fail for a program of an inactive VT (EACCES, EBUSY while the foreground holds it).
/// The kernel makes the first opener of a masterless device its master: a background guest's open is
/// dropped again at once.
extension DRMPlugin {
    public func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        guard let master = DRMMaster.numbers(file.specs) else { return }
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
