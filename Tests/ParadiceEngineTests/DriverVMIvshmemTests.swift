import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites {
/// The driver-VM comparisons over shared-memory rings: a frontend on this machine maps the ivshmem region's
/// file (run.sh's `DIR/ivshmem`), the backend in the VM its PCI BAR; the same clients as over TCP, against
/// the same clients run natively in the VM. And peers of the region that break its rules or stop.
@Suite("Transports: ivshmem")
struct Ivshmem {
    static func region(_ vm: DriverVM) -> String { vm.folder + "/ivshmem" }
    static func endpoint(_ vm: DriverVM) -> String { "ivshmem:" + region(vm) }

    /// A client through the region, retried while the region's last session is still ending (the backend
    /// sets up the next one once it did; a connector meanwhile is refused).
    static func forwarded(_ vm: DriverVM, _ command: [String], timeout: Double = 600) throws -> (status: Int32, output: String, errors: String) {
        let deadline = Date().addingTimeInterval(120)
        while true {
            let r = try paradiceRun(endpoint(vm), command, timeout: timeout)
            let refused = r.errors.contains("ivshmem") && (r.errors.contains("refused") || r.errors.contains("busy"))
            if !refused || Date() > deadline { return r }
            usleep(200_000)
        }
    }

    @Test func v4l2CtlThroughTheRingMatchesNative() throws {
        let vm = try DriverVM.require()
        let native = try vm.native("v4l2-ctl -d /dev/video0 --all")
        let forwarded = try Self.forwarded(vm, ["v4l2-ctl", "-d", "/dev/video0", "--all"])
        #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)\(forwarded.errors)")
        #expect(Transports.stable(forwarded.output) == Transports.stable(native.output))
        let set = try Self.forwarded(vm, ["v4l2-ctl", "-d", "/dev/video0", "-c", "brightness=55"])
        #expect(set.status == 0, "\(set.errors)")
        #expect(try vm.native("v4l2-ctl -d /dev/video0 -C brightness").output.contains("brightness: 55"))
        _ = try vm.native("v4l2-ctl -d /dev/video0 -c brightness=128")
    }

    @Test func v4l2ComplianceThroughTheRingGivesTheNativeResult() throws {
        let vm = try DriverVM.require()
        let command = ["stdbuf", "-oL", "v4l2-compliance", "-d", "/dev/video0"]
        let native = complianceVerdict(try vm.native(command.joined(separator: " "), timeout: 600).output)
        #expect(native.totals.hasPrefix("Total for "), "\(native.totals)")
        let r = try Self.forwarded(vm, command)
        var forwarded = complianceVerdict(r.output + r.errors)
        print("v4l2-compliance -d /dev/video0 over ivshmem: \(forwarded.totals) (native \(native.totals))")
        #expect(forwarded.totals.hasPrefix("Total for "), "status \(r.status): \(r.output.suffix(2000))\n\(r.errors.suffix(2000))")
        // One session at a time on a region (as on a serial port): the Disconnect test's forked child cannot
        // open a session of its own while its parent holds the region's, so its select fails. That one
        // test may fail, as a counted success; every other verdict must be native's.
        let disconnect = ["fail: v4l2-test-controls.cpp(995): select child exited with status 1", "test Disconnect: FAIL"]
        if forwarded.failures.contains(disconnect[1]) {
            forwarded.failures.removeAll { disconnect.contains($0) }
            let parts = forwarded.totals.components(separatedBy: ", ")
            if parts.count == 3, let s = Int(parts[1].dropFirst("Succeeded: ".count)), let f = Int(parts[2].dropFirst("Failed: ".count)) {
                forwarded.totals = "\(parts[0]), Succeeded: \(s + 1), Failed: \(f - 1)"
            }
        }
        compareComplianceVerdicts(forwarded, native, [])
    }

    @Test func modetestListingThroughTheRingMatchesNative() throws {
        let vm = try DriverVM.require()
        let native = try vm.native("modetest -M virtio_gpu -c -e -p")
        let forwarded = try Self.forwarded(vm, ["modetest", "-M", "virtio_gpu", "-c", "-e", "-p"])
        #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)\(forwarded.errors)")
        #expect(native.output.contains("Virtual-1"))
        #expect(forwarded.output == native.output)
    }

    @Test func alsaCardListsThroughTheRingMatchNative() throws {
        let vm = try DriverVM.require()
        for program in ["aplay", "arecord"] {
            let native = try vm.native("\(program) -l")
            let forwarded = try Self.forwarded(vm, [program, "-l"])
            #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)\(forwarded.errors)")
            #expect(native.output.contains("card 1: Loopback"), "\(native.output)")
            #expect(forwarded.output == native.output, "\(program) -l")
        }
    }

    /// The words of the region's setup page (state at byte 8, session at 12; ivshmem.c).
    static func word(_ path: String, at offset: off_t) -> UInt32? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var value: UInt32 = 0
        return pread(fd, &value, 4, offset) == 4 ? value : nil
    }

    /// Garbage over the whole setup page (which claims the listener's session with a token no peer
    /// answers for and sets the words the backend reads), then a connector that stops within its session
    /// (SIGSTOP): each ends only its own session, and the next client's works.
    @Test func garbageInTheRegionAndAStoppedPeerEndOnlyTheirOwnSessions() throws {
        let vm = try DriverVM.require()
        let path = Self.region(vm)
        // Wait until the backend listens on the region (state LISTENING), then write the garbage.
        let listening = Date().addingTimeInterval(120)
        while Self.word(path, at: 8) != 1 && Date() < listening { usleep(100_000) }
        #expect(Self.word(path, at: 8) == 1)
        var garbage = [UInt8](repeating: 0, count: 4096)
        for i in garbage.indices { garbage[i] = UInt8.random(in: 1...255) }
        let fd = open(path, O_WRONLY)
        #expect(fd >= 0)
        #expect(pwrite(fd, &garbage, garbage.count, 0) == garbage.count)
        close(fd)
        let after = try Self.forwarded(vm, ["v4l2-ctl", "-d", "/dev/video0", "-C", "brightness"])
        #expect(after.status == 0 && after.output.contains("brightness:"), "\(after.output)\(after.errors)")

        // A client that streams, stopped once its session is open (state CONNECTED).
        let p = Process()
        p.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        p.arguments = ["run", "--backend", Self.endpoint(vm), "--", "v4l2-ctl", "-d", "/dev/video0", "--stream-mmap", "--stream-count=1000000"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        let connected = Date().addingTimeInterval(120)
        let sessionBefore = Self.word(path, at: 12)
        try p.run()
        // The paradice command's own check has the session offered now, the program's frontend the next one.
        let programSession = sessionBefore.map { $0 &+ 1 }
        while !(Self.word(path, at: 8) == 2 && Self.word(path, at: 12) == programSession) && Date() < connected && p.isRunning { usleep(20_000) }
        #expect(Self.word(path, at: 12) == programSession && p.isRunning)
        kill(p.processIdentifier, SIGSTOP)
        defer {
            kill(p.processIdentifier, SIGKILL)
            kill(p.processIdentifier, SIGCONT)
            p.waitUntilExit()
        }
        let next = try Self.forwarded(vm, ["v4l2-ctl", "-d", "/dev/video0", "-C", "brightness"])
        // Only once the stopped peer's session ended could the next one begin.
        #expect(next.status == 0 && next.output.contains("brightness:"), "\(next.output)\(next.errors)")
    }
}
}
