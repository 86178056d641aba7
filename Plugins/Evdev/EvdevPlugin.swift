import ParadiceEngine
import ParadicePlan
import ParadiceSpec

/// evdev: what input.h's spec cannot say, which turns out to be nothing the engine does not already do.
/// - Reads and writes in whole input_event units: the backend reads and writes the guest's own open file
///   with the guest's own count, so the driver itself gives EINVAL under one event, rounds down to whole
///   events, and EAGAIN or sleeps on an empty queue (DriverVMEvdevTests checks each against native).
/// - EVIOCGRAB per guest: a grab belongs to the open file, and each guest opens its own; the backend closes
///   a guest's files when it exits or its connection drops, which releases the grab.
/// So no per-file state is kept; the plug-in stays registered so that the spec's `plugin evdev` names it.
/// - A `foreground` export: the foreground guest's file holds an EVIOCGRAB, which makes the driver pass
///   every event to it alone (evdev.c, evdev_events: a grabbing client is the only one served); a
///   background guest's files receive nothing, as a program of an inactive VT under a grabbing display
///   server. Events already queued in a file stay its own: they came while it was the foreground.
public final class EvdevPlugin: DevicePlugin {
    public static let name = "evdev"
    private let grab = SpecDerived { specs throws in
        let l = SpecLayout(specs)
        let number = l.command("EVIOCGRAB")
        try l.check()
        return number
    }

    public init() {}

    public func check(_ specs: SpecSet) throws { try grab.check(specs) }

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }

    public func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {
        guard let number = grab(file.specs) else { return }
        // A second file of the foreground guest finds the grab taken (EBUSY); a background file that holds
        // none gets EINVAL on release. Neither changes who receives the events.
        _ = try? file.ioctl(number, value: isForeground ? 1 : 0)
    }
}
