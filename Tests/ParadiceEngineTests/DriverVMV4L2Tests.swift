import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// v4l2-compliance's verdict: the totals line and every failed test, in order.
func complianceVerdict(_ output: String) -> (totals: String, failures: [String]) {
    let lines = output.split(separator: "\n").map(String.init)
    let totals = lines.last { $0.hasPrefix("Total for ") } ?? "no totals"
    let failures = lines.filter { $0.contains("FAIL") || $0.trimmingCharacters(in: .whitespaces).hasPrefix("fail:") }
        .map { $0.trimmingCharacters(in: .whitespaces) }
    return (totals, failures)
}

extension DriverVMSuites {
@Suite("V4L2 camera: vivid")
struct V4L2 {
    @Test func v4l2CtlInfoAndFormatsMatchNative() throws {
        let vm = try DriverVM.require()
        for arguments in [["--all"], ["--list-formats-ext"]] {
            let native = try vm.native("v4l2-ctl -d /dev/video0 " + arguments.joined(separator: " "))
            let forwarded = try vm.forwarded(["v4l2-ctl", "-d", "/dev/video0"] + arguments)
            #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)")
            // A volatile control's value changes by itself between two runs.
            let stable = { (text: String) in text.split(separator: "\n").filter { !$0.contains("volatile") } }
            #expect(stable(forwarded.output) == stable(native.output), "v4l2-ctl \(arguments)")
        }
    }

    @Test func aControlSetThroughParadiceIsSetOnTheDevice() throws {
        let vm = try DriverVM.require()
        #expect(try vm.forwarded(["v4l2-ctl", "-d", "/dev/video0", "-c", "brightness=99"]).status == 0)
        #expect(try vm.native("v4l2-ctl -d /dev/video0 -C brightness").output.contains("brightness: 99"))
        #expect(try vm.forwarded(["v4l2-ctl", "-d", "/dev/video0", "-C", "brightness"]).output.contains("brightness: 99"))
        _ = try vm.native("v4l2-ctl -d /dev/video0 -c brightness=128")
    }

    @Test func streamingMmapFramesArriveWithThePattern() throws {
        let vm = try DriverVM.require()
        let file = NSTemporaryDirectory() + "paradice-frames-\(getpid()).raw"
        defer { unlink(file) }
        let format = try vm.forwarded(["v4l2-ctl", "-d", "/dev/video0", "--set-fmt-video=width=640,height=360,pixelformat=YUYV"])
        #expect(format.status == 0, "\(format.output)")
        let stream = try vm.forwarded(["v4l2-ctl", "-d", "/dev/video0", "--stream-mmap", "--stream-count=5", "--stream-to=\(file)"])
        #expect(stream.status == 0, "\(stream.output)")
        let bytes = (try? Data(contentsOf: URL(fileURLWithPath: file))) ?? Data()
        #expect(bytes.count == 5 * 640 * 360 * 2)
        // vivid's default pattern, 75% colour bars: eight bars, each its own luma and chroma, so a frame
        // holds a handful of distinct bytes in a fixed order, never a blank buffer.
        let frame = bytes.prefix(640 * 360 * 2)
        #expect(Set(frame).count >= 8)
        let row = Array(frame.prefix(1280)), bar = 1280 / 8
        #expect(Set((0..<8).map { row[$0 * bar + bar / 2] & 0xF0 }).count >= 4, "\(row.prefix(64))")
    }

    @Test(.disabled("""
        not yet the native result: 113 tests / 9 failed through Paradice against 113 / 4 natively (the 4 native \
        failures are the v4l-utils 1.22 vs kernel 6.1 description text, reproduced). Left: 'Requests' \
        (VIDIOC_S_EXT_CTRLS with a media request fails at v4l2-test-buffers.cpp:2114) and 'Disconnect' \
        (the forked child now shares the session and sees the disconnect; an S_CTRL of the parent at \
        v4l2-test-controls.cpp:1034 fails in the frontend without reaching the backend)
        """))
    func v4l2ComplianceGivesTheNativeResult() throws {
        let vm = try DriverVM.require()
        let native = complianceVerdict(try vm.native("v4l2-compliance -d /dev/video0", timeout: 600).output)
        let forwarded = complianceVerdict(try vm.forwarded(["v4l2-compliance", "-d", "/dev/video0"]).output)
        #expect(native.totals.contains("Failed: 4"), "\(native.totals)")
        #expect(forwarded.totals == native.totals)
        #expect(forwarded.failures == native.failures)
    }
}
}
