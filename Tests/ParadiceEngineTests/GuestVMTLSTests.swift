import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A pty pair of this machine held open by a helper process while the value lives (its end closes them).
final class HeldPty {
    private let holder = Process(), control = Pipe(), named = Pipe()
    let slave: String

    init() throws {
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = ["-c", "import os, sys; m, s = os.openpty(); print(os.ttyname(s), flush=True); sys.stdin.read()"]
        holder.standardInput = control
        holder.standardOutput = named
        try holder.run()
        var line = Data()
        while !line.contains(10) {
            let chunk = named.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        slave = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    deinit {
        try? control.fileHandleForWriting.close()
        holder.waitUntilExit()
    }
}

extension DriverVMSuites.GuestVMSuites {
/// paradice-guestd (the guest VM's kernel frontend) to a backend of this machine over TLS: certificates made at
/// test time in the guest VM's share, with the backend's name as the guest VM reaches it (10.0.2.2).
@Suite("The guest VM's frontend over TLS")
struct GuestVMTLS {
    let guest: GuestVM
    let dir: String
    var inGuest: String { "/share/" + (dir as NSString).lastPathComponent }

    init() throws {
        guest = try GuestVM.require()
        dir = guest.share + "/tls-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let script = GuestVM.repository + "/scripts/tls-certs.sh"
        for arguments in [[script, dir, "10.0.2.2", "127.0.0.1", "--", "guest-vm"], [script, dir + "/other", "10.0.2.2", "--", "stranger"]] {
            let r = try run("/bin/bash", arguments)
            guard r.status == 0 else { throw BackendFailure(log: "tls-certs.sh: \(r.output)") }
        }
        try "guest-vm-psk:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n"
            .write(toFile: dir + "/guest.psk", atomically: true, encoding: .utf8)
        // The certificates start now, by this machine's clock; the guest VM's, read from its emulated RTC at
        // boot and kept by an emulated CPU, may be behind it, and would find them "not yet valid".
        let clock = try guest.run("date -u -s @\(Int(Date().timeIntervalSince1970.rounded(.up)))", timeout: 60)
        guard clock.status == 0 else { throw BackendFailure(log: "setting the guest VM's clock: \(clock.output)") }
    }

    /// stty in the guest VM, through the daemon's node of a pty of this machine, reads what was set here, and a
    /// size set there is the pty's here.
    func checkStty(_ pty: HeldPty, _ frontend: GuestFrontend) throws {
        let here = try run("/usr/bin/stty", ["-F", pty.slave, "-a"])
        let there = try guest.run("stty -F \(pty.slave) -a", timeout: 60)
        #expect(here.status == 0 && here.output.contains("rows 31"), "\(here.output)")
        #expect(there.status == 0 && there.output == here.output, "\(there.output)\n\(frontend.log)")
        let set = try guest.run("stty -F \(pty.slave) rows 42 cols 97", timeout: 60)
        #expect(set.status == 0, "\(set.output)")
        #expect(try run("/usr/bin/stty", ["-F", pty.slave, "size"]).output == "42 97\n")
    }

    @Test func mutualCertificatesServeAPtyAndNameTheGuest() throws {
        let pty = try HeldPty()
        #expect(try run("/usr/bin/stty", ["-F", pty.slave, "rows", "31", "cols", "71"]).status == 0)
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true,
                                         security: ["--tls-cert", dir + "/backend.pem", "--tls-key", dir + "/backend.key", "--tls-ca", dir + "/ca.pem"])
        let port = backend.endpoint.split(separator: ":").last.map(String.init) ?? ""
        let frontend = try GuestFrontend(guest, backend: "tcp://10.0.2.2:\(port)", waitingFor: [pty.slave],
                                         extra: "--tls-cert \(inGuest)/guest-vm.pem --tls-key \(inGuest)/guest-vm.key --tls-ca \(inGuest)/ca.pem")
        try checkStty(pty, frontend)
        #expect(backend.log.contains("identity=cert CN=guest-vm,O=Paradice [DNS:guest-vm]"), "\(backend.log)")
        #expect(!backend.log.contains("unauthenticated"))
    }

    @Test func aPreSharedKeyServesAPty() throws {
        let pty = try HeldPty()
        #expect(try run("/usr/bin/stty", ["-F", pty.slave, "rows", "31", "cols", "72"]).status == 0)
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true, security: ["--psk-file", dir + "/guest.psk"])
        let port = backend.endpoint.split(separator: ":").last.map(String.init) ?? ""
        let frontend = try GuestFrontend(guest, backend: "tcp://10.0.2.2:\(port)", waitingFor: [pty.slave], extra: "--psk-file \(inGuest)/guest.psk")
        try checkStty(pty, frontend)
        #expect(backend.log.contains("identity=psk guest-vm-psk"), "\(backend.log)")
    }

    /// A daemon with a certificate of another CA, or with no TLS at all, makes no node: the backend refuses it at
    /// the TLS handshake, before the protocol's, and says so; the daemon names the reason.
    @Test func aGuestOfAnotherAuthorityGetsNoNode() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true,
                                         security: ["--tls-cert", dir + "/backend.pem", "--tls-key", dir + "/backend.key", "--tls-ca", dir + "/ca.pem"])
        let port = backend.endpoint.split(separator: ":").last.map(String.init) ?? ""
        let stranger = try GuestFrontend(guest, backend: "tcp://10.0.2.2:\(port)", waitingFor: [],
                                         extra: "--tls-cert \(inGuest)/other/stranger.pem --tls-key \(inGuest)/other/stranger.key --tls-ca \(inGuest)/ca.pem")
        let plain = try GuestFrontend(guest, backend: "tcp://10.0.2.2:\(port)", waitingFor: [], extra: "--plain-tcp")
        #expect(backend.waitUntil(seconds: 60) { backend.log.components(separatedBy: "TLS handshake failed").count - 1 >= 2 }, "\(backend.log)")
        #expect(!backend.log.contains("guest connected"), "\(backend.log)")
        // Each daemon ends, naming why (the TLS alert the backend sent; the backend's end of a plain connection).
        let deadline = Date().addingTimeInterval(60)
        while !(stranger.log.contains("the backend") && plain.log.contains("the backend")) && Date() < deadline { usleep(200_000) }
        #expect(stranger.log.contains("TLS") || stranger.log.contains("alert"), "\(stranger.log)")
        #expect(plain.log.contains("the backend"), "\(plain.log)")
        #expect(backend.isRunning)
    }
}
}
