import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The samples of a sine tone, one channel.
func toneSamples(hertz: Double, seconds: Double, rate: Int = 48000, amplitude: Double = 12000) -> [Int16] {
    (0..<Int(seconds * Double(rate))).map { Int16(amplitude * sin(2 * Double.pi * hertz * Double($0) / Double(rate))) }
}

/// A tone as a 16-bit stereo WAV file, the same samples in both channels.
func writeTone(_ path: String, _ samples: [Int16], rate: Int = 48000) throws {
    var data = Data(capacity: 44 + samples.count * 4)
    func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { data.append(contentsOf: $0) } }
    func u16(_ v: Int) { withUnsafeBytes(of: UInt16(v).littleEndian) { data.append(contentsOf: $0) } }
    data.append(contentsOf: Array("RIFF".utf8)); u32(36 + samples.count * 4); data.append(contentsOf: Array("WAVEfmt ".utf8))
    u32(16); u16(1); u16(2); u32(rate); u32(rate * 4); u16(4); u16(16)
    data.append(contentsOf: Array("data".utf8)); u32(samples.count * 4)
    for v in samples {
        withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0); data.append(contentsOf: $0) }
    }
    try data.write(to: URL(fileURLWithPath: path))
}

/// A captured WAV file against the tone that was played into it. snd-aloop copies samples unchanged, so
/// the tone must be there sample for sample, in order, up to the first defect: a lost, repeated or damaged
/// sample, or the capture's end. Silence snd-aloop inserts when a stream starts late or stalls is counted,
/// not a defect. The tests accept a defect only in a stream's last 300 ms: as aplay drains, snd-aloop
/// natively loses the last 50-120 ms under TCG (192 samples of silence, then older contents of the ring).
struct Capture: CustomStringConvertible {
    var channels = 0, rate = 0, bits = 0
    /// Tone samples found in order before the first defect, of `expected`; silence among them, in samples.
    var delivered = 0, expected = 0, silence = 0
    /// Where the first sample that is neither the tone's next one nor silence sits, in samples of the tone.
    var mismatch: Int?
    var rms = 0.0

    init(_ path: String, tone: [Int16]) {
        expected = tone.count
        guard let bytes = try? [UInt8](Data(contentsOf: URL(fileURLWithPath: path))), bytes.count > 44,
              bytes[0..<4].elementsEqual("RIFF".utf8) else { return }
        func u32(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24 }
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        var at = 12
        var samples: [Int16] = []   // the first channel
        while at + 8 <= bytes.count {
            let id = String(decoding: bytes[at..<(at + 4)], as: UTF8.self), size = u32(at + 4)
            if id == "fmt " { (channels, rate, bits) = (u16(at + 10), u32(at + 12), u16(at + 22)) }
            if id == "data", channels > 0, bits == 16 {
                let end = min(bytes.count, at + 8 + size), step = 2 * channels
                samples = stride(from: at + 8, to: end - 1, by: step).map { Int16(bitPattern: UInt16(u16($0))) }
            }
            at += 8 + size + (size & 1)
        }
        // The tone starts where its first 32 samples are.
        let head = Array(tone.prefix(32))
        guard head.count == 32, samples.count >= 32,
              let start = (0...(samples.count - 32)).first(where: { samples[$0..<($0 + 32)].elementsEqual(head) })
        else { return }
        var c = start, t = 0, power = 0.0
        while t < tone.count && c < samples.count {
            if samples[c] == 0 && c + 1 < samples.count && samples[c + 1] == 0 {
                // A run of zeros: the tone never holds two in a row, so it is silence, next to at most one
                // zero of the tone's own.
                var run = 0
                while c + run < samples.count && samples[c + run] == 0 { run += 1 }
                c += run
                if tone[t] == 0 { t += 1; run -= 1 }
                silence += run
            } else if samples[c] == tone[t] {
                power += Double(samples[c]) * Double(samples[c])
                c += 1; t += 1
            } else {
                mismatch = t
                break
            }
        }
        delivered = t
        rms = t > 0 ? (power / Double(t)).squareRoot() : 0
    }

    /// Every sample of the tone arrived, in order.
    var isWhole: Bool { expected > 0 && delivered == expected && mismatch == nil }

    /// Whole but for a stream's last `seconds`, and with little silence inside.
    func isWhole(butTheLast seconds: Double) -> Bool {
        rate > 0 && expected > 0 && Double(expected - delivered) <= seconds * Double(rate) && silence < rate / 10
    }

    var description: String {
        let ms = { (samples: Int) in rate > 0 ? "\(samples * 1000 / rate) ms" : "\(samples) samples" }
        return "\(channels) ch, \(rate) Hz, \(bits) bit; \(delivered) of \(expected) tone samples in order, rms \(Int(rms)), "
            + "\(ms(silence)) of silence inside" + (mismatch.map { "; the first wrong sample \(ms($0)) into the tone" } ?? "")
    }
}

/// The comparison the loopback tests rely on, on files made here: it finds the tone whole through inserted
/// silence and a stale tail, and finds a lost, a repeated and a changed sample.
@Test func aCaptureIsComparedWithTheToneSampleForSample() throws {
    let tone = toneSamples(hertz: 440, seconds: 0.5)
    let path = NSTemporaryDirectory() + "paradice-capture-check-\(getpid()).wav"
    defer { unlink(path) }
    func check(_ samples: [Int16]) throws -> Capture {
        try writeTone(path, samples)
        return Capture(path, tone: tone)
    }
    let silence = [Int16](repeating: 0, count: 500)
    let plain = try check(silence + tone + silence)
    #expect(plain.isWhole && plain.silence == 0 && plain.channels == 2 && plain.rate == 48000, "\(plain)")
    // Silence inside the tone, also right after one of its own zeros (every 600th sample is one).
    var withGaps = silence + tone[..<5000]
    withGaps += silence + tone[5000..<6001]
    withGaps += silence + tone[6001...]
    withGaps += tone[..<700]
    let gaps = try check(withGaps)
    #expect(gaps.isWhole && gaps.silence == 1000, "\(gaps)")
    let lost = try check(silence + tone[..<9000] + Array(tone[9010...]) + silence)
    #expect(!lost.isWhole && lost.mismatch == 9000, "\(lost)")
    let repeated = try check(silence + tone[..<9000] + Array(tone[8000...]) + silence)
    #expect(!repeated.isWhole && repeated.mismatch == 9000, "\(repeated)")
    var changed = tone
    changed[12345] &+= 1
    let damaged = try check(silence + changed + silence)
    #expect(!damaged.isWhole && damaged.mismatch == 12345, "\(damaged)")
    let short = try check(silence + tone.dropLast(100))
    #expect(!short.isWhole && short.mismatch == nil && short.delivered == tone.count - 100, "\(short)")
    #expect(short.isWhole(butTheLast: 0.01) && !short.isWhole(butTheLast: 0.001))
    // A stream's end as snd-aloop gives it: a little silence, then older contents of the ring.
    let drained = try check(silence + tone[..<20000] + [Int16](repeating: 0, count: 192) + Array(tone[576..<3000]) + silence)
    #expect(drained.delivered == 20000 && drained.mismatch == 20000 && drained.isWhole(butTheLast: 0.1), "\(drained)")
    #expect(!lost.isWhole(butTheLast: 0.3) && !repeated.isWhole(butTheLast: 0.3) && !damaged.isWhole(butTheLast: 0.2))
}

/// Lines in which alsa-utils report an xrun.
func xruns(_ output: String) -> Int {
    output.split(separator: "\n").filter { $0.contains("underrun!!!") || $0.contains("overrun!!!") }.count
}

extension DriverVMSuites {
@Suite("ALSA audio: snd-dummy and snd-aloop")
struct ALSA {
    /// A 2-second 440 Hz tone.
    private static let samples = toneSamples(hertz: 440, seconds: 2)

    /// The tone as a file in the VM's share folder: the same file for the host and the VM.
    private static func tone(_ vm: DriverVM) throws -> (host: String, vm: String) {
        let name = "paradice-tone-\(getpid()).wav"
        try writeTone(vm.folder + "/share/" + name, samples)
        return (vm.folder + "/share/" + name, "/share/" + name)
    }

    /// Runs `native` in the VM while `forwarded` runs on the host, `delay` seconds later.
    private static func together(_ vm: DriverVM, native: String, forwarded: [String], delay: Double)
        throws -> (native: (status: Int32, output: String), forwarded: (status: Int32, output: String))
    {
        nonisolated(unsafe) var inVM: Result<(status: Int32, output: String), Error> = .failure(CancellationError())
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            inVM = Result { try vm.native(native, timeout: 120) }
            done.signal()
        }
        usleep(UInt32(delay * 1_000_000))
        let host = try vm.forwarded(forwarded, timeout: 120)
        done.wait()
        return (try inVM.get(), host)
    }

    @Test func cardListsMatchNative() throws {
        let vm = try DriverVM.require()
        for program in ["aplay", "arecord"] {
            let native = try vm.native("\(program) -l")
            let forwarded = try vm.forwarded([program, "-l"])
            #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)")
            #expect(native.output.contains("card 1: Loopback"), "\(native.output)")
            #expect(forwarded.output == native.output, "\(program) -l")
        }
    }

    @Test func aToneFromTheHostIsCapturedInTheVM() throws {
        let vm = try DriverVM.require()
        let tone = try Self.tone(vm)
        let captured = "paradice-capture-\(getpid()).wav"
        defer { unlink(tone.host); unlink(vm.folder + "/share/" + captured) }
        typealias Output = (status: Int32, output: String)
        typealias Attempt = (run: (native: Output, forwarded: Output), capture: Capture)
        for access in [[], ["-M"]] {   // read/write transfers, then the mirrored mmap buffer
            let (run, capture) = try unlessTheHostWasBusy(
                "aplay \(access) from the host",
                failed: { (a: Attempt) in xruns(a.run.forwarded.output) + xruns(a.run.native.output) > 0 || !a.capture.isWhole(butTheLast: 0.3) },
                disturbed: { (a: Attempt) in xruns(a.run.native.output) > 0 }
            ) { () throws -> Attempt in
                let run = try Self.together(vm, native: "arecord -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -d 6 /share/\(captured)",
                                            forwarded: ["aplay"] + access + ["-D", "hw:Loopback,0,0", tone.host], delay: 2.5)
                return (run: run, capture: Capture(vm.folder + "/share/" + captured, tone: Self.samples))
            }
            #expect(run.native.status == 0 && run.forwarded.status == 0, "\(run.native.output)\n\(run.forwarded.output)")
            #expect(capture.channels == 2 && capture.rate == 48000 && capture.bits == 16, "\(access) \(capture)")
            #expect(capture.isWhole(butTheLast: 0.3) && capture.rms > 8000, "\(access) \(capture)")
            #expect(xruns(run.forwarded.output) == 0 && xruns(run.native.output) == 0, "\(run.forwarded.output)\n\(run.native.output)")
        }
    }

    @Test func aToneFromTheVMIsCapturedOnTheHost() throws {
        let vm = try DriverVM.require()
        let tone = try Self.tone(vm)
        let captured = NSTemporaryDirectory() + "paradice-capture-\(getpid()).wav"
        defer { unlink(tone.host); unlink(captured) }
        typealias Output = (status: Int32, output: String)
        let (played, recorded, capture) = try unlessTheHostWasBusy(
            "arecord on the host",
            failed: { (run: (played: Output, recorded: Output, capture: Capture)) in
                xruns(run.recorded.output) + xruns(run.played.output) > 0 || !run.capture.isWhole(butTheLast: 0.3)
            },
            disturbed: { (run: (played: Output, recorded: Output, capture: Capture)) in xruns(run.played.output) > 0 }
        ) { () throws -> (played: Output, recorded: Output, capture: Capture) in
            // The capture starts first: the host's arecord is up well before the VM's aplay begins.
            nonisolated(unsafe) var played: Output = (-1, "")
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                usleep(2_500_000)
                played = (try? vm.native("aplay -D hw:Loopback,0,0 \(tone.vm)", timeout: 120)) ?? (-1, "exec failed")
                done.signal()
            }
            let recorded = try vm.forwarded(["arecord", "-D", "hw:Loopback,1,0", "-f", "S16_LE", "-r", "48000", "-c", "2", "-d", "8", captured], timeout: 120)
            done.wait()
            return (played: played, recorded: recorded, capture: Capture(captured, tone: Self.samples))
        }
        #expect(played.status == 0 && recorded.status == 0, "\(played.output)\n\(recorded.output)")
        #expect(capture.channels == 2 && capture.rate == 48000 && capture.bits == 16, "\(capture)")
        #expect(capture.isWhole(butTheLast: 0.3) && capture.rms > 8000, "\(capture)")
        #expect(xruns(recorded.output) == 0 && xruns(played.output) == 0, "\(recorded.output)\n\(played.output)")
    }

    @Test func speakerTestCompletesOnDummy() throws {
        let vm = try DriverVM.require()
        let lines = { (text: String) in text.split(separator: "\n").filter { !$0.hasPrefix("Time per period") } }
        typealias Output = (status: Int32, output: String)
        let (native, forwarded) = try unlessTheHostWasBusy(
            "speaker-test", failed: { (r: (Output, Output)) in r.0.status != 0 || r.1.status != 0 || lines(r.0.output) != lines(r.1.output) }
        ) { () throws -> (Output, Output) in
            (try vm.native("speaker-test -D hw:Dummy,0,0 -c 2 -l 1"),
             try vm.forwarded(["speaker-test", "-D", "hw:Dummy,0,0", "-c", "2", "-l", "1"]))
        }
        #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)")
        #expect(lines(forwarded.output) == lines(native.output))
        #expect(forwarded.output.contains("1 - Front Right"))
    }

    @Test func xrunsAreNoMoreFrequentThanNative() throws {
        let vm = try DriverVM.require()
        let tone = try Self.tone(vm)
        defer { unlink(tone.host) }
        // The clients' own buffer sizes (half a second): with 85 ms buffers, the forwarded capture on the
        // shared 2-core host saw 0-2 overruns in 3 s where the native one saw none (BENCHMARKS.md).
        let play = ["aplay", "-D", "hw:Dummy,0,0"]
        let record = ["arecord", "-D", "hw:Dummy,0,0", "-f", "S16_LE", "-r", "48000", "-c", "2", "-d", "3", "/dev/null"]
        for (what, native, forwarded) in [("aplay", (play + [tone.vm]).joined(separator: " "), play + [tone.host]),
                                          ("arecord", record.joined(separator: " "), record)] {
            typealias Output = (status: Int32, output: String)
            let (n, f) = try unlessTheHostWasBusy(what, failed: { (r: (Output, Output)) in xruns(r.1.output) > xruns(r.0.output) }) { () throws -> (Output, Output) in
                (try vm.native(native), try vm.forwarded(forwarded))
            }
            #expect(n.status == 0 && f.status == 0, "\(n.output)\n\(f.output)")
            #expect(xruns(f.output) <= xruns(n.output), "\(what): \(f.output)")
        }
    }

    /// Two guests on one PCM device: each open file is a substream of its own, as for two programs of the
    /// VM. While guest A plays into hw:Loopback,0,0, guest B's aplay of that subdevice is EBUSY, as a VM
    /// program's is, and B's aplay of hw:Loopback,0,2 plays into the substream it asked for (not the first
    /// free one: alsa-lib names it through the control device, SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE).
    @Test func twoGuestsGetSubstreamsOfTheirOwn() throws {
        let vm = try DriverVM.require()
        @Sendable func aplay(_ device: String, seconds: Int) -> String {
            "aplay -D \(device) -t raw -f S16_LE -r 48000 -c 2 -d \(seconds) /dev/zero; echo status $?"
        }
        let status = { (sub: Int) in (try? vm.native("cat /proc/asound/card1/pcm0p/sub\(sub)/status").output) ?? "" }
        let a = Background { try vm.forwarded(["sh", "-c", aplay("hw:Loopback,0,0", seconds: 20)], timeout: 120) }
        var holding = false
        for _ in 0..<600 where !holding {
            holding = status(0).contains("RUNNING")
            if !holding { usleep(100_000) }
        }
        #expect(holding, "guest A never played: \(status(0))")
        let native = try vm.native(aplay("hw:Loopback,0,0", seconds: 1), timeout: 120)
        let b = try vm.forwarded(["sh", "-c", aplay("hw:Loopback,0,0", seconds: 1)], timeout: 120)
        #expect(native.output.contains("Device or resource busy") && native.output.contains("status 1"), "\(native.output)")
        #expect(b.output.contains("Device or resource busy") && b.output.contains("status 1"), "\(b.output)")
        let other = Background { try vm.forwarded(["sh", "-c", aplay("hw:Loopback,0,2", seconds: 3)], timeout: 120) }
        var playing = false
        for _ in 0..<300 where !playing {
            playing = status(2).contains("RUNNING")
            if !playing { usleep(100_000) }
        }
        #expect(playing && !status(1).contains("RUNNING"), "guest B's aplay of subdevice 2: \(status(2)) \(status(1))")
        let otherRun = other.wait()
        #expect(otherRun.output.contains("status 0"), "\(otherRun.output)")
        let aRun = a.wait()
        #expect(aRun.output.contains("status 0"), "\(aRun.output)")
    }

    @Test func refusedCallsGetTheDriversErrno() throws {
        let vm = try DriverVM.require()
        let binary = vm.folder + "/share/alsaraw"
        let built = try run("/usr/bin/gcc", ["-O1", "-o", binary, programSources + "/alsaraw.c"])
        #expect(built.status == 0, "\(built.output)")
        let native = try vm.native("/share/alsaraw")
        let forwarded = try vm.forwarded([binary])
        #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)")
        #expect(native.output.contains("WRITEI before HW_PARAMS: -1 File descriptor in bad state"), "\(native.output)")
        #expect(native.output.contains("WRITEI from an unmapped buffer: -1 Bad address"), "\(native.output)")
        #expect(forwarded.output == native.output)
        // The backend is still there for the next guest.
        #expect(try vm.forwarded(["aplay", "-l"]).status == 0)
    }

    @Test func mixerControlsListAndSet() throws {
        let vm = try DriverVM.require()
        for card in ["0", "1"] {
            let native = try vm.native("amixer -c \(card) contents")
            let forwarded = try vm.forwarded(["amixer", "-c", card, "contents"])
            #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)")
            #expect(forwarded.output == native.output, "amixer -c \(card) contents")
        }
        let set = try vm.forwarded(["amixer", "-c", "0", "cset", "name=Master Volume", "42,17"])
        #expect(set.status == 0 && set.output.contains("values=42,17"), "\(set.output)")
        #expect(try vm.native("amixer -c 0 cget name='Master Volume'").output.contains(": values=42,17"))

        // alsactl's state file: the same on both sides, and restoring it from the host sets the device.
        let state = NSTemporaryDirectory() + "paradice-asound-\(getpid()).state"
        let nativeState = "paradice-asound-\(getpid()).state"
        defer { unlink(state); unlink(vm.folder + "/share/" + nativeState) }
        #expect(try vm.forwarded(["alsactl", "-f", state, "store", "0"]).status == 0)
        #expect(try vm.native("alsactl -f /share/\(nativeState) store 0").status == 0)
        let stored = try String(contentsOfFile: state, encoding: .utf8)
        #expect(stored == (try String(contentsOfFile: vm.folder + "/share/" + nativeState, encoding: .utf8)))
        #expect(stored.contains("'Master Volume'"))
        _ = try vm.native("amixer -c 0 cset name='Master Volume' 0,0")
        _ = try vm.forwarded(["alsactl", "-f", state, "restore", "0"])
        #expect(try vm.native("amixer -c 0 cget name='Master Volume'").output.contains(": values=42,17"))
        _ = try vm.native("amixer -c 0 cset name='Master Volume' 0,0")
    }
}
}
