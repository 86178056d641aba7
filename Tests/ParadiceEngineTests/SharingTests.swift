import CParadice
import Foundation
import ParadiceClient
import ParadiceEngine
import ParadiceTransport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Whether a line of `log` contains every one of `parts` (metadata come sorted by key, not in a fixed phrase).
private func logged(_ log: String, _ parts: String...) -> Bool {
    log.split(separator: "\n").contains { line in parts.allSatisfy { line.contains($0) } }
}

/// Sharing modes on a real backend: an exclusive pty slave between guests, and who may switch the foreground.
@Suite("sharing modes on a real backend", .serialized)
struct SharingTests {
    @Test func anExclusiveDeviceIsBusyForOtherGuestsUntilItsHolderLetsGo() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*,sharing=exclusive"])
        let a = try backend.connect("a")
        let b = try backend.connect("b")
        let pty = try ForwardedPty(a)
        defer { pty.closeSlave() }
        let slave = "/dev/pts/\(pty.number)"

        // One guest may open it as often as it likes; another gets EBUSY, as a TIOCEXCL terminal gives.
        let first = try a.open(slave, flags: O_RDWR | O_NOCTTY)
        let second = try a.open(slave, flags: O_RDWR | O_NOCTTY)
        #expect(throws: Errno(EBUSY)) { _ = try b.open(slave, flags: O_RDWR | O_NOCTTY) }
        #expect(backend.log.contains("open refused: another guest holds the exclusive device"))
        try first.close()
        #expect(throws: Errno(EBUSY)) { _ = try b.open(slave, flags: O_RDONLY | O_NOCTTY) }
        try second.close()
        // Closed by its holder: the next guest's open succeeds, and the first guest is the one refused now.
        let taken = try b.open(slave, flags: O_RDWR | O_NOCTTY)
        #expect(throws: Errno(EBUSY)) { _ = try a.open(slave, flags: O_RDWR | O_NOCTTY) }
        try taken.close()
        // Another pty is another device: exclusive per path.
        let other = try ForwardedPty(b)
        defer { other.closeSlave() }
        _ = try b.open("/dev/pts/\(other.number)", flags: O_RDWR | O_NOCTTY)
        _ = try a.open(slave, flags: O_RDWR | O_NOCTTY)
    }

    @Test func anExclusiveHolderThatDiesLetsTheNextGuestIn() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*,sharing=exclusive"])
        let a = try backend.connect("a")
        let pty = try ForwardedPty(a)
        defer { pty.closeSlave() }
        let slave = "/dev/pts/\(pty.number)"
        // A real guest process holds the slave open, reading (nothing comes), until it is killed.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        holder.arguments = ["cat", "--backend", backend.endpoint, slave]
        holder.standardOutput = FileHandle.nullDevice
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
        #expect(backend.waitUntil(seconds: 20) { logged(backend.log, "opened", "path=\(slave)") }, "\(backend.log)")
        #expect(throws: Errno(EBUSY)) { _ = try a.open(slave, flags: O_RDWR | O_NOCTTY) }
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        // The backend ends the dead guest's session and closes its files: then the open succeeds.
        var opened: RemoteFile?
        #expect(backend.waitUntil(seconds: 20) {
            opened = try? a.open(slave, flags: O_RDWR | O_NOCTTY)
            return opened != nil
        }, "\(backend.log)")
    }

    static let focusPolicy = """
        rules:
          - name: console
            match: { psk: "guest-a" }
            devices: ["/dev/ptmx", "/dev/pts/*"]
            may-focus: true
          - name: others
            match: { psk: "guest-*" }
            devices: ["/dev/ptmx", "/dev/pts/*"]
        """

    @Test func focusIsForTheGuestsThePolicyLetsAndNamesAConnectedGuest() throws {
        let files = try PolicyFiles()
        try files.write(Self.focusPolicy)
        let policy = files.path("policy.yaml")
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*,sharing=foreground"], tcp: true,
                                         security: ["--psk-file", files.path("backend.psk"), "--policy", policy])
        let a = try ParadiceClient.connect(backend.endpoint, name: "a", security: TransportSecurity(presharedKeys: files.path("a.psk")))
        let b = try ParadiceClient.connect(backend.endpoint, name: "b", security: TransportSecurity(presharedKeys: files.path("b.psk")))
        let pty = try ForwardedPty(b)
        defer { pty.closeSlave() }
        _ = try b.open("/dev/pts/\(pty.number)", flags: O_RDWR | O_NOCTTY)

        // guest-b's rule has no may-focus: EPERM and one audit line.
        #expect(throws: Errno(EPERM)) { try b.focus("guest-b") }
        #expect(denials(backend.log, "who=psk guest-b", "op=focus", "rule=rule 2 (others) at \(policy):6 has no may-focus") == 1,
                "\(backend.log)")
        // A name no connected guest has: ENOENT.
        #expect(throws: Errno(ENOENT)) { try a.focus("guest-c") }
        // guest-b by its PSK identity: its one file of a foreground export.
        #expect(try a.focus("guest-b") == 1)
        #expect(try a.focus("psk guest-a") == 0)
        #expect(logged(backend.log, "foreground switched", "to=psk guest-a", "files=0"), "\(backend.log)")
    }

    @Test func withoutAPolicyTheBackendsOwnUserMayFocus() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*,sharing=foreground"])
        let a = try backend.connect("a")
        let uid = getuid()
        #expect(try a.focus("uid \(uid)") == 0)
        #expect(throws: Errno(ENOENT)) { try a.focus("uid \(uid &+ 1)") }
        // The CLI says why in words.
        let refused = try run(productsFolder + "/paradice", ["focus", "--backend", backend.endpoint, "nobody"])
        #expect(refused.status == 1 && refused.output.contains("no guest named 'nobody' is connected"), "\(refused.output)")
        let done = try run(productsFolder + "/paradice", ["focus", "--backend", backend.endpoint, "uid \(uid)"])
        #expect(done.status == 0 && done.output.contains("is the foreground"), "\(done.output)")
    }

    @Test func anUnknownSharingModeStopsTheBackendWithItsName() throws {
        #expect(throws: (any Error).self) { _ = try DeviceExport.parse("/dev/pts/*,sharing=solo") }
        let export = try DeviceExport.parse("/dev/dri/card*=drm,sharing=foreground")
        #expect(export == DeviceExport(pattern: "/dev/dri/card*", className: "drm", sharing: .foreground))
        #expect(try DeviceExport.parse("/dev/ptmx") == DeviceExport(pattern: "/dev/ptmx", className: nil))
        let started = try run(productsFolder + "/paradice-backend", ["--listen", "unix:/nonexistent/x", "--device", "/dev/null,sharing=solo"])
        #expect(started.status != 0 && started.output.contains("no sharing mode 'solo'"), "\(started.output)")
    }
}
