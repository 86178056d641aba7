import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// evemu's lines that describe a device or an event, without its comments.
func evemuLines(_ text: String, events: Bool) -> [String] {
    text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && $0.hasPrefix("E: ") == events }
}

/// An event line's type, code and value ("E: 0.010000 0003 0000 1100 # …" → "0003 0000 1100").
func evemuEvent(_ line: String) -> String {
    line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst(2).prefix(3).joined(separator: " ")
}

extension DriverVMSuites {
@Suite("evdev: uinput devices made through Paradice")
struct Uinput {
    /// evemu-play (evemu-tools, with libevdev's uinput code: UI_GET_VERSION, UI_DEV_SETUP, UI_ABS_SETUP,
    /// UI_SET_*BIT, UI_SET_PROPBIT, UI_DEV_CREATE, UI_GET_SYSNAME, then write() of input_event records) runs
    /// here through Paradice with a recorded pen tablet. The device appears in the VM with the recorded
    /// description, natively read; the replayed stroke arrives there event by event; when the player
    /// exits the device goes away.
    @Test func evemuPlayMakesTheDeviceOnTheBackendAndItsEventsArriveThere() throws {
        let vm = try DriverVM.require()
        let recording = programSources + "/tablet.evemu"
        let recorded = try String(contentsOfFile: recording, encoding: .utf8)
        let output = NSTemporaryDirectory() + "paradice-evemu-play-\(getpid()).txt"
        defer { unlink(output) }
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let player = Process()
        player.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        player.arguments = ["run", "--backend", vm.endpoint, "--", "evemu-play", recording]
        let enter = Pipe()
        let file = FileHandle(forWritingAtPath: output)!
        player.standardInput = enter
        player.standardOutput = file
        player.standardError = file
        try player.run()
        try? file.close()
        defer { if player.isRunning { kill(player.processIdentifier, SIGKILL) }; player.waitUntilExit() }

        // "Paradice Test Tablet: /dev/input/eventN", found through the backend's sysfs (UI_GET_SYSNAME).
        #expect(evdevWait(seconds: 60) { evdevFileText(output).contains("Hit enter") }, "\(evdevFileText(output))")
        let announced = evdevFileText(output).split(separator: "\n").first.map(String.init) ?? ""
        let node = try #require(announced.components(separatedBy: "Paradice Test Tablet: ").last.flatMap {
            $0.hasPrefix("/dev/input/event") ? String($0.prefix { !$0.isWhitespace }) : nil
        }, "\(evdevFileText(output))")

        let described = try vm.native("evemu-describe \(node)")
        #expect(described.status == 0, "\(described.output)")
        #expect(evemuLines(described.output, events: false) == evemuLines(recorded, events: false), "\(described.output)")

        // A native recorder on the new node, then the replay.
        let share = vm.folder + "/share", tag = "uinput-\(getpid())"
        try? FileManager.default.removeItem(atPath: share + "/" + tag)
        try FileManager.default.createDirectory(atPath: share + "/" + tag, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: share + "/" + tag) }
        let record = share + "/" + tag + "/record.txt"
        let started = try vm.native("cd / && setsid sh -c 'timeout 120 stdbuf -oL evemu-record \(node) > /share/\(tag)/record.txt 2>&1' < /dev/null > /dev/null 2>&1 &")
        #expect(started.status == 0, "\(started.output)")
        #expect(evdevWait(seconds: 60) { evdevFileText(record).contains("A: 18") }, "\(evdevFileText(record))")
        usleep(300_000)   // evemu-record prints the description before it reads events
        enter.fileHandleForWriting.write(Data("\n".utf8))
        let expected = evemuLines(recorded, events: true).map(evemuEvent)
        _ = evdevWait(seconds: 60) { evemuLines(evdevFileText(record), events: true).count >= expected.count }
        #expect(evemuLines(evdevFileText(record), events: true).map(evemuEvent) == expected, "\(evdevFileText(record))")

        // Its end closes /dev/uinput on the backend: the device is destroyed there (and the recorder ends).
        player.terminate()
        player.waitUntilExit()
        #expect(evdevWait(seconds: 30) {
            (try? vm.native("grep -c 'Paradice Test Tablet' /proc/bus/input/devices").output.hasPrefix("0")) ?? false
        })
    }
}
}
