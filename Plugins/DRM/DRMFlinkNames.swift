#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem

// GEM flink names are global in a DRM device, and every guest's files are the one backend's: left alone,
// any guest could GEM_OPEN a name another guest's GEM_FLINK made. Here a guest opens only the names its
// own GEM_FLINK calls returned, on that device; any other name (another guest's, or a local program's
// outside Paradice) gets what the driver answers for a name that does not exist.
//
// A name must never outlive the guest's object in the guest's table: the driver frees a name with the
// last handle of its object and hands it out again (idr, lowest free first), so a remembered name could
// come to stand for another guest's object. Each remembered name is therefore pinned: the backend holds
// a handle of its own on the object (opened by the name, in the flinking file) for as long as the guest
// may open the name, so the driver cannot free or reuse it. The pin goes when the guest has closed every
// handle it is known to hold on the object (GEM_CLOSE, DESTROY_DUMB, the file's close), or when the file
// holding the pin closes; the name is forgotten with it. Handles the guest gets otherwise (a PRIME import
// of its own buffer) are not counted: at worst the name is forgotten early and the guest's GEM_OPEN of it
// gets ENOENT, never another guest's object.

/// The ioctls the flink rule acts on.
enum FlinkIoctl: String, CaseIterable, Sendable {
    case flink = "DRM_IOCTL_GEM_FLINK", open = "DRM_IOCTL_GEM_OPEN", close = "DRM_IOCTL_GEM_CLOSE"
    case destroyDumb = "DRM_IOCTL_MODE_DESTROY_DUMB"
}

struct FlinkLayout: Sendable {
    let ioctls: IoctlKinds<FlinkIoctl>
    let flinkHandle, flinkName, openName, openHandle, closeHandle, destroyHandle: SpecField<UInt32>
    let openCommand, flinkCommand, closeCommand: UInt32
    let openSize, flinkSize, closeSize: Int

    init(_ specs: SpecSet) throws {
        let l = SpecLayout(specs)
        ioctls = IoctlKinds(specs)
        (flinkHandle, flinkName) = (l.field("drm_gem_flink", "handle"), l.field("drm_gem_flink", "name"))
        (openName, openHandle) = (l.field("drm_gem_open", "name"), l.field("drm_gem_open", "handle"))
        (closeHandle, destroyHandle) = (l.field("drm_gem_close", "handle"), l.field("drm_mode_destroy_dumb", "handle"))
        (openCommand, flinkCommand, closeCommand) = (l.command("DRM_IOCTL_GEM_OPEN"), l.command("DRM_IOCTL_GEM_FLINK"),
                                                     l.command("DRM_IOCTL_GEM_CLOSE"))
        (openSize, flinkSize, closeSize) = (l.size(of: "drm_gem_open"), l.size(of: "drm_gem_flink"), l.size(of: "drm_gem_close"))
        try l.check()
    }
}

/// The flink names one guest may open, on every device, with the pin that keeps each one the guest's.
final class GuestFlinkNames: Sendable {
    struct Key: Hashable { let device: UInt64, name: UInt32 }
    struct Holder: Hashable { let file: ObjectIdentifier, handle: UInt32 }
    struct Pinned {
        let file: FlinkNameFile   // the file the pin handle is in; it leaves the table before it closes
        let pin: UInt32
        var holders: Set<Holder>  // the guest's handles on the object, as far as known
    }

    private let names = LockedValue<[Key: Pinned]>([:])

    func mayOpen(_ name: UInt32, on device: UInt64) -> Bool {
        names.withLock { $0[Key(device: device, name: name)] != nil }
    }

    func isPin(_ handle: UInt32, in file: FlinkNameFile) -> Bool {
        names.withLock { $0.values.contains { $0.file === file && $0.pin == handle } }
    }

    /// GEM_FLINK in `file` named the guest's `handle` `name`.
    func named(_ handle: UInt32, _ name: UInt32, in file: FlinkNameFile) {
        let key = Key(device: file.device, name: name), holder = Holder(file: ObjectIdentifier(file), handle: handle)
        names.withLock { names in
            if names[key] != nil {
                names[key]!.holders.insert(holder)
                return
            }
            // The pin is opened by the name, which the guest could free meanwhile; its handle still naming
            // it after the pin is made proves that the pin holds the guest's object.
            guard let pin = file.open(name) else { return }
            guard file.flink(handle) == name else { return file.close(pin) }
            names[key] = Pinned(file: file, pin: pin, holders: [holder])
        }
    }

    /// The guest's GEM_OPEN of `name` in `file` gave it `handle`.
    func opened(_ name: UInt32, _ handle: UInt32, in file: FlinkNameFile) {
        names.withLock { _ = $0[Key(device: file.device, name: name)]?.holders.insert(Holder(file: ObjectIdentifier(file), handle: handle)) }
    }

    /// The guest closed `handle` in `file`.
    func closed(_ handle: UInt32, in file: FlinkNameFile) {
        let holder = Holder(file: ObjectIdentifier(file), handle: handle)
        names.withLock { names in
            for (key, pinned) in names where pinned.holders.contains(holder) {
                names[key]!.holders.remove(holder)
                if names[key]!.holders.isEmpty { unpin(key, in: &names) }
            }
        }
    }

    /// `file` is about to close: its handles go, and the names it pins with them.
    func closing(_ file: FlinkNameFile) {
        let id = ObjectIdentifier(file)
        names.withLock { names in
            for (key, pinned) in names {
                if pinned.file === file { names[key] = nil; continue }   // the pin closes with the file
                names[key]!.holders = pinned.holders.filter { $0.file != id }
                if names[key]!.holders.isEmpty { unpin(key, in: &names) }
            }
        }
    }

    private func unpin(_ key: Key, in names: inout [Key: Pinned]) {
        guard let pinned = names.removeValue(forKey: key) else { return }
        pinned.file.close(pinned.pin)
    }
}

/// The flink rule on one open DRM file.
final class FlinkNameFile: Sendable {
    let layout: FlinkLayout
    let file: DeviceFile
    let guest: GuestFlinkNames
    /// Names are per device: the device number of the node.
    let device: UInt64

    init(layout: FlinkLayout, file: DeviceFile) {
        self.layout = layout
        self.file = file
        guest = file.guest.value(GuestFlinkNames.self) { GuestFlinkNames() }
        device = (try? Syscall.fstat(file.descriptor)).map { UInt64($0.st_rdev) } ?? 0
    }

    func refusal(before call: CallView) -> Errno? {
        switch layout.ioctls(call) {
        case .open?:
            // Name 0 is never one: the driver answers it itself.
            let name = call.load(layout.openName) ?? 0
            guard name != 0, !guest.mayOpen(name, on: device) else { return nil }
            // What the driver answers for a name that does not exist on this file (asked with name 0):
            // ENOENT, or the EACCES of a file that may not open names at all.
            var probe = [UInt8](repeating: 0, count: layout.openSize)
            do throws(Errno) { try file.ioctl(layout.openCommand, &probe) } catch { return error }
            close(probe.withUnsafeBytes { layout.openHandle.load(from: $0) } ?? 0)
            return .noSuchFileOrDirectory
        case .close?, .destroyDumb?:
            // A pin is not the guest's handle: the driver's answer for a handle the file does not have.
            let handle = call.load(layoutHandle(call)) ?? 0
            return guest.isPin(handle, in: self) ? .invalidArgument : nil
        default:
            return nil
        }
    }

    private func layoutHandle(_ call: CallView) -> SpecField<UInt32> {
        layout.ioctls(call) == .close ? layout.closeHandle : layout.destroyHandle
    }

    func completed(_ call: CallView, result: Int64) {
        guard result >= 0, let kind = layout.ioctls(call) else { return }
        switch kind {
        case .flink:
            guard let handle = call.load(layout.flinkHandle), let name = call.load(layout.flinkName), name != 0 else { return }
            guest.named(handle, name, in: self)
        case .open:
            guard let name = call.load(layout.openName), let handle = call.load(layout.openHandle) else { return }
            guest.opened(name, handle, in: self)
        case .close, .destroyDumb:
            guard let handle = call.load(layoutHandle(call)) else { return }
            guest.closed(handle, in: self)
        }
    }

    func willClose() { guest.closing(self) }

    // The driver's own calls, on this file.

    func open(_ name: UInt32) -> UInt32? {
        var bytes = [UInt8](repeating: 0, count: layout.openSize)
        bytes.withUnsafeMutableBytes { layout.openName.store(name, into: $0) }
        guard (try? file.ioctl(layout.openCommand, &bytes)) != nil else { return nil }
        return bytes.withUnsafeBytes { layout.openHandle.load(from: $0) }
    }

    func flink(_ handle: UInt32) -> UInt32? {
        var bytes = [UInt8](repeating: 0, count: layout.flinkSize)
        bytes.withUnsafeMutableBytes { layout.flinkHandle.store(handle, into: $0) }
        guard (try? file.ioctl(layout.flinkCommand, &bytes)) != nil else { return nil }
        return bytes.withUnsafeBytes { layout.flinkName.load(from: $0) }
    }

    func close(_ handle: UInt32) {
        guard handle != 0 else { return }
        var bytes = [UInt8](repeating: 0, count: layout.closeSize)
        bytes.withUnsafeMutableBytes { layout.closeHandle.store(handle, into: $0) }
        _ = try? file.ioctl(layout.closeCommand, &bytes)
    }
}
