import CParadice
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

    @Test func limitsAreSettingsOfTheCommandLineAndTheConfigFile() throws {
        let help = try run(productsFolder + "/paradice-backend", ["--help"])
        for option in ["--max-open-files", "--max-requests-in-flight", "--max-workers", "--max-mapped-bytes",
                       "--max-read-bytes-in-flight", "--max-frame", "--max-sessions", "--handshake-timeout",
                       "--fork-timeout"] {
            #expect(help.output.contains(option), "\(option)")
        }
        let path = NSTemporaryDirectory() + "paradice-limits-\(getpid()).toml"
        try """
            device = ["/dev/ptmx", "/dev/zero"]
            max-open-files = 2
            max_mapped_bytes = "16K"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let backend = try BackendProcess(devices: [], extra: ["--config", path])
        let client = try backend.connect()
        _ = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        let zero = try client.open("/dev/zero", flags: O_RDWR)
        #expect(throws: Errno(EMFILE)) { try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }
        let guest = try RawGuest(backend.unixEndpoint)
        #expect(guest.hello())
        #expect(guest.result(PD_MMAP, handle: zero.handle, body: bytes(of: pd_mmap(offset: 0, length: 32 << 10, prot: PROT_READ, flags: MAP_SHARED)))?.error == EBADF)
        let own = guest.open("/dev/zero")
        #expect(guest.result(PD_MMAP, handle: own.handle, body: bytes(of: pd_mmap(offset: 0, length: 32 << 10, prot: PROT_READ, flags: MAP_SHARED)))?.error == ENOMEM)
        #expect(guest.result(PD_MMAP, handle: own.handle, body: bytes(of: pd_mmap(offset: 0, length: 16 << 10, prot: PROT_READ, flags: MAP_SHARED)))?.error == 0)
        // The command line wins over the file.
        let over = try BackendProcess(devices: [], extra: ["--config", path, "--max-open-files", "3"])
        let third = try over.connect()
        for _ in 0..<3 { _ = try third.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }
        #expect(throws: Errno(EMFILE)) { try third.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY) }

        let socket = "unix:/tmp/paradice-limits-\(getpid()).sock"
        let tooLarge = try run(productsFolder + "/paradice-backend", ["--listen", socket, "--specs", repositorySpecFolder, "--max-frame", "100M"])
        #expect(tooLarge.status != 0)
        #expect(tooLarge.output.contains("--max-frame: '100M' is not a byte count from 1 to 83886080"))
        try "max-workers = none\n".write(toFile: path, atomically: true, encoding: .utf8)
        let word = try run(productsFolder + "/paradice-backend", ["--listen", socket, "--specs", repositorySpecFolder, "--config", path])
        #expect(word.status != 0)
        #expect(word.output.contains("--max-workers: 'none' is not a count"))
    }
}
