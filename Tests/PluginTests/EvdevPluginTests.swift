@testable import EvdevPlugin
import ParadiceEngine
import ParadicePlan
import ParadiceSpec
import ParadiceSystem
import Testing

/// An evdev ioctl taking a bare integer, planned as the backend would.
private func evdev(_ ioctl: String, _ value: UInt64) throws -> CallView {
    let command = try specs.ioctl(named: ioctl)!.command(in: specs, parameters: [:])
    return try Planner(specs: specs).plan(command: command, argument: value, className: "evdev", memory: LocalMemory()).before
}

@Suite("evdev plug-in")
struct EvdevPluginTests {
    /// A guest's EVIOCGRAB on a foreground file is answered as evdev_grab and evdev_ungrab answer, per guest
    /// process tree. The descriptors are none (the backend's own grabs on them fail and change nothing).
    @Test func aForegroundFilesGrabIsItsGuestsOwnAndAnswersAsTheDriverDoes() throws {
        let plugin = EvdevPlugin()
        let (guest, other) = (GuestScope(), GuestScope())
        func file(_ descriptor: Int32, _ scope: GuestScope, _ sharing: SharingMode = .foreground) -> (any DeviceFileState)? {
            plugin.state(for: DeviceFile(path: "/dev/input/event3", descriptor: descriptor, specs: specs, guest: scope, sharing: sharing))
        }
        // A shared export's grab is the driver's: no state, the call is forwarded.
        #expect(file(-9, guest, .shared) == nil)
        let first = try #require(file(-1, guest)), second = try #require(file(-2, guest)), elsewhere = try #require(file(-3, other))
        func grab(_ state: any DeviceFileState, _ value: UInt64) throws -> Result<Int64, Errno>? {
            state.answer(instead: try evdev("EVIOCGRAB", value))
        }
        #expect(try grab(first, 1) == .success(0))
        #expect(try grab(second, 1) == .failure(.resourceBusy))      // another file of the guest holds it
        #expect(try grab(elsewhere, 1) == .success(0))               // another guest's grab is its own
        #expect(try grab(second, 0) == .failure(.invalidArgument))   // it holds none
        #expect(try grab(first, 0) == .success(0))
        #expect(try grab(first, 0) == .failure(.invalidArgument))
        #expect(try grab(second, 2) == .success(0))                  // any value but 0 grabs
        second.willClose()                                           // its close releases it
        #expect(try grab(first, 1) == .success(0))
        // Other ioctls go to the driver.
        #expect(first.answer(instead: try evdev("EVIOCREVOKE", 0)) == nil)
    }
}
