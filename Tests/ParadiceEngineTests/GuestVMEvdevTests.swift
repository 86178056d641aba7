import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A uinput keyboard made natively in the driver VM, and its node in the guest VM (one more frontend: the
/// VM's own registered the driver VM's devices before the keyboard existed).
final class GuestVMKeyboard {
    let keyboard: EvdevKeyboard
    let frontend: GuestFrontend
    var node: String { keyboard.node }

    init(_ guest: GuestVM, _ name: String) throws {
        keyboard = try EvdevKeyboard(guest.driver, name)
        frontend = try GuestFrontend(guest, backend: guest.driverBackend, waitingFor: [keyboard.node])
    }

    /// Waits until a process in `place` has the keyboard's node open (a reader that prints nothing first).
    static func opened(_ node: String, _ place: (String) throws -> (status: Int32, output: String)) -> Bool {
        evdevWait(seconds: 60) {
            (try? place("for p in /proc/[0-9]*/fd/*; do readlink $p; done 2>/dev/null | grep -qx \(node)").status) == 0
        }
    }
}

extension DriverVMSuites.GuestVMSuites {
@Suite("evdev in the guest VM: a uinput keyboard")
struct Evdev {
    static let testing = "Testing ... (interrupt to exit)"

    /// evtest natively and in the guest VM on the same keyboard at once: byte for byte the same output (the
    /// description, every event with its kernel timestamp, the end at the unplug).
    @Test func evtestGivesTheNativeDescriptionAndEvents() throws {
        let guest = try GuestVM.require()
        let keys = try GuestVMKeyboard(guest, "gvm-evtest")
        let output = "gvm-evtest-\(getpid()).txt"
        defer { unlink(guest.share + "/" + output) }
        try keys.keyboard.startNative("evtest \(keys.node)", output: "evtest.txt")
        let nativeFile = keys.keyboard.folder + "/evtest.txt"
        #expect(evdevWait(seconds: 60) { evdevFileText(nativeFile).contains(Self.testing) }, "\(evdevFileText(nativeFile))")
        usleep(500_000)   // evtest probes a grab right after "Testing ...": one reader at a time
        try guest.start("evtest \(keys.node)", output: output)
        #expect(evdevWait(seconds: 60) { guest.text(output).contains(Self.testing) }, "\(guest.text(output))")
        usleep(500_000)
        let shift = 42, p = 25, a = 30, one = 2
        var lines: [String] = [], expected: [String] = []
        for (code, value, pause) in [(shift, 1, 0.03), (p, 1, 0.1), (p, 0, 0.01), (shift, 0, 0.2), (a, 1, 0.05), (a, 2, 0.02),
                                     (a, 0, 0.1), (one, 1, 0.0), (one, 0, 0.05)] {
            let packet = value == 2 ? ["1 \(code) 2", "0 0 0"] : evdevKeyPacket(code, value)
            lines += packet + ["sleep \(pause)"]
            expected += packet
        }
        lines += ["17 0 1", "0 0 0"]; expected += ["17 0 1", "0 0 0"]   // an LED
        try keys.keyboard.emit(lines)
        let reports = expected.filter { $0 == "0 0 0" }.count
        _ = evdevWait(seconds: 30) {
            evdevCount("SYN_REPORT", in: evdevFileText(nativeFile)) >= reports && evdevCount("SYN_REPORT", in: guest.text(output)) >= reports
        }
        try keys.keyboard.unplug()
        #expect(evdevWait(seconds: 30) { evdevFileText(nativeFile).contains("\nexit ") && guest.text(output).contains("\nexit ") },
                "\(guest.text(output))")
        let native = evdevFileText(nativeFile)
        #expect(native.contains("Input device name: \"Paradice test keyboard\""), "\(native)")
        #expect(evtestEvents(native) == expected, "\(native)")
        #expect(native.hasSuffix("evtest: error reading: No such device\nexit 1\n"), "\(native)")
        #expect(guest.text(output) == native, "\(guest.text(output))\n\(keys.frontend.log)")
    }

    /// A statically linked program (Programs/static-client.c, gcc -static: out of any preload's reach) reads
    /// the keyboard natively and in the guest VM at once: EVIOCGNAME, EVIOCGID, then blocking reads of two
    /// key packets, timestamps and all the same.
    @Test func aStaticProgramReadsTheNativeEvents() throws {
        let guest = try GuestVM.require()
        try staticClient(guest)
        let keys = try GuestVMKeyboard(guest, "gvm-static")
        let output = "gvm-static-\(getpid()).txt"
        defer { unlink(guest.share + "/" + output) }
        try keys.keyboard.startNative("/share/static-client evdev \(keys.node) 6", output: "static.txt")
        try guest.start("/share/static-client evdev \(keys.node) 6", output: output)
        let nativeFile = keys.keyboard.folder + "/static.txt"
        #expect(evdevWait(seconds: 60) { evdevFileText(nativeFile).contains("reading\n") && guest.text(output).contains("reading\n") },
                "\(evdevFileText(nativeFile))\n\(guest.text(output))")
        usleep(500_000)
        try keys.keyboard.emit(evdevKeyPacket(30, 1) + evdevKeyPacket(30, 0))
        #expect(evdevWait(seconds: 30) { evdevFileText(nativeFile).contains("exit ") && guest.text(output).contains("exit ") },
                "\(guest.text(output))")
        let native = evdevFileText(nativeFile)
        #expect(native.hasPrefix("name \"Paradice test keyboard\" bus 0x3 vendor 0x1209 product 0x5044 version 0x101\nreading\n"), "\(native)")
        #expect(evdevCount("\nevent ", in: native) == 6 && native.hasSuffix("exit 0\n"), "\(native)")
        #expect(guest.text(output) == native, "\(guest.text(output))")
    }

    /// busybox dd and od on the keyboard's node natively and in the guest VM at once: the same 144 bytes
    /// (six input_events, one per read as evdev wants whole events, timestamps included).
    @Test func busyboxReadsTheNativeBytes() throws {
        let guest = try GuestVM.require()
        let keys = try GuestVMKeyboard(guest, "gvm-od")
        let output = "gvm-od-\(getpid()).txt"
        defer { unlink(guest.share + "/" + output) }
        let od = "busybox dd if=\(keys.node) bs=24 count=6 2>/dev/null | busybox od -A d -t x1"
        try keys.keyboard.startNative(od, output: "od.txt")
        try guest.start(od, output: output)
        #expect(GuestVMKeyboard.opened(keys.node) { try guest.driver.native($0, timeout: 60) })
        #expect(GuestVMKeyboard.opened(keys.node) { try guest.run($0, timeout: 60) })
        usleep(500_000)
        try keys.keyboard.emit(evdevKeyPacket(48, 1) + evdevKeyPacket(48, 0))
        let nativeFile = keys.keyboard.folder + "/od.txt"
        #expect(evdevWait(seconds: 30) { evdevFileText(nativeFile).contains("exit ") && guest.text(output).contains("exit ") },
                "\(guest.text(output))")
        let native = evdevFileText(nativeFile)
        #expect(native.hasSuffix("0000144\nexit 0\n") && native.contains(" 01 00 30 00 01 00 00 00"), "\(native)")   // KEY_B (48 = 0x30)
        #expect(guest.text(output) == native, "\(guest.text(output))")
    }
}
}

/// Programs/static-client.c linked statically into both VMs' share folders.
func staticClient(_ guest: GuestVM) throws {
    let binary = guest.driver.folder + "/share/static-client"
    let built = try run("/usr/bin/gcc", ["-static", "-O1", "-o", binary, programSources + "/static-client.c"])
    guard built.status == 0 else { throw BackendFailure(log: "gcc -static static-client.c: \(built.output)") }
    let file = try run("/usr/bin/file", [binary])
    #expect(file.output.contains("statically linked"), "\(file.output)")
    unlink(guest.share + "/static-client")
    try FileManager.default.copyItem(atPath: binary, toPath: guest.share + "/static-client")
}
