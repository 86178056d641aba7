import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Every frontend runs the same file operations and ioctls (Programs/conformance.c's sequence) on real
/// devices of this machine through a real backend: the preload (the program under `paradice run`) and
/// the Swift client, both over the frontend core, mappings included (a mirror of a vcpu's kvm_run). Each line (result, errno, bytes returned) must be what
/// the program gets natively, and so the same for every frontend.
@Suite("every frontend answers as the device does", .serialized)
struct ConformanceTests {
    @Test func thePreloadAndTheSwiftClientAgreeWithNative() throws {
        let kvm = access("/dev/kvm", R_OK | W_OK) == 0
        // Mappings are mirrors (the backend shares no descriptor), kept by the kvm plug-in's sync points.
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"] + (kvm ? ["/dev/kvm"] : []),
                                         extra: ["--plugins", "kvm"])
        let program = try compile("conformance", into: backend.folder)
        let arguments = kvm ? ["kvm"] : []

        let native = try run(program, arguments)
        #expect(native.status == 0, "\(native.output)")
        let preload = try paradiceRun(backend.endpoint, [program] + arguments)
        #expect(preload.status == 0, "\(preload.errors)")
        let swift = try Self.sequence(backend.connect("conformance"), kvm: kvm)

        let expected = native.output.split(separator: "\n").map(String.init)
        #expect(expected.count > 10)
        #expect(preload.output.split(separator: "\n").map(String.init) == expected)
        #expect(swift == expected)
        // Each file really went through the backend, and the vcpu's mappings were mirrors it made.
        #expect(backend.log.contains("guest=conformance"))
        if kvm { #expect(backend.log.contains("mapped")) }
    }

    /// conformance.c's sequence through the Swift client, in its output format.
    static func sequence(_ client: ParadiceClient, kvm: Bool) throws -> [String] {
        var lines: [String] = []
        /// One line: the operation's result (or -1 and its errno), then the bytes `shown` returns, as
        /// conformance.c prints them (after a failure too).
        func line(_ name: String, shown: () -> [UInt8] = { [] }, _ operation: () throws -> Int) {
            var text: String
            do { text = "\(name) \(try operation()) 0" }
            catch let error as Errno { text = "\(name) -1 \(error.rawValue)" }
            catch { text = "\(name) -1 -1" }
            let bytes = shown()
            lines.append(text + (bytes.isEmpty ? "" : " " + hex(bytes)))
        }

        let master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        lines.append("open-ptmx 0 0")
        let unlock = Buffer(4)
        line("TIOCSPTLCK") { Int(try master.ioctl(0x4004_5431, unlock.pointer)) }
        let number = Buffer(4)
        line("TIOCGPTN") { _ = try master.ioctl(0x8004_5430, number.pointer); return 0 }
        let slave = try client.open("/dev/pts/\(number[0, as: UInt32.self])", flags: O_RDWR | O_NOCTTY)
        lines.append("open-slave 0 0")
        let ws = Buffer(8)
        ws[0, as: UInt16.self] = 40
        ws[2, as: UInt16.self] = 100
        line("TIOCSWINSZ") { Int(try master.ioctl(0x5414, ws.pointer)) }
        let got = Buffer(8)
        line("TIOCGWINSZ", shown: { got.bytes }) { Int(try slave.ioctl(0x5413, got.pointer)) }
        let termios = Buffer(36)
        line("TCGETS", shown: { termios.bytes }) { Int(try slave.ioctl(0x5401, termios.pointer)) }
        line("TIOCGWINSZ-bad-pointer") { Int(try slave.ioctl(0x5413, UnsafeMutableRawPointer(bitPattern: 16))) }
        line("unknown-ioctl") { Int(try master.ioctl(0x54FF)) }
        let queued = Buffer(4)
        queued[0, as: Int32.self] = -1
        line("FIONREAD", shown: { queued.bytes }) { Int(try master.ioctl(0x541B, queued.pointer)) }
        line("write-slave") { try slave.write(Array("ping\n".utf8)) }
        line("poll-master") { try master.poll(events: Int16(POLLIN), timeout: 10_000) != 0 ? 1 : 0 }
        var read: [UInt8] = []
        line("read-master", shown: { read }) { read = try master.read(count: 64); return read.count }
        line("lseek-master") { Int(try master.seek(0)) }
        line("close-slave") { try slave.close(); return 0 }
        line("close-master") { try master.close(); return 0 }
        guard kvm else { return lines }

        let device = try client.open("/dev/kvm", flags: O_RDWR)
        lines.append("open-kvm 0 0")
        line("KVM_GET_API_VERSION") { Int(try device.ioctl(0xAE00)) }
        for capability in 0..<16 {
            line("KVM_CHECK_EXTENSION-\(capability)") { Int(try device.ioctl(0xAE03, value: UInt(capability))) }
        }
        line("KVM_GET_VCPU_MMAP_SIZE") { Int(try device.ioctl(0xAE04)) }
        // One entry's room for many: E2BIG, and the count written back.
        let cpuid = Buffer(8 + 40)
        cpuid[0, as: UInt32.self] = 1
        line("KVM_GET_SUPPORTED_CPUID-small", shown: { Array(cpuid.bytes.prefix(8)) }) {
            Int(try device.ioctl(0xC008_AE05, cpuid.pointer))
        }
        var vmHandle: UInt32?
        line("KVM_CREATE_VM") { vmHandle = UInt32(try device.ioctl(0xAE01)); return 0 }
        if let vmHandle {
            let vm = client.adopt(handle: vmHandle)
            var vcpu: RemoteFile?
            line("KVM_CREATE_VCPU") { vcpu = client.adopt(handle: UInt32(try vm.ioctl(0xAE41))); return 0 }
            let size = Int((try? device.ioctl(0xAE04)) ?? 0)
            var run: UnsafeMutableRawPointer?
            line("mmap-vcpu") {
                guard let vcpu else { throw Errno(EBADF) }
                run = try vcpu.map(length: size, protection: PROT_READ | PROT_WRITE, flags: MAP_SHARED)
                return 0
            }
            if let vcpu, let run {
                run.storeBytes(of: 1, toByteOffset: 1, as: UInt8.self)   // kvm_run.immediate_exit
                line("KVM_RUN", shown: { Array(UnsafeRawBufferPointer(start: run, count: 2)) }) { Int(try vcpu.ioctl(0xAE80)) }
                line("munmap-vcpu") { try vcpu.unmap(run, length: size); return 0 }
            }
            if let vcpu { line("close-vcpu") { try vcpu.close(); return 0 } }
            line("close-vm") { try vm.close(); return 0 }
        }
        line("close-kvm") { try device.close(); return 0 }
        return lines
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
