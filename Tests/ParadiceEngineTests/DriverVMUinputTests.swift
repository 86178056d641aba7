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
        player.arguments = ["run", "--backend", vm.endpoint, "--plain-tcp", "--", "evemu-play", recording]
        let enter = Pipe()
        let file = FileHandle(forWritingAtPath: output)!
        player.standardInput = enter
        player.standardOutput = file
        player.standardError = file
        try player.run()
        try? file.close()
        defer { if player.isRunning { kill(player.processIdentifier, SIGKILL) }; player.waitUntilExit() }

        // "Paradice Test Tablet: /dev/input/eventN", found through the backend's sysfs (UI_GET_SYSNAME).
        #expect(evdevWait(seconds: 60) { playerText(output).contains("Hit enter") }, "\(playerText(output))")
        let announced = playerText(output).split(separator: "\n").first.map(String.init) ?? ""
        let node = try #require(announced.components(separatedBy: "Paradice Test Tablet: ").last.flatMap {
            $0.hasPrefix("/dev/input/event") ? String($0.prefix { !$0.isWhitespace }) : nil
        }, "\(playerText(output))")

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
        // SIGKILL: it waits for another Enter, and it inherits this process's blocked signals.
        kill(player.processIdentifier, SIGKILL)
        player.waitUntilExit()
        #expect(evdevWait(seconds: 30) {
            (try? vm.native("grep -c 'Paradice Test Tablet' /proc/bus/input/devices").output.hasPrefix("0")) ?? false
        })
    }

    /// The force-feedback protocol: Programs/uinputff.c makes a rumble pad through Paradice and serves its
    /// requests (read of EV_UINPUT events, UI_BEGIN/END_FF_UPLOAD, UI_BEGIN/END_FF_ERASE); a client natively
    /// in the VM (Programs/ffclient.py) uploads, updates, plays and erases effects on the pad's node, and
    /// each of its calls returns once the forwarded program has answered.
    @Test func forceFeedbackRequestsAreServedThroughParadice() throws {
        let vm = try DriverVM.require()
        let binary = NSTemporaryDirectory() + "paradice-uinputff-\(getpid())"
        defer { unlink(binary) }
        let built = try run("/usr/bin/gcc", ["-O1", "-o", binary, programSources + "/uinputff.c"])
        #expect(built.status == 0, "\(built.output)")
        let output = NSTemporaryDirectory() + "paradice-uinputff-\(getpid()).txt"
        defer { unlink(output) }
        let pad = try EvdevForwardedClient(vm, [binary, "120"], output: output)
        #expect(evdevWait(seconds: 60) { pad.text.contains("created input") }, "\(pad.text)")
        let sysname = pad.text.split(separator: "\n").first { $0.hasPrefix("created ") }.map { String($0.dropFirst(8)) } ?? ""
        let found = try vm.native("ls /sys/devices/virtual/input/\(sysname) | grep '^event'")
        let node = "/dev/input/" + found.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(found.status == 0 && node.count > "/dev/input/event".count, "\(found.output)")
        #expect(try vm.native("cat /sys/devices/virtual/input/\(sysname)/name").output == "Paradice FF pad\n")

        try? FileManager.default.removeItem(atPath: vm.folder + "/share/ffclient.py")
        try FileManager.default.copyItem(atPath: programSources + "/ffclient.py", toPath: vm.folder + "/share/ffclient.py")
        let client = try vm.native("python3 /share/ffclient.py \(node)", timeout: 120)
        #expect(client.output == "rumble uploaded as 0\nsine uploaded as 1\nrumble updated as 0\nrumble erased\nclosed\n", "\(client.output)")
        #expect(pad.finish(seconds: 60) == 0, "\(pad.text)")
        let served = pad.text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("created ") }
        #expect(served == [
            "upload: effect type 0x50 id 0 rumble 32768/16384 length 500 old type 0 id 0 length 0",
            "upload: effect type 0x51 id 1 periodic waveform 0x5a period 100 magnitude 16384 custom_len 0 length 1000 old type 0 id 0 length 0",
            "upload: effect type 0x50 id 0 rumble 4096/8192 length 250 old type 0x50 id 0 rumble 32768/16384 length 500",
            "play: effect 1 value 1",
            "play: effect 1 value 0",
            "play: effect 0 value 0",   // EVIOCRMFF: the kernel stops an effect before it erases it
            "erase: effect 0",
            "play: effect 1 value 0",   // the close erases the client's other effect
            "erase: effect 1",
            "destroyed",
        ], "\(pad.text)")
    }
}
}

/// What the player printed, without `paradice run --plain-tcp`'s own line.
private func playerText(_ path: String) -> String { withoutThePlainTCPWarning(evdevFileText(path)) }
