import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Input 0 and every control of /dev/video0 that can be written back to its default (the chroot of the host's /usr
/// in the VM has sed and paste, no awk).
let resetVividCommand = """
    v4l2-ctl -d /dev/video0 -i 0 > /dev/null && \
    v4l2-ctl -d /dev/video0 -c "$(v4l2-ctl -d /dev/video0 -l | sed -n \
      -e '/flags=[^ ]*\\(read-only\\|inactive\\|write-only\\)/d' \
      -e 's/^ *\\([a-z0-9_]*\\) 0x[0-9a-f]* ([a-z0-9]*) *:.* default=\\(-\\{0,1\\}[0-9]*\\).*/\\1=\\2/p' | paste -sd, -)"
    """

extension DriverVMSuites.GuestVMSuites {
@Suite("Programs no preload reaches, in the guest VM")
struct Unreachable {
    /// V4L2 MMAP streaming from a statically linked program (REQBUFS, QUERYBUF, mmap, QBUF, STREAMON, DQBUF of
    /// 8 frames, each checked for vivid's colour bars): the same output natively and in the guest VM.
    @Test func aStaticProgramStreamsTheNativeFrames() throws {
        let guest = try GuestVM.require()
        try staticClient(guest)
        // The suites before this one leave vivid's controls where they put them (a compliance run sets every
        // control): back to input 0 and every writable control's default, so that the colour bars are there.
        let reset = try guest.driver.native(resetVividCommand, timeout: 60)
        #expect(reset.status == 0, "\(reset.output)")
        let native = try guest.driver.native("/share/static-client v4l2 /dev/video0 8", timeout: 120)
        let inGuest = try guest.run("/share/static-client v4l2 /dev/video0 8", timeout: 120)
        #expect(native.status == 0 && native.output.contains("8 frames, 0 without the pattern"), "\(native.output)")
        #expect(inGuest.status == 0 && inGuest.output == native.output, "\(inGuest.output)")
    }

    /// A pty of a backend on this machine (a second frontend in the guest VM; its nodes keep their names and
    /// take free numbers there): stty and busybox stty in the guest VM read the settings made here, and a
    /// size set there is the pty's here.
    @Test func sttyOnAForwardedPtyOfThisMachine() throws {
        let guest = try GuestVM.require()
        let pty = try HeldPty()
        let slave = pty.slave
        #expect(slave.hasPrefix("/dev/pts/"), "\(slave)")
        #expect(try run("/usr/bin/stty", ["-F", slave, "rows", "33", "cols", "77", "-echo", "-icanon", "min", "3"]).status == 0)
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true)
        let port = backend.endpoint.split(separator: ":").last.map(String.init) ?? ""
        let frontend = try GuestFrontend(guest, backend: "tcp://10.0.2.2:\(port)", waitingFor: [slave])
        for stty in [["stty"], ["busybox", "stty"]] {
            let here = try run("/usr/bin/env", stty + ["-F", slave, "-a"] as [String])
            let there = try guest.run((stty + ["-F", slave, "-a"]).joined(separator: " "), timeout: 60)
            #expect(here.status == 0 && (here.output.contains("rows 33; columns 77") || here.output.contains("rows 33 columns 77")), "\(here.output)")
            #expect(there.status == 0 && there.output == here.output, "\(stty): \(there.output)\n\(frontend.log)")
        }
        let set = try guest.run("stty -F \(slave) rows 44 cols 88 && busybox stty -F \(slave) size", timeout: 60)
        #expect(set.status == 0 && set.output == "44 88\n", "\(set.output)")
        #expect(try run("/usr/bin/stty", ["-F", slave, "size"]).output == "44 88\n")
    }
}
}
