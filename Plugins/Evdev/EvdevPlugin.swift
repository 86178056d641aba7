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
/// - A `foreground` export: the foreground guest's file holds an EVIOCGRAB, which makes the driver pass
///   every event to it alone (evdev.c, evdev_events: a grabbing client is the only one served); a
///   background guest's files receive nothing, as a program of an inactive VT under a grabbing display
///   server. Events already queued in a file stay its own: they came while it was the foreground.
///   The guest's own EVIOCGRAB there never reaches the driver (ForegroundGrabs). While the foreground
///   guest has no file of the device, the backend's own file of it holds the grab (IdleGrabs).
public final class EvdevPlugin: DevicePlugin {
    public static let name = "evdev"
    private let grab = SpecDerived { specs throws in
        let l = SpecLayout(specs)
        let number = l.command("EVIOCGRAB")
        try l.check()
        return (number: number, ioctls: IoctlKinds<EvdevIoctl>(specs))
    }

    private let idle = IdleGrabs()

    public init() {}

    public func check(_ specs: SpecSet) throws { try grab.check(specs) }

    public func state(for file: DeviceFile) -> (any DeviceFileState)? {
        guard file.sharing == .foreground, let grab = grab(file.specs) else { return nil }
        // After the sharing bookkeeping: a foreground guest's file holds its grab already.
        idle.opened(file, grabNumber: grab.number)
        return ForegroundInputFile(file, ioctls: grab.ioctls, grabs: grabs(file, grab.number), idle: idle)
    }

    public func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        guard let grab = grab(file.specs) else { return }
        grabs(file, grab.number).foregroundChanged(file, isForeground: isForeground)
    }

    private func grabs(_ file: DeviceFile, _ number: UInt32) -> ForegroundGrabs {
        file.guest.value { [idle] in ForegroundGrabs(number, idle: idle) }
    }
}

enum EvdevIoctl: String, CaseIterable, Sendable {
    case grab = "EVIOCGRAB", revoke = "EVIOCREVOKE"
}

/// One guest's grabs on `foreground` input exports, per device path. Two kinds:
/// - the backend's: a real EVIOCGRAB on one of the guest's files while it is the foreground, so that the
///   driver serves that file alone;
/// - the guest's: what the guest's own EVIOCGRAB calls hold, kept here and answered as evdev_grab and
///   evdev_ungrab answer (EBUSY while any of the guest's files of the device holds one, EINVAL to release
///   one the file does not hold). Forwarded, a guest's grab would find the backend's (EBUSY) and its
///   release would drop the backend's, letting background guests read the keys.
/// The backend's grab goes to the file holding the guest's grab, if any (a local grabbing program is the
/// one served), and passes to another of the guest's foreground files when the file holding it closes.
/// Per guest process tree (GuestScope): another tree of the same principal keeps its own.
final class ForegroundGrabs: @unchecked Sendable {
    private struct Device {
        var foreground: [DeviceFile] = []   // the guest's files of the device that are the foreground's
        var backendGrab: Int32?             // the descriptor the backend's EVIOCGRAB is on
        var guestGrab: Int32?               // the descriptor whose guest holds an EVIOCGRAB, as the guest sees it
        var revoked: Set<Int32> = []        // files the guest's EVIOCREVOKE made dead: they receive nothing again
    }
    private let grabNumber: UInt32
    private let idle: IdleGrabs
    private let devices = LockedValue<[String: Device]>([:])

    init(_ grabNumber: UInt32, idle: IdleGrabs) { (self.grabNumber, self.idle) = (grabNumber, idle) }

    func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            device.foreground.removeAll { $0.descriptor == file.descriptor }
            if isForeground && !device.revoked.contains(file.descriptor) {
                device.foreground.append(file)
                settle(&device, file.path)
            } else if device.backendGrab == file.descriptor {
                release(&device, file, ungrab: true)
            }
            devices[file.path] = device
        }
    }

    /// The guest's EVIOCGRAB on `file`: any value but 0 grabs, as evdev_ioctl_handler takes it.
    func guestGrab(_ file: DeviceFile, _ value: UInt64) -> Result<Int64, Errno> {
        devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            defer { devices[file.path] = device }
            if value != 0 {
                guard device.guestGrab == nil else { return .failure(.resourceBusy) }
                device.guestGrab = file.descriptor
                settle(&device, file.path)
            } else {
                guard device.guestGrab == file.descriptor else { return .failure(.invalidArgument) }
                device.guestGrab = nil   // the backend's grab stays where it is: still one of this guest's files
            }
            return .success(0)
        }
    }

    /// The guest's EVIOCREVOKE on `file` succeeded: the driver dropped the file's grab with it (evdev_revoke
    /// ungrabs), so the backend's grab passes to another of the guest's foreground files, if it has one.
    func revoked(_ file: DeviceFile) {
        devices.withLock { devices in
            var device = devices[file.path, default: Device()]
            device.revoked.insert(file.descriptor)
            if device.guestGrab == file.descriptor { device.guestGrab = nil }
            device.foreground.removeAll { $0.descriptor == file.descriptor }
            if device.backendGrab == file.descriptor { release(&device, file, ungrab: false) }
            settle(&device, file.path)
            devices[file.path] = device
        }
    }

    /// Before `file`'s descriptor closes: what it held goes, and the backend's grab passes on.
    func closing(_ file: DeviceFile) {
        devices.withLock { devices in
            guard var device = devices[file.path] else { return }
            device.foreground.removeAll { $0.descriptor == file.descriptor }
            if device.guestGrab == file.descriptor { device.guestGrab = nil }
            device.revoked.remove(file.descriptor)
            if device.backendGrab == file.descriptor { release(&device, file, ungrab: true) }
            settle(&device, file.path)
            devices[file.path] = device.foreground.isEmpty && device.guestGrab == nil && device.revoked.isEmpty ? nil : device
        }
    }

    /// Puts the backend's grab on the foreground file holding the guest's grab, or keeps it where it is, or
    /// takes it on the first foreground file. A grab that fails (EBUSY: another process tree of the same
    /// principal holds the device) leaves none here.
    private func settle(_ device: inout Device, _ path: String) {
        let foreground = device.foreground.map(\.descriptor)
        let wanted = [device.guestGrab, device.backendGrab, foreground.first].compactMap { $0 }.first { foreground.contains($0) }
        guard wanted != device.backendGrab else { return }
        let target = device.foreground.first { $0.descriptor == wanted }
        // Counted before the old grab goes: the idle grab does not come between, and lets go before this
        // one is taken (it would be EBUSY).
        if target != nil { idle.guestGrabStarts(path) }
        if let held = device.foreground.first(where: { $0.descriptor == device.backendGrab }) {
            release(&device, held, ungrab: true)
        } else if device.backendGrab != nil {
            device.backendGrab = nil
            idle.guestGrabEnded(path)
        }
        guard let file = target else { return }
        if (try? file.ioctl(grabNumber, value: 1)) != nil {
            device.backendGrab = file.descriptor
        } else {
            idle.guestGrabEnded(path)
        }
    }

    /// The backend's grab leaves `file` (ungrabbed here, or already by the driver): the idle grab may take it.
    private func release(_ device: inout Device, _ file: DeviceFile, ungrab: Bool) {
        if ungrab { _ = try? file.ioctl(grabNumber, value: 0) }
        device.backendGrab = nil
        idle.guestGrabEnded(file.path)
    }
}

/// The backend's own file of each `foreground` input device, grabbed while guests have files of it open and
/// none of their files holds the backend's grab (the foreground guest has none open): the events then reach
/// no one, as on a console whose active VT has no reader, instead of every background guest. It closes with
/// the last guest file of the device.
final class IdleGrabs: @unchecked Sendable {
    private struct Device {
        var files = 0           // guests' open files of the device
        var guestGrabs = 0      // of them, the ones holding the backend's grab
        var own: Int32?         // the backend's grabbed descriptor
    }
    private let devices = LockedValue<[String: Device]>([:])
    /// EVIOCGRAB's number, learnt from the first file's specs.
    private let grabNumber = LockedValue<UInt32?>(nil)

    func opened(_ file: DeviceFile, grabNumber number: UInt32) {
        grabNumber.withLock { $0 = number }
        update(file.path) { $0.files += 1 }
    }
    func closed(_ path: String) { update(path) { $0.files -= 1 } }
    func guestGrabStarts(_ path: String) { update(path) { $0.guestGrabs += 1 } }
    func guestGrabEnded(_ path: String) { update(path) { $0.guestGrabs -= 1 } }

    private func update(_ path: String, _ change: (inout Device) -> Void) {
        let number = grabNumber.withLock { $0 }
        devices.withLock { devices in
            var device = devices[path, default: Device()]
            change(&device)
            let wanted = device.files > 0 && device.guestGrabs == 0
            if !wanted, let own = device.own {
                try? Syscall.close(own)   // the grab goes with the file
                device.own = nil
            } else if wanted, device.own == nil, let number,
                      let fd = try? Syscall.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC) {
                if (try? Syscall.ioctl(fd, UInt(number), value: 1)) != nil { device.own = fd } else { try? Syscall.close(fd) }
            }
            devices[path] = device.files == 0 && device.guestGrabs == 0 && device.own == nil ? nil : device
        }
    }
}

/// A file of a `foreground` input export: the guest's EVIOCGRAB is answered by its guest's ForegroundGrabs,
/// and its EVIOCREVOKE reported to them.
final class ForegroundInputFile: DeviceFileState, @unchecked Sendable {
    private let file: DeviceFile
    private let ioctls: IoctlKinds<EvdevIoctl>
    private let grabs: ForegroundGrabs
    private let idle: IdleGrabs

    init(_ file: DeviceFile, ioctls: IoctlKinds<EvdevIoctl>, grabs: ForegroundGrabs, idle: IdleGrabs) {
        (self.file, self.ioctls, self.grabs, self.idle) = (file, ioctls, grabs, idle)
    }

    func value(of name: String, arguments: [Int64]) throws -> Int64? { nil }

    func answer(instead call: CallView) -> Result<Int64, Errno>? {
        guard ioctls(call) == .grab else { return nil }
        guard case .value(let value) = call.plan.argument else { return .failure(.invalidArgument) }
        return grabs.guestGrab(file, value)
    }

    func ioctlCompleted(_ call: CallView, result: Int64) {
        if result == 0, ioctls(call) == .revoke { grabs.revoked(file) }
    }

    func willClose() {
        idle.closed(file.path)   // first: the backend's idle grab need not come for this file's last moment
        grabs.closing(file)
    }
}
