import ParadiceToolSupport
import Testing

/// `paradice guest`'s argument checks and its choice of module, without a kernel module.
@Suite struct GuestSetupTests {
    @Test func mapsNameANodeUnderDevAndAnAbsoluteBackendPath() throws {
        let m = try GuestSetup.checkMap("/dev/pdk/video0=/dev/video0")
        #expect(m.guest == "/dev/pdk/video0" && m.backend == "/dev/video0")
        for bad in ["/dev/video0", "video0=/dev/video0", "/tmp/x=/dev/video0", "/dev/=/dev/video0",
                    "/dev/pdk/=/dev/video0", "/dev/../etc/x=/dev/video0", "/dev/a=video0"] {
            #expect(throws: GuestSetup.Failure.self, "\(bad)") { try GuestSetup.checkMap(bad) }
        }
    }

    @Test func backendsAreUnixOrTCPWithAPort() throws {
        for good in ["unix:/run/paradice.sock", "unix:///run/p.sock", "tcp://127.0.0.1:7000", "tcp:10.0.2.2:17000", "tcp://h:1/"] {
            try GuestSetup.checkBackend(good)
        }
        for bad in ["", "unix:", "tcp://host", "tcp://:7000", "tcp://h:0", "tcp://h:70000", "http://h:80", "/run/p.sock"] {
            #expect(throws: GuestSetup.Failure.self, "\(bad)") { try GuestSetup.checkBackend(bad) }
        }
    }

    @Test func theModuleIsTheGivenOneThenBesideTheProgramThenTheKernelsExtraFolder() throws {
        let beside = "/opt/p/paradice.ko", extra = "/lib/modules/6.1.0-57-amd64/extra/paradice.ko"
        func find(_ given: String?, _ present: Set<String>) throws -> String {
            try GuestSetup.modulePath(given: given, programFolder: "/opt/p", release: "6.1.0-57-amd64") { present.contains($0) }
        }
        #expect(try find(nil, [beside, extra]) == beside)
        #expect(try find(nil, [extra]) == extra)
        #expect(try find("/tmp/m.ko", ["/tmp/m.ko", beside]) == "/tmp/m.ko")
        #expect(throws: GuestSetup.Failure.self) { try find("/tmp/m.ko", [beside]) }   // a given path is not replaced
        do {
            _ = try find(nil, [])
            Issue.record("found a module where there is none")
        } catch let failure as GuestSetup.Failure {
            #expect(failure.description.contains(beside) && failure.description.contains(extra))
        }
    }

    @Test func statusFilesReadAsFieldsAndNodes() {
        let s = GuestSetup.Status(text: "pid 42\nstate ready\nbackend tcp://h:1\nnode /dev/pdk/video0 81:9 /dev/video0 video4linux 1\n")
        #expect(s.fields["pid"] == "42" && s.fields["state"] == "ready" && s.fields["backend"] == "tcp://h:1")
        #expect(s.nodes == ["/dev/pdk/video0 81:9 /dev/video0 video4linux 1"])
    }
}
