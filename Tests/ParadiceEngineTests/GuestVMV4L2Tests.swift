import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites.GuestVMSuites {
@Suite("V4L2 in the guest VM: vivid")
struct V4L2 {
    /// The same compliance run natively in the driver VM and in the guest VM on its /dev/video0: the same
    /// totals and the same failures (the 4 native ones), but for the checks that race vivid's frame clock.
    @Test func v4l2ComplianceGivesTheNativeResult() throws { try compareCompliance([]) }

    /// With streaming of every kind, 10 frames each.
    @Test func v4l2ComplianceWithStreamingGivesTheNativeResult() throws { try compareCompliance(["-s10"]) }

    private func compareCompliance(_ options: [String]) throws {
        let guest = try GuestVM.require()
        let command = (["stdbuf", "-oL", "v4l2-compliance", "-d", "/dev/video0"] + options).joined(separator: " ")
        let native = complianceVerdict(try guest.driver.native(command, timeout: 600).output)
        let inGuest = complianceVerdict(try guest.run(command, timeout: 600).output)
        print("v4l2-compliance \(options.joined(separator: " ")) in the guest VM: \(inGuest.totals) (native \(native.totals))")
        #expect(native.totals.hasPrefix("Total for ") && native.totals.hasSuffix("Failed: 4"), "\(native.totals)")
        compareComplianceVerdicts(inGuest, native, options)
    }

    /// 2,000 wake-ups from vivid's event queue (Programs/v4l2wakeups.c: a control set from another thread, its
    /// change event waited for through epoll, poll and select in turn, then read): none lost natively, none
    /// lost on the guest VM's node.
    @Test func driverWakeUpsThroughEpollPollAndSelectAreAllDelivered() throws {
        let guest = try GuestVM.require()
        let binary = guest.share + "/v4l2wakeups"
        let built = try run("/usr/bin/gcc", ["-O1", "-o", binary, programSources + "/v4l2wakeups.c", "-lpthread"])
        #expect(built.status == 0, "\(built.output)")
        unlink(guest.driver.folder + "/share/v4l2wakeups")
        try FileManager.default.copyItem(atPath: binary, toPath: guest.driver.folder + "/share/v4l2wakeups")
        let native = try guest.driver.native("/share/v4l2wakeups /dev/video0 2000")
        let inGuest = try guest.run("/share/v4l2wakeups /dev/video0 2000")
        print("v4l2wakeups: native \(native.output.trimmingCharacters(in: .newlines)); guest VM \(inGuest.output.trimmingCharacters(in: .newlines))")
        #expect(native.status == 0 && native.output.contains("lost 0"), "\(native.output)")
        #expect(inGuest.status == 0 && inGuest.output.contains("wake-ups 2000 in") && inGuest.output.contains("lost 0"), "\(inGuest.output)")
    }

    /// v4l2-ctl --stream-mmap in both places: five 640x360 YUYV frames each, every one vivid's colour bars, and
    /// the rows below the text overlay the same bytes natively and in the guest VM.
    @Test func streamedFramesHaveTheNativePattern() throws {
        let guest = try GuestVM.require()
        let file = "gvm-frames-\(getpid()).raw"
        defer { unlink(guest.driver.folder + "/share/" + file); unlink(guest.share + "/" + file) }
        let command = "v4l2-ctl -d /dev/video0 --set-fmt-video=width=640,height=360,pixelformat=YUYV && "
            + "v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=5 --stream-to=/share/\(file)"
        let native = try guest.driver.native(command)
        let inGuest = try guest.run(command)
        #expect(native.status == 0 && inGuest.status == 0, "\(native.output)\n\(inGuest.output)")
        let frameSize = 640 * 360 * 2
        let nativeBytes = FileManager.default.contents(atPath: guest.driver.folder + "/share/" + file) ?? Data()
        let guestBytes = FileManager.default.contents(atPath: guest.share + "/" + file) ?? Data()
        #expect(nativeBytes.count == 5 * frameSize && guestBytes.count == 5 * frameSize, "\(nativeBytes.count) \(guestBytes.count)")
        let bottom = { (bytes: Data, frame: Int) in Array(bytes[(frame * frameSize + 300 * 1280)..<((frame + 1) * frameSize)]) }
        for frame in 0..<min(5, guestBytes.count / frameSize, nativeBytes.count / frameSize) {
            let rows = bottom(guestBytes, frame)
            let row = Array(rows.prefix(1280)), bar = 1280 / 8
            #expect(Set((0..<8).map { row[$0 * bar + bar / 2] & 0xF0 }).count >= 4, "frame \(frame): \(row.prefix(64))")
            #expect(rows == bottom(nativeBytes, frame), "frame \(frame): the bars differ from native")
        }
    }
}
}
