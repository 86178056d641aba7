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
        let a2 = { evdevFileText(keyboard.folder + "/a2.txt") }
        // A opens first: the first guest to open a foreground device is the foreground. A second evtest of A's
        // (another process tree, another file) is the foreground's too.
        try guest(1000, "a.txt")
        #expect(evdevWait(seconds: 90) { a().contains("Testing ...") }, "\(a())\n\(backendLog())")
        try guest(1000, "a2.txt")
        #expect(evdevWait(seconds: 90) { a2().contains("Testing ...") }, "\(a2())\n\(backendLog())")
        try guest(1001, "b.txt")
        #expect(evdevWait(seconds: 90) { b().contains("Testing ...") }, "\(b())\n\(backendLog())")

        try keyboard.emit(["1 30 1", "0 0 0", "1 30 0", "0 0 0"])   // KEY_A
        #expect(evdevWait(seconds: 60) { a().contains("(KEY_A), value 0") }, "\(a())")
        #expect(evdevWait(seconds: 60) { a2().contains("(KEY_A), value 0") }, "every file of the foreground guest: \(a2())")

        let focus = try vm.native("/share/bin/paradice focus --backend unix:\(socket) 'uid 1001'")
        #expect(focus.status == 0 && focus.output.contains("is the foreground (1 open file"), "\(focus.output)\n\(backendLog())")

        try keyboard.emit(["1 48 1", "0 0 0", "1 48 0", "0 0 0"])   // KEY_B
        #expect(evdevWait(seconds: 60) { b().contains("(KEY_B), value 0") }, "\(b())")
        // Events keep their order: had B got KEY_A, it would show before its KEY_B; A's KEY_B would have come
        // by the time B's did (the driver passes an event to every reader at once). evtest's capability list
        // names both keys too: only event lines count.
        #expect(!b().contains("(KEY_A), value"), "\(b())")
        #expect(!a().contains("(KEY_B), value") && !a2().contains("(KEY_B), value"), "\(a())\n\(a2())")
    }

    /// While the foreground guest has no file of the device open, the keys go to no one: not to a background
    /// guest's evtest (its file's mask is empty), until a focus makes that guest the foreground.
    @Test func aForegroundGuestWithoutAFileLeavesTheKeysToNoOne() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "idle")
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins evdev --device \"/dev/input/event*,sharing=foreground\"")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        func paradice(_ uid: Int) -> String {
            "setpriv --reuid \(uid) --regid \(uid) --clear-groups /share/bin/paradice run --backend unix:\(socket) --"
        }
        // A opens first, so it is the foreground, and exits: it has no file of the keyboard open.
        let query = try vm.native("\(paradice(1000)) evtest --query \(keyboard.node) EV_KEY KEY_A; echo status $?", timeout: 120)
        #expect(query.output.contains("status 0"), "\(query.output)\n\(backendLog())")
        try keyboard.startNative("timeout 240 \(paradice(1001)) stdbuf -oL evtest \(keyboard.node)", output: "b.txt")
        let b = { evdevFileText(keyboard.folder + "/b.txt") }
        #expect(evdevWait(seconds: 90) { b().contains("Testing ...") }, "\(b())\n\(backendLog())")
        try keyboard.emit(["1 30 1", "0 0 0", "1 30 0", "0 0 0"])   // KEY_A, while A has no file
        let focus = try vm.native("/share/bin/paradice focus --backend unix:\(socket) 'uid 1001'")
        #expect(focus.status == 0 && focus.output.contains("is the foreground (1 open file"), "\(focus.output)\n\(backendLog())")
        try keyboard.emit(["1 48 1", "0 0 0", "1 48 0", "0 0 0"])   // KEY_B, B the foreground
        #expect(evdevWait(seconds: 60) { b().contains("(KEY_B), value 0") }, "\(b())")
        // In order: had B got KEY_A, it would show before KEY_B.
        #expect(!b().contains("(KEY_A), value"), "\(b())")
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

    /// DRM master moving with `paradice focus` while both guests keep the vkms card open: A (Programs/drmmaster.c)
    /// holds its file throughout; after a focus to B, A is no longer master (AUTH_MAGIC and a SETCRTC give
    /// EACCES) and B's modetest sets its mode; after a focus back, A is master again and may set modes.
    @Test func drmMasterMovesWithTheFocusWhileBothGuestsKeepTheirFilesOpen() throws {
        let vm = try DriverVM.require()
        let pipe = try #require(kmsPipe(try vm.native("modetest -M vkms -c -p").output))
        let set = "\(pipe.connector)@\(pipe.crtc):\(pipe.mode)"
        let program = try compileForDriverVM(vm, "drmmaster")
        let keyboard = try EvdevKeyboard(vm, "drmmaster")   // its folder and background commands; no keys
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins drm --device \"/dev/dri/card*,sharing=foreground\" --tree /sys")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        let folder = keyboard.guestFolder
        let a = { evdevFileText(keyboard.folder + "/A.txt") }, b = { evdevFileText(keyboard.folder + "/B.txt") }
        func check(_ n: Int) -> Bool {
            try? "".write(toFile: keyboard.folder + "/A.check\(n)", atomically: true, encoding: .utf8)
            return evdevWait(seconds: 60) { a().contains("check \(n): ") }
        }
        func focus(_ guest: String) -> String {
            var output = ""
            _ = evdevWait(seconds: 60) {
                let r = try? vm.native("/share/bin/paradice focus --backend unix:\(socket) '\(guest)'")
                output = r?.output ?? ""
                return r?.status == 0
            }
            return output
        }

        // A opens first, so it is the foreground and its file master.
        try keyboard.startNative("timeout 300 " + asGuest(1000, socket, "\(program.guest) vkms \(folder) A"), output: "A.txt")
        #expect(evdevWait(seconds: 90) { a().contains("open: master=1") }, "\(a())\n\(backendLog())")
        // B is connected (a file of the exported /sys, no card) so that it may be named.
        try keyboard.startNative("timeout 300 " + asGuest(1001, socket, "\(program.guest) /sys/class/drm/version \(folder) B"), output: "anchor.txt")
        #expect(evdevWait(seconds: 90) { evdevFileText(keyboard.folder + "/anchor.txt").contains("holding") },
                "\(evdevFileText(keyboard.folder + "/anchor.txt"))\n\(backendLog())")
        let toB = focus("uid 1001")
        #expect(toB.contains("is the foreground (0 open file"), "\(toB)\n\(backendLog())")
        #expect(check(1) && a().contains("check 1: master=0 setcrtc=EACCES"), "\(a())\n\(backendLog())")

        // B's modetest opens the card with A's file still open, and sets its mode.
        try keyboard.startNative("timeout 200 " + asGuest(1001, socket, "sh -c \"sleep 60 | modetest -M vkms -s \(set)\""), output: "B.txt")
        #expect(evdevWait(seconds: 90) { b().contains("setting mode") }, "\(b())\n\(backendLog())")
        #expect(!b().contains("failed to set mode"), "\(b())\n\(backendLog())")
        #expect(check(2) && a().contains("check 2: master=0 setcrtc=EACCES"), "\(a())\n\(backendLog())")

        // Back to A while B's modetest still holds its file: B is dropped, A is master and sets modes again.
        let toA = focus("uid 1000")
        #expect(toA.contains("is the foreground (1 open file"), "\(toA)\n\(backendLog())")
        #expect(check(3) && a().contains("check 3: master=1 setcrtc=0"), "\(a())\n\(backendLog())")
        try "".write(toFile: keyboard.folder + "/A.exit", atomically: true, encoding: .utf8)
        try "".write(toFile: keyboard.folder + "/B.exit", atomically: true, encoding: .utf8)
        #expect(evdevWait(seconds: 60) { a().contains("exit 0") }, "\(a())")
    }

    /// A background guest's own SET_MASTER on vkms (Programs/drmmaster.c in both guests): after the foreground
    /// guest drops master itself, no file is master and the driver would grant it to the backend; the
    /// background file is refused (EACCES) and stays without master, and the foreground guest takes it back.
    @Test func aBackgroundGuestsSetMasterIsRefusedEvenWhenNoFileIsMaster() throws {
        let vm = try DriverVM.require()
        let program = try compileForDriverVM(vm, "drmmaster")
        let keyboard = try EvdevKeyboard(vm, "drmsetmaster")   // its folder and background commands; no keys
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins drm --device \"/dev/dri/card*,sharing=foreground\"")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        let folder = keyboard.guestFolder
        func text(_ name: String) -> String { evdevFileText(keyboard.folder + "/\(name).txt") }
        func check(_ name: String, _ n: Int, _ action: String) -> String {
            try? action.write(toFile: keyboard.folder + "/\(name).check\(n)", atomically: true, encoding: .utf8)
            _ = evdevWait(seconds: 60) { text(name).contains("check \(n): ") }
            return text(name)
        }

        // A opens first: the foreground, and master. B opens while A is master, so the kernel does not make it one.
        try keyboard.startNative("timeout 300 " + asGuest(1000, socket, "\(program.guest) vkms \(folder) A"), output: "A.txt")
        #expect(evdevWait(seconds: 90) { text("A").contains("open: master=1") }, "\(text("A"))\n\(backendLog())")
        try keyboard.startNative("timeout 300 " + asGuest(1001, socket, "\(program.guest) vkms \(folder) B"), output: "B.txt")
        #expect(evdevWait(seconds: 90) { text("B").contains("open: master=0") }, "\(text("B"))\n\(backendLog())")

        let dropped = check("A", 1, "drop")
        #expect(dropped.contains("check 1: drop=0 master=0 setcrtc=EACCES"), "\(dropped)\n\(backendLog())")
        let refused = check("B", 1, "set")
        #expect(refused.contains("check 1: set=EACCES master=0 setcrtc=EACCES"), "\(refused)\n\(backendLog())")
        let taken = check("A", 2, "set")
        #expect(taken.contains("check 2: set=0 master=1 setcrtc=0"), "\(taken)\n\(backendLog())")
        try "".write(toFile: keyboard.folder + "/A.exit", atomically: true, encoding: .utf8)
        try "".write(toFile: keyboard.folder + "/B.exit", atomically: true, encoding: .utf8)
        #expect(evdevWait(seconds: 60) { text("A").contains("exit 0") && text("B").contains("exit 0") }, "\(text("A"))\n\(text("B"))")
    }

    /// The foreground guest's own EVIOCGRAB: `evtest --grab` runs there and gets the keys; the grab answers
    /// as on a local device (Programs/evdev.py grab and grab-two, in the foreground and a background guest),
    /// and no guest's release gives the background guests the keys.
    @Test func theForegroundGuestsOwnGrabAnswersAsLocallyAndKeepsTheKeysItsOwn() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "guestgrab")
        defer { try? keyboard.unplug() }
        let (socket, backendLog) = try foregroundBackend(vm, keyboard, "--plugins evdev --device \"/dev/input/event*,sharing=foreground\"")
        defer { stopForegroundBackend(vm, keyboard, socket) }
        let a = { evdevFileText(keyboard.folder + "/a.txt") }, b = { evdevFileText(keyboard.folder + "/b.txt") }
        try keyboard.startNative("timeout 240 " + asGuest(1000, socket, "stdbuf -oL evtest --grab \(keyboard.node)"), output: "a.txt")
        #expect(evdevWait(seconds: 90) { a().contains("Testing ...") }, "\(a())\n\(backendLog())")
        try keyboard.startNative("timeout 240 " + asGuest(1001, socket, "stdbuf -oL evtest \(keyboard.node)"), output: "b.txt")
        #expect(evdevWait(seconds: 90) { b().contains("Testing ...") }, "\(b())\n\(backendLog())")
        // evtest tries a grab at its start, and says so when it fails; --grab keeps it.
        #expect(!a().contains("This device is grabbed by another process"), "\(a())")
        #expect(!b().contains("This device is grabbed by another process"), "\(b())")

        try keyboard.emit(["1 30 1", "0 0 0", "1 30 0", "0 0 0"])   // KEY_A
        #expect(evdevWait(seconds: 60) { a().contains("(KEY_A), value 0") }, "\(a())")

        // Each guest's grab calls, while evtest holds its grab. In the foreground guest, another process tree:
        // what a local program gets while another holds a grab (the VM's own, against the backend's grab on
        // evtest's file: EBUSY, then EINVAL). In the background guest: what a local program gets on a device
        // no one has grabbed (its grab is its own), not the backend's grab.
        let heldNatively = try vm.native("python3 /share/evdev.py grab \(keyboard.node)", timeout: 120)
        #expect(heldNatively.output == "EVIOCGRAB 1: EBUSY\nEVIOCGRAB 1: EBUSY\nEVIOCGRAB 0: EINVAL\nEVIOCGRAB 0: EINVAL\n",
                "\(heldNatively.output)")
        let heldTwoNatively = try vm.native("python3 /share/evdev.py grab-two \(keyboard.node)", timeout: 120)
        let one = "EVIOCGRAB 1: 0\nEVIOCGRAB 1: EBUSY\nEVIOCGRAB 0: 0\nEVIOCGRAB 0: EINVAL\n"
        let two = "EVIOCGRAB 1 on the first file: 0\nEVIOCGRAB 1 on the second file: EBUSY\n"
            + "EVIOCGRAB 0 on the second file: EINVAL\nEVIOCGRAB 0 on the first file: 0\n"
        for (uid, expected, expectedTwo) in [(1000, heldNatively.output, heldTwoNatively.output), (1001, one, two)] {
            let grab = try vm.native(asGuest(uid, socket, "python3 /share/evdev.py grab \(keyboard.node)"), timeout: 120)
            #expect(grab.output == expected, "uid \(uid): \(grab.output)\n\(backendLog())")
            let grabTwo = try vm.native(asGuest(uid, socket, "python3 /share/evdev.py grab-two \(keyboard.node)"), timeout: 120)
            #expect(grabTwo.output == expectedTwo, "uid \(uid): \(grabTwo.output)\n\(backendLog())")
        }
        // Each guest's own type mask answers as natively: the plug-in keeps it, it is the driver's while the file
        // is the foreground's, and EVIOCGMASK shows it in the background too, where the driver's is empty.
        let native = try vm.native("python3 /share/evdev.py mask \(keyboard.node)", timeout: 120)
        #expect(native.output.contains("EV_SYN and EV_MSC: 0\nEVIOCGMASK of the types: 0x11"), "\(native.output)")
        for uid in [1000, 1001] {
            let masked = try vm.native(asGuest(uid, socket, "python3 /share/evdev.py mask \(keyboard.node)"), timeout: 120)
            #expect(masked.output == native.output, "uid \(uid): \(masked.output)\n\(backendLog())")
        }
        // The backend's grab is still on evtest's file: the keys are A's alone.
        try keyboard.emit(["1 48 1", "0 0 0", "1 48 0", "0 0 0"])   // KEY_B
        #expect(evdevWait(seconds: 60) { a().contains("(KEY_B), value 0") }, "\(a())")

        // A focus takes the keys from A although its evtest holds a grab of its own.
        let focus = try vm.native("/share/bin/paradice focus --backend unix:\(socket) 'uid 1001'")
        #expect(focus.status == 0 && focus.output.contains("is the foreground (1 open file"), "\(focus.output)\n\(backendLog())")
        try keyboard.emit(["1 46 1", "0 0 0", "1 46 0", "0 0 0"])   // KEY_C
        #expect(evdevWait(seconds: 60) { b().contains("(KEY_C), value 0") }, "\(b())")
        // Had B got KEY_A or KEY_B, they would show before its KEY_C; A's KEY_C would have come with B's.
        #expect(!b().contains("(KEY_A), value") && !b().contains("(KEY_B), value"), "\(b())")
        #expect(!a().contains("(KEY_C), value"), "\(a())")
    }
}
}

/// `command` as guest `uid` of the second backend: a `paradice run` under that uid.
func asGuest(_ uid: Int, _ socket: String, _ command: String) -> String {
    "setpriv --reuid \(uid) --regid \(uid) --clear-groups /share/bin/paradice run --backend unix:\(socket) -- \(command)"
}

/// A second backend in the VM, on a unix socket any uid may reach, run from `keyboard`'s folder; its log.
func foregroundBackend(_ vm: DriverVM, _ keyboard: EvdevKeyboard, _ options: String) throws -> (String, () -> String) {
    let socket = "/tmp/paradice-foreground-\(getpid()).sock"
    try keyboard.startNative("echo $$ > \(keyboard.guestFolder)/backend.pid; exec /share/bin/paradice-backend --listen unix:\(socket)"
                             + " --specs /share/Specs \(options) --log-level debug", output: "backend.txt")
    let log = { evdevFileText(keyboard.folder + "/backend.txt") }
    #expect(evdevWait(seconds: 60) { log().contains("listening") }, "\(log())")
    _ = try vm.native("chmod 666 \(socket)")
    return (socket, log)
}

/// Ends that backend by its own pid.
func stopForegroundBackend(_ vm: DriverVM, _ keyboard: EvdevKeyboard, _ socket: String) {
    _ = try? vm.native("kill $(cat \(keyboard.guestFolder)/backend.pid); rm -f \(socket)")
}
