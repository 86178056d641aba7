import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A uinput keyboard made natively in the driver VM by Programs/evdev.py. The host drives it through files
/// in the VM's share folder (the exec channel serves one command at a time, and the keyboard must live
/// while clients in both places read it). Unplugged when the value goes away.
final class EvdevKeyboard {
    let vm: DriverVM
    /// Its folder in the share, on the host and in the VM.
    let folder: String, guestFolder: String
    private(set) var node = ""
    private var command = 1
    private var unplugged = false

    init(_ vm: DriverVM, _ name: String) throws {
        self.vm = vm
        let share = vm.folder + "/share"
        let tag = "evdev-\(name)-\(getpid())"
        (folder, guestFolder) = (share + "/" + tag, "/share/" + tag)
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: share + "/evdev.py")
        try FileManager.default.copyItem(atPath: programSources + "/evdev.py", toPath: share + "/evdev.py")
        try startNative("python3 /share/evdev.py keyboard \(guestFolder) 300", output: "keyboard.txt")
        let nodeFile = folder + "/node"
        guard evdevWait(seconds: 60, { FileManager.default.fileExists(atPath: nodeFile) }) else {
            throw BackendFailure(log: "no uinput keyboard in the VM: \(evdevFileText(folder + "/keyboard.txt"))")
        }
        node = evdevFileText(nodeFile).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts a shell command natively in the VM, in the background; its output and then "exit N" go to
    /// `output` in this keyboard's folder.
    func startNative(_ command: String, output: String) throws {
        let r = try vm.native("cd / && setsid sh -c '\(command); echo \"exit $?\"' > \(guestFolder)/\(output) 2>&1 < /dev/null &", timeout: 60)
        guard r.status == 0 else { throw BackendFailure(log: "could not start `\(command)` in the VM: \(r.output)") }
    }

    /// Has the keyboard write these lines ("TYPE CODE VALUE" or "sleep SECONDS") to uinput, and waits until it did.
    func emit(_ lines: [String]) throws { try send("emit\n" + lines.joined(separator: "\n")) }

    /// Destroys the device: its readers see the unplug.
    func unplug() throws {
        guard !unplugged else { return }
        unplugged = true
        try send("quit")
    }

    private func send(_ body: String) throws {
        let path = folder + "/cmd.\(command)"
        try body.write(toFile: path + ".tmp", atomically: false, encoding: .utf8)
        rename(path + ".tmp", path)
        defer { command += 1 }
        guard evdevWait(seconds: 60, { FileManager.default.fileExists(atPath: folder + "/ack.\(command)") }) else {
            throw BackendFailure(log: "the keyboard did not run command \(command): \(evdevFileText(folder + "/keyboard.txt"))")
        }
    }

    deinit { try? unplug() }
}

/// A client run on this machine through `paradice run`, in the background, its output to a file.
final class EvdevForwardedClient {
    let process = Process()
    let output: String

    init(_ vm: DriverVM, _ command: [String], output: String) throws {
        self.output = output
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        process.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        process.arguments = ["run", "--backend", vm.endpoint, "--plain-tcp", "--"] + command
        let file = FileHandle(forWritingAtPath: output)!
        process.standardOutput = file
        process.standardError = file
        process.standardInput = FileHandle.nullDevice
        defer { try? file.close() }   // the client has its own copy
        try process.run()
    }

    var text: String { withoutThePlainTCPWarning(evdevFileText(output)) }

    /// Waits for the end (killing the client after `seconds`); its exit status.
    func finish(seconds: Double = 60) -> Int32 {
        if !evdevWait(seconds: seconds, { !process.isRunning }) { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }
}

func evdevFileText(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

func evdevWait(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

func evdevCount(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

/// One key press or release as a keyboard reports it: the scan code, the key, the end of the packet.
func evdevKeyPacket(_ code: Int, _ value: Int) -> [String] { ["4 4 \(0x70000 + code)", "1 \(code) \(value)", "0 0 0"] }

/// evtest's event lines as (type, code, value); SYN_REPORT is (0, 0, 0) and MSC_SCAN's value is hexadecimal.
func evtestEvents(_ output: String) -> [String] {
    output.split(separator: "\n").filter { $0.hasPrefix("Event: time ") }.map { line -> String in
        if line.hasSuffix("-------------- SYN_REPORT ------------") { return "0 0 0" }
        let words = line.split(separator: " ")
        guard let t = words.firstIndex(of: "type"), let c = words.firstIndex(of: "code"), let v = words.firstIndex(of: "value"),
              let type = Int(words[t + 1]), let code = Int(words[c + 1].trimmingCharacters(in: .punctuationCharacters))
        else { return String(line) }
        let value = type == 4 && code == 4 ? Int(words[v + 1], radix: 16) : Int(words[v + 1])
        return "\(type) \(code) \(value.map(String.init) ?? String(words[v + 1]))"
    }
}

extension DriverVMSuites {
@Suite("evdev: a uinput keyboard")
struct Evdev {
    static let testing = "Testing ... (interrupt to exit)"

    /// evtest natively in the VM and evtest through Paradice read the same keyboard at the same time: the
    /// same description, the same events with the same kernel timestamps, the same end when it is unplugged.
    @Test func evtestGivesTheNativeDescriptionAndKeyEvents() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "evtest")
        // evtest probes for a grab (EVIOCGRAB 1 then 0) right after "Testing ...": one at a time. The release
        // has the console's keyboard handler set the LEDs to the console's, so LEDs change only once both run.
        try keyboard.startNative("evtest \(keyboard.node)", output: "evtest.txt")
        let nativeFile = keyboard.folder + "/evtest.txt"
        #expect(evdevWait(seconds: 60) { evdevFileText(nativeFile).contains(Self.testing) }, "\(evdevFileText(nativeFile))")
        usleep(500_000)
        let forwarded = try EvdevForwardedClient(vm, ["evtest", keyboard.node], output: NSTemporaryDirectory() + "paradice-evtest-\(getpid()).txt")
        defer { unlink(forwarded.output) }
        #expect(evdevWait(seconds: 60) { forwarded.text.contains(Self.testing) }, "\(forwarded.text)")
        usleep(500_000)

        // "Paradice!" typed with rollover, an autorepeat, LEDs, and uneven pauses.
        let shift = 42, p = 25, a = 30, r = 19, d = 32, i = 23, c = 46, e = 18, one = 2
        let strokes: [(Int, Int, Double)] = [
            (shift, 1, 0.03), (p, 1, 0.12), (p, 0, 0.01), (shift, 0, 0.2), (a, 1, 0.05), (r, 1, 0.0), (a, 0, 0.08),
            (r, 0, 0.15), (a, 1, 0.02), (a, 2, 0.02), (a, 2, 0.3), (a, 0, 0.04), (d, 1, 0.0), (d, 0, 0.11), (i, 1, 0.06),
            (i, 0, 0.01), (c, 1, 0.09), (c, 0, 0.25), (e, 1, 0.0), (e, 0, 0.07), (shift, 1, 0.13), (one, 1, 0.05),
            (one, 0, 0.02), (shift, 0, 0.0),
        ]
        var lines: [String] = [], expected: [String] = []
        for (index, (code, value, pause)) in strokes.enumerated() {
            let packet = value == 2 ? ["1 \(code) 2", "0 0 0"] : evdevKeyPacket(code, value)
            lines += packet + ["sleep \(pause)"]
            expected += packet
            if index == 9 { lines += ["17 0 1", "0 0 0"]; expected += ["17 0 1", "0 0 0"] }   // Num Lock's LED
            if index == 17 { lines += ["17 1 1", "0 0 0"]; expected += ["17 1 1", "0 0 0"] }  // Caps Lock's
        }
        try keyboard.emit(lines)
        let reports = expected.filter { $0 == "0 0 0" }.count
        _ = evdevWait(seconds: 30) {
            evdevCount("SYN_REPORT", in: evdevFileText(nativeFile)) >= reports && evdevCount("SYN_REPORT", in: forwarded.text) >= reports
        }
        try keyboard.unplug()
        #expect(evdevWait(seconds: 30) { evdevFileText(nativeFile).contains("\nexit ") }, "\(evdevFileText(nativeFile))")
        let status = forwarded.finish(seconds: 30)

        let native = evdevFileText(nativeFile)
        let description = native.components(separatedBy: Self.testing)[0]
        #expect(description.contains("Input device name: \"Paradice test keyboard\""), "\(native)")
        #expect(description.contains("Input device ID: bus 0x3 vendor 0x1209 product 0x5044 version 0x101"))
        #expect(description.contains("Event code 1 (LED_CAPSL) state 0"))
        #expect(description.contains("Event code 88 (KEY_F12)"))
        #expect(evtestEvents(native) == expected, "\(native)")
        #expect(native.hasSuffix("evtest: error reading: No such device\nexit 1\n"), "\(native)")
        // Byte for byte, timestamps included: both read the same kernel events.
        #expect(forwarded.text + "exit \(status)\n" == native, "\(forwarded.text)")
        #expect(!native.contains("grabbed by another process"))
    }

    /// The same reader natively and through Paradice: reads of less than one event fail with EINVAL, two and a
    /// half events give two, an empty queue gives EAGAIN, select, poll, epoll and a blocking read all sleep
    /// until the next event and wake with it, and the unplug is reported as on the device.
    @Test func readsAndWakeUpsMatchNative() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "reads")
        let scratch = NSTemporaryDirectory() + "paradice-evdev-\(getpid())"
        try? FileManager.default.removeItem(atPath: scratch)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try keyboard.startNative("python3 /share/evdev.py reads \(keyboard.node) \(keyboard.guestFolder) native", output: "reads.txt")
        let forwarded = try EvdevForwardedClient(vm, ["/usr/bin/python3", programSources + "/evdev.py", "reads", keyboard.node, scratch, "forwarded"],
                                            output: scratch + "/reads.txt")
        let nativeFile = keyboard.folder + "/reads.txt"
        // A and B pressed then released, one packet (scan code, key, report) per wait.
        let packets = [evdevKeyPacket(30, 1), evdevKeyPacket(30, 0), evdevKeyPacket(48, 1), evdevKeyPacket(48, 0)]
        for (wait, packet) in zip(["select", "poll", "epoll", "read"], packets) {
            let bothWaiting = evdevWait(seconds: 60) {
                FileManager.default.fileExists(atPath: keyboard.folder + "/native.\(wait)")
                    && FileManager.default.fileExists(atPath: scratch + "/forwarded.\(wait)")
            }
            #expect(bothWaiting, "\(wait): \(evdevFileText(nativeFile))\n\(forwarded.text)")
            usleep(1_000_000)   // both are asleep by now
            try keyboard.emit(packet)
        }
        _ = evdevWait(seconds: 30) { evdevFileText(nativeFile).contains("done\n") && forwarded.text.contains("done\n") }
        try keyboard.unplug()
        #expect(evdevWait(seconds: 30) { evdevFileText(nativeFile).contains("\nexit ") })
        let status = forwarded.finish(seconds: 30)

        let lines = { (output: String) in output.split(separator: "\n").map(String.init) }
        let native = lines(evdevFileText(nativeFile)), through = lines(forwarded.text) + ["exit \(status)"]
        let timeless = { (output: [String]) in output.filter { !$0.hasPrefix("elapsed ") } }
        let a = "4:4:\(0x70000 + 30) 1:30", b = "4:4:\(0x70000 + 48) 1:48"
        var expected = ["read 23 bytes: EINVAL", "read 0 bytes: EAGAIN", "read 24 bytes: EAGAIN"]
        expected += ["select before the event: not ready", "select woke: readable", "read 0 bytes: 0 bytes "]
        expected += ["read 60 bytes: 48 bytes \(a):1", "read 60 bytes: 24 bytes 0:0:0", "read 24 bytes: EAGAIN"]
        expected += ["poll before the event: not ready", "poll woke: 0x1", "read 1536 bytes: 72 bytes \(a):0 0:0:0"]
        expected += ["epoll before the event: not ready", "epoll woke: 0x1", "read 1536 bytes: 72 bytes \(b):1 0:0:0"]
        expected += ["read before the event: not ready", "read woke: \(b):0", "read 60 bytes: 24 bytes 0:0:0"]
        expected += ["done", "unplug poll: 0x18", "read 24 bytes: ENODEV", "exit 0"]
        #expect(timeless(native) == expected, "\(native.joined(separator: "\n"))")
        // The same through Paradice but for the time each wait took; every wait slept until the event came.
        #expect(timeless(through) == timeless(native), "\(through.joined(separator: "\n"))")
        for output in [native, through] {
            let waits = output.filter { $0.hasPrefix("elapsed ") }
            #expect(waits.count == 4, "\(output)")
            for line in waits {
                let seconds = Double(line.split(separator: " ").last ?? "") ?? 0
                #expect(seconds >= 0.9 && seconds < 30, "\(line)")
            }
        }
    }

    /// EVIOCGRAB on one open file answers as on the device: grab, EBUSY on a second grab, release, EINVAL on a
    /// second release.
    @Test func grabAndReleaseAnswerAsNative() throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, "grab")
        let native = try vm.native("python3 /share/evdev.py grab \(keyboard.node)", timeout: 60)
        let forwarded = try vm.forwarded(["/usr/bin/python3", programSources + "/evdev.py", "grab", keyboard.node], timeout: 60)
        #expect(native.output == "EVIOCGRAB 1: 0\nEVIOCGRAB 1: EBUSY\nEVIOCGRAB 0: 0\nEVIOCGRAB 0: EINVAL\n", "\(native.output)")
        #expect(forwarded.output == native.output)
        #expect(forwarded.status == 0 && native.status == 0)
    }

    /// A guest's grab belongs to that guest: other guests and native clients cannot grab and receive nothing
    /// while it holds it; it ends when the guest exits, and when its connection is cut (the process killed).
    @Test(arguments: ["exits", "is killed"])
    func aGuestsGrabExcludesOthersUntilItGoesAway(_ ending: String) throws {
        let vm = try DriverVM.require()
        let keyboard = try EvdevKeyboard(vm, ending == "exits" ? "hold-exit" : "hold-kill")
        let scratch = NSTemporaryDirectory() + "paradice-evdev-grab-\(getpid())-\(ending == "exits" ? "exit" : "kill")"
        try? FileManager.default.removeItem(atPath: scratch)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let script = ["/usr/bin/python3", programSources + "/evdev.py"]
        let exists = { (name: String) in FileManager.default.fileExists(atPath: scratch + "/" + name) }

        let holder = try EvdevForwardedClient(vm, script + ["hold", keyboard.node, scratch, "A"], output: scratch + "/A.txt")
        #expect(evdevWait(seconds: 60) { exists("A.grabbed") }, "\(holder.text)")
        let other = try EvdevForwardedClient(vm, script + ["wait-grab", keyboard.node, scratch, "B"], output: scratch + "/B.txt")
        #expect(evdevWait(seconds: 60) { exists("B.ready") }, "\(other.text)")
        // Neither natively nor from a third guest: EBUSY to grab, EINVAL to release a grab one does not hold.
        let native = try vm.native("python3 /share/evdev.py grab \(keyboard.node)", timeout: 60)
        let third = try vm.forwarded(script + ["grab", keyboard.node], timeout: 60)
        #expect(native.output == "EVIOCGRAB 1: EBUSY\nEVIOCGRAB 1: EBUSY\nEVIOCGRAB 0: EINVAL\nEVIOCGRAB 0: EINVAL\n", "\(native.output)")
        #expect(third.output == native.output)

        // Only the holder gets the events.
        try keyboard.emit(evdevKeyPacket(30, 1) + evdevKeyPacket(30, 0))
        #expect(evdevWait(seconds: 30) { exists("A.read") }, "\(holder.text)")
        try "".write(toFile: scratch + "/B.check", atomically: true, encoding: .utf8)
        #expect(evdevWait(seconds: 30) { exists("B.checked") }, "\(other.text)")

        if ending == "exits" {
            try "".write(toFile: scratch + "/A.exit", atomically: true, encoding: .utf8)
            #expect(holder.finish(seconds: 30) == 0)
        } else {
            kill(holder.process.processIdentifier, SIGKILL)
            _ = holder.finish(seconds: 30)
        }
        try "".write(toFile: scratch + "/B.regrab", atomically: true, encoding: .utf8)
        #expect(other.finish(seconds: 60) == 0)
        try keyboard.unplug()

        #expect(holder.text == "grab: 0\npoll: 0x1\nread 1536 bytes: 144 bytes 4:4:\(0x70000 + 30) 1:30:1 0:0:0 4:4:\(0x70000 + 30) 1:30:0 0:0:0\n")
        #expect(other.text == "grab: EBUSY\nread 1536 bytes: EAGAIN\ngrab once the holder is gone: 0\n")
    }
}
}
