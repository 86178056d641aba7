import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("backend configuration")
struct ConfigTests {
    @Test func aConfigFileExportsDevices() throws {
        let path = NSTemporaryDirectory() + "paradice-config-\(getpid()).toml"
        try """
            # devices for this test
            device = ["/dev/ptmx", "/dev/pts/*"]
            log-level = "debug"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let backend = try BackendProcess(devices: [], extra: ["--config", path])
        let client = try backend.connect()
        #expect(client.devices.map(\.path) == ["/dev/ptmx", "/dev/pts/*"])
        #expect(client.devices.first?.className == "tty")
        _ = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        #expect(throws: Errno(ENOENT)) { try client.open("/dev/kvm", flags: O_RDWR) }
    }

    @Test func badSettingsAreClearErrors() throws {
        let path = NSTemporaryDirectory() + "paradice-bad-\(getpid()).toml"
        try "devise = [\"/dev/ptmx\"]\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let bad = try run(productsFolder + "/paradice-backend", ["--listen", "unix:/tmp/paradice-bad-\(getpid()).sock", "--config", path])
        #expect(bad.status != 0)
        #expect(bad.output.contains("\(path):1:1: unknown setting 'devise'"))
        let plugin = try run(productsFolder + "/paradice-backend", ["--listen", "unix:/tmp/paradice-bad-\(getpid()).sock",
                                                                     "--specs", repositorySpecFolder, "--plugins", "nosuch"])
        #expect(plugin.status != 0)
        #expect(plugin.output.contains("no plug-in named 'nosuch'"))
    }
}
