import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites {
/// An `exclusive` input export in the driver VM, with real clients: a second backend there serves a uinput
/// keyboard with sharing=exclusive, and guests (uids 1000 and 1001, each a `paradice run`) open it with evtest.
@Suite("exclusive: one guest process tree at a time")
struct DriverVMExclusiveTests {
    @Test func evtestOfAnotherGuestIsBusyUntilTheHolderExitsAndAForkedChildSharesTheHold() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "exclusive")
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins evdev --device \"/dev/input/event*,sharing=exclusive\"")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        let folder = keyboard.guestFolder
        let a = { evdevFileText(keyboard.folder + "/a.txt") }, b = { evdevFileText(keyboard.folder + "/b.txt") }

        // A holds it: its evtest runs (and reads keys).
        try keyboard.startNative("echo $$ > \(folder)/a.pid; exec " + asGuest(1000, socket, "stdbuf -oL evtest \(keyboard.node)"), output: "a.txt")
        #expect(evdevWait(seconds: 90) { a().contains("Testing ...") }, "\(a())\n\(backendLog())")
        try keyboard.emit(["1 30 1", "0 0 0", "1 30 0", "0 0 0"])   // KEY_A
        #expect(evdevWait(seconds: 60) { a().contains("(KEY_A), value 0") }, "\(a())")

        // Another guest's evtest fails to open it, as evtest prints a busy device; so does another
        // `paradice run` of A's own uid: the hold is a process tree's (one handle table), not a uid's.
        for uid in [1001, 1000] {
            let busy = try vm.native(asGuest(uid, socket, "evtest \(keyboard.node)"), timeout: 120)
            #expect(busy.status != 0 && busy.output.contains("evtest: Device or resource busy"), "uid \(uid): \(busy.output)\n\(backendLog())")
        }
        #expect(backendLog().contains("open refused: another guest holds the exclusive device"), "\(backendLog())")

        // A exits (evtest ends at SIGTERM): B's evtest opens it and gets the keys.
        try end(vm, "\(folder)/a.pid")
        try keyboard.startNative("echo $$ > \(folder)/b.pid; exec " + asGuest(1001, socket, "stdbuf -oL evtest \(keyboard.node)"), output: "b.txt")
        #expect(evdevWait(seconds: 90) { b().contains("Testing ...") }, "\(b())\n\(backendLog())")
        try keyboard.emit(["1 48 1", "0 0 0", "1 48 0", "0 0 0"])   // KEY_B
        #expect(evdevWait(seconds: 60) { b().contains("(KEY_B), value 0") }, "\(b())")
        try end(vm, "\(folder)/b.pid")

        // One process tree: a child forked after its parent opened it opens it too.
        let forked = try vm.native(asGuest(1000, socket, "python3 /share/evdev.py fork-open \(keyboard.node)"), timeout: 120)
        #expect(forked.output == "parent open: ok\nchild open: ok\n", "\(forked.output)\n\(backendLog())")
    }
}
}

/// Ends the process whose pid is in `pidFile` (SIGTERM, then SIGKILL after 30 s) and waits until it is gone.
private func end(_ vm: DriverVM, _ pidFile: String) throws {
    _ = try vm.native("pid=$(cat \(pidFile)); kill $pid; for i in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done;"
                      + " kill -9 $pid 2>/dev/null; true")
}
