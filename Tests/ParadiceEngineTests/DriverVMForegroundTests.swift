import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites {
/// A `foreground` input export in the driver VM: a second backend there serves a uinput keyboard with
/// sharing=foreground on a unix socket, and two guests (uid 1000 and uid 1001) read it with evtest through
/// `paradice run`. Only the foreground guest gets the keys; `paradice focus` moves them.
@Suite("foreground: input follows paradice focus")
struct DriverVMForegroundTests {
    @Test func evtestInTheForegroundGuestGetsTheKeysAndAfterAFocusTheOtherDoes() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "focus")
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins evdev --device \"/dev/input/event*,sharing=foreground\"")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        func guest(_ uid: Int, _ output: String) throws {
            try keyboard.startNative("timeout 240 setpriv --reuid \(uid) --regid \(uid) --clear-groups /share/bin/paradice run"
                                     + " --backend unix:\(socket) -- stdbuf -oL evtest \(keyboard.node)", output: output)
        }
        let a = { evdevFileText(keyboard.folder + "/a.txt") }, b = { evdevFileText(keyboard.folder + "/b.txt") }
        // A opens first: the first guest to open a foreground device is the foreground.
        try guest(1000, "a.txt")
        #expect(evdevWait(seconds: 90) { a().contains("Testing ...") }, "\(a())\n\(backendLog())")
        try guest(1001, "b.txt")
        #expect(evdevWait(seconds: 90) { b().contains("Testing ...") }, "\(b())\n\(backendLog())")

        try keyboard.emit(["1 30 1", "0 0 0", "1 30 0", "0 0 0"])   // KEY_A
        #expect(evdevWait(seconds: 60) { a().contains("(KEY_A), value 0") }, "\(a())")

        let focus = try vm.native("/share/bin/paradice focus --backend unix:\(socket) 'uid 1001'")
        #expect(focus.status == 0 && focus.output.contains("is the foreground (1 open file"), "\(focus.output)\n\(backendLog())")

        try keyboard.emit(["1 48 1", "0 0 0", "1 48 0", "0 0 0"])   // KEY_B
        #expect(evdevWait(seconds: 60) { b().contains("(KEY_B), value 0") }, "\(b())")
        // Events keep their order: had B got KEY_A, it would show before its KEY_B; A's KEY_B would have come
        // by the time B's did (the driver passes an event to every reader at once). evtest's capability list
        // names both keys too: only event lines count.
        #expect(!b().contains("(KEY_A), value"), "\(b())")
        #expect(!a().contains("(KEY_B), value"), "\(a())")
    }

    /// DRM master with the foreground on vkms: the foreground guest's modetest sets a mode; a background
    /// guest's gets the driver's EACCES even on a masterless device (its file is dropped from master).
    @Test func modeSettingIsTheForegroundGuests() throws {
        let vm = try DriverVM.require()
        let pipe = try #require(kmsPipe(try vm.native("modetest -M vkms -c -p").output))
        let set = "\(pipe.connector)@\(pipe.crtc):\(pipe.mode)"
        let keyboard = try EvdevKeyboard(vm, "drmfocus")   // its folder and background commands; no keys
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins drm --device \"/dev/dri/card*,sharing=foreground\" --tree /sys")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        func modetest(_ uid: Int, seconds: Int) -> String {
            "setpriv --reuid \(uid) --regid \(uid) --clear-groups /share/bin/paradice run --backend unix:\(socket) --"
                + " sh -c \"sleep \(seconds) | modetest -M vkms -s \(set)\""
        }
        // A opens first: it is the foreground, and sets its mode. Then it exits: the device has no master.
        let first = try vm.native(modetest(1000, seconds: 1), timeout: 120)
        #expect(first.output.contains("setting mode") && !first.output.contains("failed to set mode"), "\(first.output)\n\(backendLog())")
        // B in the background opens the masterless device, which the kernel makes its master at open; the
        // backend drops it, so its mode set is the driver's EACCES, as for a program on an inactive VT.
        let background = try vm.native(modetest(1001, seconds: 1), timeout: 120)
        #expect(background.output.contains("failed to set mode: Permission denied"), "\(background.output)")
    }
}
}

/// A second backend in the VM, on a unix socket any uid may reach, run from `keyboard`'s folder; its log.
private func foregroundBackend(_ vm: DriverVM, _ keyboard: EvdevKeyboard, _ options: String) throws -> (String, () -> String) {
    let socket = "/tmp/paradice-foreground-\(getpid()).sock"
    try keyboard.startNative("echo $$ > \(keyboard.guestFolder)/backend.pid; exec /share/bin/paradice-backend --listen unix:\(socket)"
                             + " --specs /share/Specs \(options) --log-level debug", output: "backend.txt")
    let log = { evdevFileText(keyboard.folder + "/backend.txt") }
    #expect(evdevWait(seconds: 60) { log().contains("listening") }, "\(log())")
    _ = try vm.native("chmod 666 \(socket)")
    return (socket, log)
}

/// Ends that backend by its own pid.
private func stopForegroundBackend(_ vm: DriverVM, _ keyboard: EvdevKeyboard, _ socket: String) {
    _ = try? vm.native("kill $(cat \(keyboard.guestFolder)/backend.pid); rm -f \(socket)")
}
