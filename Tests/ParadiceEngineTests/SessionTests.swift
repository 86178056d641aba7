import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("sessions", .serialized)
struct SessionTests {
    @Test func aBlockedReadNeverStallsAnotherGuestOrThread() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let a = try backend.connect("a")
        let b = try backend.connect("b")
        let ptyA = try ForwardedPty(a)
        defer { ptyA.closeSlave() }
        let result = ResultBox()
        let reader = Thread { result.set(try? ptyA.master.read(count: 16)) }
        reader.start()
        usleep(200_000)
        #expect(result.value == nil)   // blocked in the driver, on the backend
        // Another guest goes on…
        let ptyB = try ForwardedPty(b)
        defer { ptyB.closeSlave() }
        let ws = Buffer(8)
        for _ in 0..<200 { try ptyB.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer) }
        // …and so does another thread of the blocked guest.
        try ptyA.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer)
        #expect(result.value == nil)
        #expect(write(ptyA.slave, "wake", 4) == 4)
        #expect(backend.waitUntil { result.value != nil })
        #expect(result.value.map { String(decoding: $0, as: UTF8.self) } == "wake")
    }

    @Test func aKilledGuestLeavesNothingOpen() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let survivor = try backend.connect("survivor")
        let pty = try ForwardedPty(survivor)
        defer { pty.closeSlave() }
        let baseline = backend.openDescriptors()

        // A separate guest process that blocks reading a forwarded pty master, then dies by SIGKILL.
        let guest = Process()
        guest.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        guest.arguments = ["cat", "--backend", backend.unixEndpoint, "/dev/ptmx"]
        try guest.run()
        #expect(backend.waitUntil { backend.openDescriptors() >= baseline + 2 })   // its connection and its pty
        #expect(backend.waitUntil { backend.log.contains("guest=paradice cat") })
        kill(guest.processIdentifier, SIGKILL)
        guest.waitUntilExit()
        #expect(backend.waitUntil { backend.openDescriptors() == baseline })
        #expect(backend.log.contains("closed the guest's files"))
        // The other guest never noticed.
        let ws = Buffer(8)
        try pty.master.ioctl(Ioctl.TIOCGWINSZ, ws.pointer)
        #expect(write(pty.slave, "still", 5) == 5)
        #expect(String(decoding: try pty.master.read(count: 16), as: UTF8.self) == "still")
    }

    @Test func aDisconnectClosesEverythingTheGuestOpened() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*", "/dev/kvm"])
        let baseline = backend.openDescriptors()
        do {
            let client = try backend.connect()
            _ = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
            let kvm = try client.open("/dev/kvm", flags: O_RDWR)
            _ = try kvm.ioctl(Ioctl.KVM_CREATE_VM, value: 0)
            #expect(backend.openDescriptors() == baseline + 4)
            client.disconnect()
        }
        #expect(backend.waitUntil { backend.openDescriptors() == baseline })
    }

    @Test func aBackendThatDiesGivesEioNotAHang() throws {
        var backend: BackendProcess? = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let client = try backend!.connect()
        let master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        kill(backend!.pid, SIGKILL)
        backend = nil
        #expect(throws: Errno.ioError) { try master.ioctl(Ioctl.TIOCGWINSZ, Buffer(8).pointer) }
        #expect(throws: Errno.ioError) { try master.read(count: 1) }
    }

    @Test func anUnreachableBackendIsAClearError() throws {
        #expect(throws: (any Error).self) { try ParadiceClient.connect("unix:/nonexistent/paradice.sock") }
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [UInt8]?
    func set(_ v: [UInt8]?) { lock.lock(); stored = v; lock.unlock() }
    var value: [UInt8]? { lock.lock(); defer { lock.unlock() }; return stored }
}
