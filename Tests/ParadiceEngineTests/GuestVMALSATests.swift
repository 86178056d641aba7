import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites.GuestVMSuites {
@Suite("ALSA in the guest VM: snd-aloop")
struct ALSA {
    private static let samples = toneSamples(hertz: 440, seconds: 2)

    /// aplay in the guest VM into the loopback's playback side, arecord natively on its capture side: the
    /// tone arrives sample for sample.
    @Test func aToneFromTheGuestVMIsCapturedNatively() throws {
        let guest = try GuestVM.require()
        let tone = "gvm-tone-\(getpid()).wav", captured = "gvm-capture-\(getpid()).wav"
        try writeTone(guest.share + "/" + tone, Self.samples)
        defer { unlink(guest.share + "/" + tone); unlink(guest.driver.folder + "/share/" + captured) }
        typealias Output = (status: Int32, output: String)
        let (recorded, played, capture) = try unlessTheHostWasBusy(
            "aplay in the guest VM",
            failed: { (r: (Output, Output, Capture)) in xruns(r.0.output) + xruns(r.1.output) > 0 || !r.2.isWhole(butTheLast: 0.3) },
            disturbed: { (r: (Output, Output, Capture)) in xruns(r.0.output) > 0 }
        ) { () throws -> (Output, Output, Capture) in
            let recorder = Background {
                try guest.driver.native("arecord -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -d 6 /share/\(captured)", timeout: 120)
            }
            usleep(2_500_000)
            let played = try guest.run("aplay -D hw:Loopback,0,0 /share/\(tone)", timeout: 120)
            let recorded = recorder.wait()
            return (recorded, played, Capture(guest.driver.folder + "/share/" + captured, tone: Self.samples))
        }
        #expect(recorded.status == 0 && played.status == 0, "\(recorded.output)\n\(played.output)")
        #expect(capture.channels == 2 && capture.rate == 48000 && capture.bits == 16, "\(capture)")
        #expect(capture.isWhole(butTheLast: 0.3) && capture.rms > 8000, "\(capture)")
        #expect(xruns(played.output) == 0 && xruns(recorded.output) == 0, "\(played.output)\n\(recorded.output)")
    }

    /// aplay natively, arecord in the guest VM: the guest's capture holds the tone sample for sample.
    @Test func aToneFromTheDriverVMIsCapturedInTheGuestVM() throws {
        let guest = try GuestVM.require()
        let tone = "gvm-tone-\(getpid()).wav", captured = "gvm-capture-\(getpid()).wav"
        try writeTone(guest.driver.folder + "/share/" + tone, Self.samples)
        defer { unlink(guest.driver.folder + "/share/" + tone); unlink(guest.share + "/" + captured) }
        typealias Output = (status: Int32, output: String)
        let (recorded, played, capture) = try unlessTheHostWasBusy(
            "arecord in the guest VM",
            failed: { (r: (Output, Output, Capture)) in xruns(r.0.output) + xruns(r.1.output) > 0 || !r.2.isWhole(butTheLast: 0.3) },
            disturbed: { (r: (Output, Output, Capture)) in xruns(r.1.output) > 0 }
        ) { () throws -> (Output, Output, Capture) in
            let player = Background {
                usleep(2_500_000)
                return try guest.driver.native("aplay -D hw:Loopback,0,0 /share/\(tone)", timeout: 120)
            }
            let recorded = try guest.run("arecord -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -d 8 /share/\(captured)", timeout: 120)
            let played = player.wait()
            return (recorded, played, Capture(guest.share + "/" + captured, tone: Self.samples))
        }
        #expect(recorded.status == 0 && played.status == 0, "\(recorded.output)\n\(played.output)")
        #expect(capture.channels == 2 && capture.rate == 48000 && capture.bits == 16, "\(capture)")
        #expect(capture.isWhole(butTheLast: 0.3) && capture.rms > 8000, "\(capture)")
        #expect(xruns(played.output) == 0 && xruns(recorded.output) == 0, "\(played.output)\n\(recorded.output)")
    }
}
}
