import CParadice
import Foundation
import ParadiceClient
import ParadiceEngine
import ParadiceTransport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A folder with a policy and PSK files for two guests, "guest-a" and "guest-b" (the backend knows both).
final class PolicyFiles: @unchecked Sendable {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "paradice-policy-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let a = "guest-a:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        let b = "guest-b:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
        try "\(a)\n\(b)\n".write(toFile: path("backend.psk"), atomically: true, encoding: .utf8)
        try "\(a)\n".write(toFile: path("a.psk"), atomically: true, encoding: .utf8)
        try "\(b)\n".write(toFile: path("b.psk"), atomically: true, encoding: .utf8)
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func path(_ name: String) -> String { dir + "/" + name }

    func write(_ policy: String) throws { try policy.write(toFile: path("policy.yaml"), atomically: true, encoding: .utf8) }
}

/// The audit lines of denials in a backend's log that contain every one of `parts`.
func denials(_ log: String, _ parts: String...) -> Int {
    log.split(separator: "\n").filter { line in line.contains("policy denied") && parts.allSatisfy { line.contains($0) } }.count
}

@Suite("per-guest policy on a real backend", .serialized)
struct PolicyTests {
    static let twoGuests = """
        rules:
          - name: terminals
            match: { psk: "guest-a" }
            devices: ["/dev/ptmx", "/dev/pts/*"]
            ioctls: { deny: [TIOCSWINSZ] }
          - name: readers
            match: { psk: "guest-*" }
            devices: ["/dev/zero"]
            access: read-only
        """

    @Test func eachPSKGuestGetsWhatItsRuleGrants() throws {
        let files = try PolicyFiles()
        try files.write(Self.twoGuests)
        let policy = files.path("policy.yaml")
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*", "/dev/zero"], tcp: true,
                                         security: ["--psk-file", files.path("backend.psk"), "--policy", policy])
        let a = try ParadiceClient.connect(backend.endpoint, name: "a", security: TransportSecurity(presharedKeys: files.path("a.psk")))
        let b = try ParadiceClient.connect(backend.endpoint, name: "b", security: TransportSecurity(presharedKeys: files.path("b.psk")))

        // guest-a: its terminals, TIOCGWINSZ but not TIOCSWINSZ; nothing else.
        let pty: ForwardedPty
        do { pty = try ForwardedPty(a) } catch {
            Issue.record("\(error): \(backend.log)")
            return
        }
        defer { pty.closeSlave() }
        let ws = Buffer(8)
        #expect(try pty.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer) == 0)
        ws[0, as: UInt16.self] = 40
        #expect(throws: Errno(EPERM)) { try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer) }
        #expect(denials(backend.log, "who=psk guest-a", "op=ioctl", "ioctl=TIOCSWINSZ", "path=/dev/ptmx",
                        "rule=rule 1 (terminals) at \(policy):2") == 1, "\(backend.log)")
        #expect(throws: Errno(EACCES)) { try a.open("/dev/zero", flags: O_RDONLY) }
        #expect(denials(backend.log, "who=psk guest-a", "op=open O_RDONLY", "path=/dev/zero", "rule=rule 1 (terminals)") == 1)

        // guest-b: /dev/zero for reading only, no terminal.
        #expect(throws: Errno(EACCES)) { try b.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }
        #expect(denials(backend.log, "who=psk guest-b", "op=open O_RDWR", "path=/dev/ptmx", "rule=rule 2 (readers) at \(policy):6") == 1)
        #expect(throws: Errno(EACCES)) { try b.open("/dev/zero", flags: O_RDWR) }
        #expect(throws: Errno(EACCES)) { try b.open("/dev/zero", flags: O_WRONLY) }
        #expect(denials(backend.log, "who=psk guest-b", "path=/dev/zero") == 2)
        let zero = try b.open("/dev/zero", flags: O_RDONLY)
        #expect(try zero.read(count: 4) == [0, 0, 0, 0])
        #expect(throws: Errno(EACCES)) { try zero.map(length: 4096, protection: PROT_READ | PROT_WRITE) }
        #expect(denials(backend.log, "who=psk guest-b", "op=mmap PROT_WRITE", "path=/dev/zero") == 1)
        let mapped = try zero.map(length: 4096, protection: PROT_READ)
        try zero.unmap(mapped, length: 4096)
    }

    @Test func certificatesMatchByCommonNameAndAlternativeName() throws {
        let tls = try TLSFiles()
        let files = try PolicyFiles()
        try files.write("rules:\n  - match: { cn: \"guest-*\", san: \"DNS:guest-1\" }\n    devices: [\"/dev/ptmx\", \"/dev/pts/*\"]\n")
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true,
                                         security: tls.backendOptions + ["--policy", files.path("policy.yaml")])
        let certified = try ParadiceClient.connect(backend.endpoint, name: "cert", security: tls.guest)
        _ = try certified.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        let keyed = try ParadiceClient.connect(backend.endpoint, name: "psk", security: TransportSecurity(presharedKeys: tls.path("guest.psk")))
        #expect(throws: Errno(EACCES)) { try keyed.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }
        #expect(denials(backend.log, "who=psk guest-psk", "op=open O_RDWR", "rule=no rule matches") == 1, "\(backend.log)")
        #expect(denials(backend.log, "who=cert") == 0)
    }

    @Test func aGuestNoRuleMatchesMayOpenNothing() throws {
        let files = try PolicyFiles()
        try files.write(Self.twoGuests)
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], extra: ["--policy", files.path("policy.yaml")])
        let client = try backend.connect()   // a unix socket: uid, no PSK
        #expect(throws: Errno(EACCES)) { try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }
        #expect(denials(backend.log, "who=uid \(getuid())", "op=open O_RDWR", "path=/dev/ptmx",
                        "rule=no rule matches (\(files.path("policy.yaml")))") == 1, "\(backend.log)")
    }

    @Test func sighupReloadsForASessionThatStaysAndABrokenFileKeepsTheOldPolicy() throws {
        let files = try PolicyFiles()
        func policy(denying: String) -> String {
            """
            rules:
              - match: { uid: \(getuid()) }
                devices: ["/dev/ptmx", "/dev/pts/*"]
                ioctls: { deny: [\(denying)] }
            """
        }
        try files.write(policy(denying: "TIOCSTI"))
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], extra: ["--policy", files.path("policy.yaml")])
        let client = try backend.connect()
        let pty = try ForwardedPty(client)
        defer { pty.closeSlave() }
        let ws = Buffer(8)
        ws[0, as: UInt16.self] = 25
        #expect(try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer) == 0)

        try files.write(policy(denying: "TIOCSWINSZ"))
        kill(backend.pid, SIGHUP)
        #expect(backend.waitUntil(seconds: 60) { backend.log.contains("policy reloaded") }, "\(backend.log)")
        #expect(throws: Errno(EPERM)) { try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer) }
        #expect(denials(backend.log, "op=ioctl", "ioctl=TIOCSWINSZ", "rule=rule 1 at \(files.path("policy.yaml")):2") == 1)

        try files.write("rules:\n  - match: { uid: [\n")
        kill(backend.pid, SIGHUP)
        #expect(backend.waitUntil(seconds: 60) { backend.log.contains("policy reload failed") }, "\(backend.log)")
        #expect(backend.log.components(separatedBy: "policy reload failed").count - 1 == 1)
        #expect(throws: Errno(EPERM)) { try pty.master.ioctl(Ioctl.TIOCSWINSZ, ws.pointer) }
        #expect(try pty.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer) == 0)
        #expect(backend.isRunning)
    }

    @Test func aReloadThatMakesADeviceReadOnlyRefusesWritesOnFilesAlreadyOpen() throws {
        let files = try PolicyFiles()
        func policy(_ access: String) -> String {
            "rules:\n  - name: zero\n    match: { uid: \(getuid()) }\n    devices: [\"/dev/zero\"]\n    access: \(access)\n"
        }
        try files.write(policy("read-write"))
        let backend = try BackendProcess(devices: ["/dev/zero"], extra: ["--policy", files.path("policy.yaml")])
        let client = try backend.connect()
        let zero = try client.open("/dev/zero", flags: O_RDWR)
        #expect(try zero.write([1, 2, 3]) == 3)

        try files.write(policy("read-only"))
        kill(backend.pid, SIGHUP)
        #expect(backend.waitUntil(seconds: 60) { backend.log.contains("policy reloaded") }, "\(backend.log)")
        #expect(throws: Errno(EACCES)) { try zero.write([1, 2, 3]) }
        #expect(denials(backend.log, "op=write", "path=/dev/zero", "rule=rule 1 (zero) at \(files.path("policy.yaml")):2") == 1)
        #expect(try zero.read(count: 2) == [0, 0])
        #expect(throws: Errno(EACCES)) { try client.open("/dev/zero", flags: O_WRONLY) }
        _ = try client.open("/dev/zero", flags: O_RDONLY)
    }

    @Test func aRuleSetsTheGuestsLimits() throws {
        let files = try PolicyFiles()
        try files.write("rules:\n  - match: { uid: \(getuid()) }\n    devices: [\"/dev/zero\"]\n    limits: { max-open-files: 2 }\n")
        let backend = try BackendProcess(devices: ["/dev/zero"], extra: ["--policy", files.path("policy.yaml")])
        let client = try backend.connect()
        let kept = try (0..<2).map { _ in try client.open("/dev/zero", flags: O_RDONLY) }
        #expect(throws: Errno(EMFILE)) { try client.open("/dev/zero", flags: O_RDONLY) }
        #expect(kept.count == 2)
    }

    @Test func theConfigFileNamesThePolicy() throws {
        let files = try PolicyFiles()
        try files.write("rules:\n  - match: { any: true }\n    devices: [\"/dev/ptmx\"]\n    access: read-only\n")
        let config = files.path("backend.conf")
        try "device = [\"/dev/ptmx\", \"/dev/pts/*\"]\npolicy = \"\(files.path("policy.yaml"))\"\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let backend = try BackendProcess(devices: [], extra: ["--config", config])
        let client = try backend.connect()
        #expect(throws: Errno(EACCES)) { try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }
        #expect(denials(backend.log, "op=open O_RDWR", "path=/dev/ptmx", "rule=rule 1 at") == 1)
    }

    /// The first line the backend prints for `policy`, when it refuses to start.
    func startupError(_ policy: String) throws -> String {
        let files = try PolicyFiles()
        try files.write(policy)
        let r = try run(productsFolder + "/paradice-backend", ["--listen", "unix:" + files.path("b.sock"), "--specs", repositorySpecFolder,
                                                                "--policy", files.path("policy.yaml")])
        #expect(r.status != 0)
        return r.output.replacingOccurrences(of: files.path("policy.yaml"), with: "policy.yaml")
            .split(separator: "\n").first.map(String.init) ?? ""
    }

    @Test func malformedPoliciesAreFileLineColumnErrorsAtStartup() throws {
        #expect(try startupError("rules:\n  - match: { psk: [a\n") == "policy.yaml:3:1: did not find expected ',' or ']' (while parsing a flow sequence at 2:19)")
        #expect(try startupError("rules:\n  - match: { psk: a }\n    devics: [\"/dev/x\"]\n")
                == "policy.yaml:3:5: unknown key 'devics' in a rule (name, match, devices, access, ioctls, limits, may-focus)")
        #expect(try startupError("rules:\n  - match: { psk: a }\n    access: rw\n") == "policy.yaml:3:13: access is read-only or read-write")
        #expect(try startupError("rules:\n  - devices: [\"/dev/x\"]\n") == "policy.yaml:2:5: rule 1 has no 'match'")
        #expect(try startupError("rules:\n  - match: { uid: -1 }\n") == "policy.yaml:2:19: uid is a number from 0 to 4294967295")
        #expect(try startupError("rules:\n  - match: { psk: a, uid: 0 }\n")
                == "policy.yaml:2:12: a match names one kind of guest: a certificate, a PSK identity, a unix user, unauthenticated or any")
        #expect(try startupError("rules:\n  - match: { any: true }\n    limits: { max-open-files: 0 }\n")
                == "policy.yaml:3:31: max-open-files is a count above 0")
        #expect(try startupError("rules:\n  - match: { any: true }\n    ioctls: { allow: [A], deny: [B] }\n")
                == "policy.yaml:3:13: ioctls has either 'allow' or 'deny'")
        #expect(try startupError("rules:\n  - match: { any: true }\n    match: { psk: a }\n") == "policy.yaml:2:5: duplicate key 'match'")
        #expect(try startupError("rule:\n  - match: { any: true }\n") == "policy.yaml:1:1: unknown key 'rule' (a policy has 'rules')")
    }
}

@Suite("policy rules")
struct PolicyRuleTests {
    func rule(_ yaml: String, _ identity: PeerIdentity) throws -> Int? {
        try PolicyFile.parse(yaml, file: "p.yaml").rule(for: identity)?.index
    }

    @Test func theFirstRuleWhoseMatchHoldsDecides() throws {
        let policy = """
            rules:
              - match: { cn: "lab-*" }
              - match: { subject: "CN=*,O=Paradice" }
              - match: { san: "DNS:guest-?" }
              - match: { psk: "camera-*" }
              - match: { uid: 1000 }
              - match: { gid: 100 }
              - match: { unauthenticated: true }
              - match: { any: true }
            """
        #expect(try rule(policy, .certificate(subject: "CN=lab-1,O=Other", names: [])) == 1)
        #expect(try rule(policy, .certificate(subject: "CN=x,O=Paradice", names: [])) == 2)
        #expect(try rule(policy, .certificate(subject: "CN=x,O=Other", names: ["DNS:guest-7"])) == 3)
        #expect(try rule(policy, .presharedKey(identity: "camera-2")) == 4)
        #expect(try rule(policy, .local(uid: 1000, gid: 5, pid: 1)) == 5)
        #expect(try rule(policy, .local(uid: 7, gid: 100, pid: 1)) == 6)
        #expect(try rule(policy, .unauthenticated(address: "tcp://10.0.0.1:5")) == 7)
        #expect(try rule(policy, .presharedKey(identity: "other")) == 8)
        #expect(try rule("rules:\n  - match: { psk: a }\n", .local(uid: 0, gid: 0, pid: 1)) == nil)
        #expect(try rule("rules: []\n", .presharedKey(identity: "a")) == nil)
    }

    @Test func ioctlsAreAllowedOrDeniedBySpecName() throws {
        let policy = try PolicyFile.parse("""
            rules:
              - match: { any: true }
                ioctls: { allow: ["VIDIOC_G_*", VIDIOC_QUERYCAP] }
              - match: { any: true }
                ioctls: { deny: [VIDIOC_S_CTRL] }
            """, file: "p.yaml")
        #expect(policy.rules[0].ioctls.permits("VIDIOC_G_FMT"))
        #expect(policy.rules[0].ioctls.permits("VIDIOC_QUERYCAP"))
        #expect(!policy.rules[0].ioctls.permits("VIDIOC_S_FMT"))
        #expect(!policy.rules[1].ioctls.permits("VIDIOC_S_CTRL"))
        #expect(policy.rules[1].ioctls.permits("VIDIOC_S_FMT"))
    }
}
