import ParadiceEngine
import ParadicePlan

/// evdev: what input.h's spec cannot say, which turns out to be nothing the engine does not already do.
/// - Reads and writes in whole input_event units: the backend reads and writes the guest's own open file
///   with the guest's own count, so the driver itself gives EINVAL under one event, rounds down to whole
///   events, and EAGAIN or sleeps on an empty queue (DriverVMEvdevTests checks each against native).
/// - EVIOCGRAB per guest: a grab belongs to the open file, and each guest opens its own; the backend closes
///   a guest's files when it exits or its connection drops, which releases the grab.
/// So no per-file state is kept; the plug-in stays registered so that the spec's `plugin evdev` names it.
public final class EvdevPlugin: DevicePlugin {
    public static let name = "evdev"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }
}
