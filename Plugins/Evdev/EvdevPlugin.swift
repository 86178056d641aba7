#if canImport(Glibc)
import Glibc
#endif
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem
import ParadiceTransport

/// evdev: what input.h's spec cannot say, which turns out to be little the engine does not already do.
/// - Reads and writes in whole input_event units: the backend reads and writes the guest's own open file
///   with the guest's own count, so the driver itself gives EINVAL under one event, rounds down to whole
///   events, and EAGAIN or sleeps on an empty queue (DriverVMEvdevTests checks each against native).
/// - EVIOCGRAB per guest: a grab belongs to the open file, and each guest opens its own; the backend closes
///   a guest's files when it exits or its connection drops, which releases the grab.
/// - A `foreground` export: a background guest's files have an empty event type mask (EVIOCSMASK), so the
///   driver passes them nothing, as a program of an inactive VT under a grabbing display server gets; the
///   foreground guest's files have the masks the guest set, so every one of them receives. Events already
///   queued in a file stay its own: they came while it was the foreground. The guest's own EVIOCGRAB and
///   type mask there never reach the driver as such (ForegroundGrabs).
public final class EvdevPlugin: DevicePlugin {
    public static let name = "evdev"
    private let grab = SpecDerived { specs throws in
        let l = SpecLayout(specs)
        let numbers = ForegroundGrabs.Numbers(grab: l.command("EVIOCGRAB"), setMask: l.command("EVIOCSMASK"))
        try l.check()
        return (numbers: numbers, ioctls: IoctlKinds<EvdevIoctl>(specs))
    }

    public init() {}

    public func check(_ specs: SpecSet) throws { try grab.check(specs) }

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        guard file.sharing == .foreground, let grab = grab(file.specs) else { return nil }
        return ForegroundInputFile(file, ioctls: grab.ioctls, grabs: grabs(file, grab.numbers))
    }

    public func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        guard let grab = grab(file.specs) else { return }
        grabs(file, grab.numbers).foregroundChanged(file, isForeground: isForeground)
    }

    private func grabs(_ file: DeviceFile, _ numbers: ForegroundGrabs.Numbers) -> ForegroundGrabs {
        file.guest.value { ForegroundGrabs(numbers) }
    }
}

enum EvdevIoctl: String, CaseIterable, Sendable {
    case grab = "EVIOCGRAB", revoke = "EVIOCREVOKE", setMask = "EVIOCSMASK", getMask = "EVIOCGMASK"
}

/// One guest's files of `foreground` input exports, per device path:
/// - each file's event type mask: the driver's is empty while the file is a background one, and the guest's
///   own (EVIOCSMASK of type 0, kept here; all types until it sets one) while it is the foreground's. A
///   mask filters per file (evdev.c, __evdev_is_filtered: EV_SYN passes, and a SYN_REPORT with nothing
///   before it is dropped), so every file of the foreground guest receives, and no other guest's;
/// - the guest's grabs: what its own EVIOCGRAB calls hold, kept here and answered as evdev_grab and
///   evdev_ungrab answer (EBUSY while any of the guest's files of the device holds one, EINVAL to release
///   one the file does not hold). While the guest is the foreground, the file holding its grab also holds
///   a real EVIOCGRAB, so that it alone of the guest's files receives, as a local grabbing program is the
///   one served; a background guest's grab never reaches the driver, where it would take the keys.
/// Per guest process tree (GuestScope): another tree of the same principal keeps its own.
final class ForegroundGrabs: @unchecked Sendable {
    struct Numbers: Sendable {
        let grab: UInt32
        let setMask: UInt32
    }
    private struct Device {
        var foreground: [DeviceFile] = []   // the guest's files of the device that are the foreground's
        var backendGrab: Int32?             // the descriptor the backend's EVIOCGRAB is on
        var guestGrab: Int32?               // the descriptor whose guest holds an EVIOCGRAB, as the guest sees it
        var revoked: Set<Int32> = []        // files the guest's EVIOCREVOKE made dead: they receive nothing again
        var typeMasks: [Int32: [UInt8]] = [:]   // the guest's EVIOCSMASK of type 0, per file
        var known: Set<Int32> = []          // files whose mask is set as their standing says
    }
    private let numbers: Numbers
    private let devices = LockedValue<[String: Device]>([:])

    init(_ numbers: Numbers) { self.numbers = numbers }

    /// At the file's open (before the guest can read it) and at each switch.
    func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            let opening = device.known.insert(file.descriptor).inserted
            device.foreground.removeAll { $0.descriptor == file.descriptor }
            if isForeground && !device.revoked.contains(file.descriptor) {
                device.foreground.append(file)
                applyMask(device, file)
            } else {
                if device.backendGrab == file.descriptor {
                    _ = try? file.ioctl(numbers.grab, value: 0)
                    device.backendGrab = nil
                }
                applyMask(device, file)
                // What came between its open and its mask was never a background file's to read.
                if opening { drain(file) }
            }
            settle(&device)
            devices[file.path] = device
        }
    }

    /// The guest's EVIOCGRAB on `file`: any value but 0 grabs, as evdev_ioctl_handler takes it. On a
    /// foreground file the grab must also be the driver's: while another process tree of the guest (or a
    /// program of this machine) holds one, evdev_grab's EBUSY is the guest's answer, as a second local
    /// program's would be.
    func guestGrab(_ file: DeviceFile, _ value: UInt64) -> Result<Int64, Errno> {
        devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            defer { devices[file.path] = device }
            if value != 0 {
                guard device.guestGrab == nil else { return .failure(.resourceBusy) }
                device.guestGrab = file.descriptor
                settle(&device)
                let foreground = device.foreground.contains { $0.descriptor == file.descriptor }
                if foreground && device.backendGrab != file.descriptor {
                    device.guestGrab = nil
                    return .failure(.resourceBusy)
                }
                return .success(0)
            } else {
                guard device.guestGrab == file.descriptor else { return .failure(.invalidArgument) }
                device.guestGrab = nil
            }
            settle(&device)
            return .success(0)
        }
    }

    /// The guest's EVIOCSMASK of type 0 on `file`: kept, and the driver's while the file is a foreground one.
    /// A mask the driver refuses (a size not whole longs: bits_from_user's EINVAL) is refused here too.
    func guestTypeMask(_ file: DeviceFile, _ mask: [UInt8]) -> Result<Int64, Errno> {
        guard mask.count % MemoryLayout<Int>.size == 0 else { return .failure(.invalidArgument) }
        return devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            device.typeMasks[file.descriptor] = mask
            let applied = applyMask(device, file)
            devices[file.path] = device
            return applied
        }
    }

    /// What the guest's EVIOCGMASK of type 0 on `file` shows in its first long, whatever the driver's mask
    /// is (empty in the background): the mask the guest set, or all types until it set one, as
    /// evdev_get_mask answers for a client without a mask.
    func guestTypeMaskBits(_ file: DeviceFile) -> UInt64 {
        devices.withLock { devices in
            guard let mask = devices[file.path]?.typeMasks[file.descriptor] else { return ~0 }
            return mask.prefix(8).enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
    }

    /// The guest's EVIOCREVOKE on `file` succeeded: the driver dropped the file's grab with it (evdev_revoke
    /// ungrabs), and the file receives nothing again.
    func revoked(_ file: DeviceFile) {
        devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            device.revoked.insert(file.descriptor)
            if device.guestGrab == file.descriptor { device.guestGrab = nil }
            device.foreground.removeAll { $0.descriptor == file.descriptor }
            if device.backendGrab == file.descriptor { device.backendGrab = nil }
            settle(&device)
            devices[file.path] = device
        }
    }

    /// Before `file`'s descriptor closes: what it held goes.
    func closing(_ file: DeviceFile) {
        devices.withLock { devices in
            guard var device = devices[file.path] else { return }
            device.foreground.removeAll { $0.descriptor == file.descriptor }
            if device.guestGrab == file.descriptor { device.guestGrab = nil }
            device.revoked.remove(file.descriptor)
            device.typeMasks[file.descriptor] = nil
            device.known.remove(file.descriptor)
            if device.backendGrab == file.descriptor {
                _ = try? file.ioctl(numbers.grab, value: 0)
                device.backendGrab = nil
            }
            settle(&device)
            devices[file.path] = device.known.isEmpty ? nil : device
        }
    }

    /// The backend's grab on the foreground file holding the guest's grab, and on no file otherwise. A grab
    /// that fails (EBUSY: another process tree of the same principal holds the device) leaves none here.
    private func settle(_ device: inout Device) {
        let wanted = device.foreground.first { $0.descriptor == device.guestGrab }
        guard wanted?.descriptor != device.backendGrab else { return }
        if let held = device.foreground.first(where: { $0.descriptor == device.backendGrab }) {
            _ = try? held.ioctl(numbers.grab, value: 0)
        }
        device.backendGrab = nil
        if let file = wanted, (try? file.ioctl(numbers.grab, value: 1)) != nil { device.backendGrab = file.descriptor }
    }

    /// The driver's type mask of `file`: the guest's (all types without one) in the foreground, none in
    /// the background. The driver takes masks in whole longs.
    @discardableResult
    private func applyMask(_ device: Device, _ file: DeviceFile) -> Result<Int64, Errno> {
        let foreground = device.foreground.contains { $0.descriptor == file.descriptor }
        var codes = foreground ? device.typeMasks[file.descriptor] ?? [UInt8](repeating: 0xff, count: MemoryLayout<Int>.size) : []
        return codes.withUnsafeMutableBytes { codes in
            var mask = input_mask(type: 0, codes_size: UInt32(codes.count), codes_ptr: UInt64(UInt(bitPattern: codes.baseAddress)))
            return withUnsafeMutableBytes(of: &mask) { mask in
                Result { () throws(Errno) in Int64(try Syscall.ioctl(file.descriptor, UInt(numbers.setMask), mask.baseAddress)) }
            }
        }
    }

    /// Reads away what a file queued before its mask was set (a poll of 0 ms before each read: never blocks).
    private func drain(_ file: DeviceFile) {
        var buffer = [UInt8](repeating: 0, count: 24 * 64)
        var ready = pollfd(fd: file.descriptor, events: Int16(POLLIN), revents: 0)
        while poll(&ready, 1, 0) == 1, ready.revents & Int16(POLLIN) != 0 {
            guard buffer.withUnsafeMutableBytes({ read(file.descriptor, $0.baseAddress, $0.count) }) > 0 else { return }
        }
    }
}

/// struct input_mask (linux/input.h), as EVIOCSMASK reads it.
private struct input_mask {
    var type: UInt32
    var codes_size: UInt32
    var codes_ptr: UInt64
}

/// A file of a `foreground` input export: the guest's EVIOCGRAB and EVIOCSMASK of type 0 are answered by its
/// guest's ForegroundGrabs, its EVIOCGMASK of type 0 shows the mask kept there, and its EVIOCREVOKE is
/// reported to them.
final class ForegroundInputFile: DeviceFileState, @unchecked Sendable {
    private let file: DeviceFile
    private let ioctls: IoctlKinds<EvdevIoctl>
    private let grabs: ForegroundGrabs

    init(_ file: DeviceFile, ioctls: IoctlKinds<EvdevIoctl>, grabs: ForegroundGrabs) {
        (self.file, self.ioctls, self.grabs) = (file, ioctls, grabs)
    }

    func value(of name: String, arguments: [Int64]) throws -> Int64? { nil }

    func answer(instead call: CallView) -> Result<Int64, Errno>? {
        switch ioctls(call) {
        case .grab:
            guard case .value(let value) = call.plan.argument else { return .failure(.invalidArgument) }
            return grabs.guestGrab(file, value)
        case .setMask:
            // Type 0 (the types) only; a mask of codes filters within a type and goes to the driver.
            guard call.load(UInt32.self, at: 0) == 0 else { return nil }
            let codes = call.target(ofPointerAt: 8).map { call.bytes[$0] } ?? []
            return grabs.guestTypeMask(file, codes)
        default:
            return nil
        }
    }

    func ioctlCompleted(_ call: CallView, result: Int64) {
        if result == 0, ioctls(call) == .revoke { grabs.revoked(file) }
    }

    /// EVIOCGMASK of type 0 shows the guest's own mask, not the driver's. A buffer under one long keeps the
    /// driver's bytes (those of the background's empty mask).
    func edits(after call: CallView, result: Int64) -> CallEdits {
        guard result == 0, ioctls(call) == .getMask, call.load(UInt32.self, at: 0) == 0,
              let codes = call.target(ofPointerAt: 8), call.bytes[codes].count >= 8 else { return CallEdits() }
        return CallEdits(values: [(region: codes, offset: 0, value: grabs.guestTypeMaskBits(file))])
    }

    func willClose() { grabs.closing(file) }
}
