import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("tun through the backend", .serialized)
struct TunTests {
    /// The backend runs in a network namespace of the test's own, so the interface and its packets stay there.
    @Test func interfaceAndPacketsBothWays() throws {
        let namespace = "pdtest\(getpid())"
        try #require(run("/usr/sbin/ip", ["netns", "add", namespace]).status == 0)
        defer { _ = try? run("/usr/sbin/ip", ["netns", "del", namespace]) }
        _ = try run("/usr/sbin/ip", ["netns", "exec", namespace, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        _ = try run("/usr/sbin/ip", ["netns", "exec", namespace, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])

        let backend = try BackendProcess(devices: ["/dev/net/tun"], namespace: namespace)
        let client = try backend.connect()
        let tun = try client.open("/dev/net/tun", flags: O_RDWR)
        let ifr = Buffer(40)
        for (i, b) in "pdt0".utf8.enumerated() { ifr[i, as: UInt8.self] = b }
        ifr[16, as: UInt16.self] = 0x0001 | 0x1000   // IFF_TUN | IFF_NO_PI
        try tun.ioctl(Ioctl.TUNSETIFF, ifr.pointer)
        #expect(String(cString: Array(ifr.bytes[0..<16]) + [0]) == "pdt0")
        let link = try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pdt0"])
        #expect(link.status == 0 && link.output.contains("pdt0"))
        // TUNGETIFF writes the struct back: the name and flags the driver keeps.
        let got = Buffer(40)
        try tun.ioctl(Ioctl.TUNGETIFF, got.pointer)
        #expect(got[16, as: UInt16.self] & 0x1001 == 0x1001)

        #expect(try run("/usr/sbin/ip", ["-n", namespace, "addr", "add", "10.77.0.1/24", "dev", "pdt0"]).status == 0)
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "set", "pdt0", "up"]).status == 0)

        // Guest → interface: a UDP datagram written through Paradice reaches a socket in the namespace.
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        listener.arguments = ["netns", "exec", namespace, "python3", "-c", """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("10.77.0.1", 5555))
            s.settimeout(10)
            print(s.recvfrom(200)[0].decode(), flush=True)
            """]
        let out = Pipe()
        listener.standardOutput = out
        try listener.run()
        let packet = udpPacket(from: (10, 77, 0, 2), 4444, to: (10, 77, 0, 1), 5555, payload: Array("through paradice".utf8))
        var tries = 0
        while listener.isRunning && tries < 50 {
            #expect(try tun.write(packet) == packet.count)
            tries += 1
            usleep(100_000)
        }
        listener.waitUntilExit()
        let received = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(received.trimmingCharacters(in: .whitespacesAndNewlines) == "through paradice")

        // Interface → guest: a datagram routed into pdt0 is read through Paradice, after poll says so.
        _ = try run("/usr/sbin/ip", ["netns", "exec", namespace, "python3", "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'back from the kernel', ('10.77.0.2', 5556))"])
        var found = false
        for _ in 0..<20 where !found {
            guard try tun.poll(events: Int16(POLLIN), timeout: 2000) & Int16(POLLIN) != 0 else { break }
            let bytes = try tun.read(count: 2048)
            // IPv4, UDP, to 10.77.0.2:5556
            if bytes.count > 28, bytes[0] >> 4 == 4, bytes[9] == 17, Array(bytes[16..<20]) == [10, 77, 0, 2],
               UInt16(bytes[22]) << 8 | UInt16(bytes[23]) == 5556 {
                #expect(String(decoding: bytes[28...], as: UTF8.self) == "back from the kernel")
                found = true
            }
        }
        #expect(found)
    }

    func udpPacket(from src: (UInt8, UInt8, UInt8, UInt8), _ sport: UInt16, to dst: (UInt8, UInt8, UInt8, UInt8), _ dport: UInt16,
                   payload: [UInt8]) -> [UInt8] {
        let total = 20 + 8 + payload.count
        var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 1, 0x40, 0, 64, 17, 0, 0,
                          src.0, src.1, src.2, src.3, dst.0, dst.1, dst.2, dst.3]
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(p[i]) << 8 | UInt32(p[i + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        p[10] = UInt8(checksum >> 8)
        p[11] = UInt8(checksum & 0xff)
        let udpLength = 8 + payload.count
        p += [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff),
              UInt8(udpLength >> 8), UInt8(udpLength & 0xff), 0, 0]   // UDP checksum 0: none, allowed on IPv4
        return p + payload
    }
}

@Suite("kvm through the backend", .serialized)
struct KvmTests {
    @Test func systemIoctlsMatchTheNativeDevice() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"])
        let client = try backend.connect()
        let kvm = try client.open("/dev/kvm", flags: O_RDWR)
        let native = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        try #require(native >= 0)
        defer { close(native) }
        #expect(try kvm.ioctl(Ioctl.KVM_GET_API_VERSION) == 12)
        for capability in 0..<64 {
            let forwarded = (try? kvm.ioctl(Ioctl.KVM_CHECK_EXTENSION, value: UInt(capability))) ?? -1
            #expect(forwarded == Int32(paradice_ioctl(native, UInt(Ioctl.KVM_CHECK_EXTENSION), UInt(capability))), "capability \(capability)")
        }
    }

    @Test func supportedCpuidWithItsFlexibleArray() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"])
        let client = try backend.connect()
        let kvm = try client.open("/dev/kvm", flags: O_RDWR)
        // Too small: E2BIG, as the native device answers.
        let small = Buffer(8 + 40)
        small[0, as: UInt32.self] = 1
        #expect(throws: Errno(E2BIG)) { try kvm.ioctl(Ioctl.KVM_GET_SUPPORTED_CPUID, small.pointer) }
        // Large enough: the entries equal the native answer, byte for byte.
        let forwarded = Buffer(8 + 40 * 256)
        forwarded[0, as: UInt32.self] = 256
        #expect(try kvm.ioctl(Ioctl.KVM_GET_SUPPORTED_CPUID, forwarded.pointer) == 0)
        let native = Buffer(8 + 40 * 256)
        native[0, as: UInt32.self] = 256
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        defer { close(fd) }
        #expect(paradice_ioctl(fd, UInt(Ioctl.KVM_GET_SUPPORTED_CPUID), UInt(bitPattern: native.pointer)) == 0)
        let entries = Int(native[0, as: UInt32.self])
        #expect(entries > 1 && forwarded[0, as: UInt32.self] == UInt32(entries))
        #expect(cpuIndependent(forwarded, entries) == cpuIndependent(native, entries))
    }

    /// The entries with the fields that name the CPU the caller ran on cleared: leaf 1's initial APIC id
    /// (EBX[31:24]) and the x2APIC id of leaves 0xB and 0x1F (EDX). The backend may run on another core.
    func cpuIndependent(_ buffer: Buffer, _ entries: Int) -> [UInt8] {
        var bytes = Array(buffer.bytes[0..<(8 + 40 * entries)])
        for i in 0..<entries {
            let base = 8 + 40 * i
            let function = UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16 | UInt32(bytes[base + 3]) << 24
            if function == 1 { bytes[base + 16 + 3] = 0 }
            if function == 0xB || function == 0x1F { for k in 24..<28 { bytes[base + k] = 0 } }
        }
        return bytes
    }

    @Test func createVmReturnsAHandleThatTakesIoctls() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"])
        let client = try backend.connect()
        let kvm = try client.open("/dev/kvm", flags: O_RDWR)
        let before = backend.openDescriptors()
        let handle = try kvm.ioctl(Ioctl.KVM_CREATE_VM, value: 0)
        #expect(handle > 0 && UInt32(handle) != kvm.handle)
        #expect(backend.openDescriptors() == before + 1)
        let vm = client.adopt(handle: UInt32(handle))
        #expect(try vm.ioctl(Ioctl.KVM_CHECK_EXTENSION, value: 9) > 0)   // KVM_CAP_NR_VCPUS on the VM
        // An address the kernel would map from the caller's memory cannot travel: refused, clearly.
        #expect(throws: Errno(EPERM)) { try vm.ioctl(Ioctl.KVM_SET_USER_MEMORY_REGION, Buffer(32).pointer) }
        #expect(backend.waitUntil { backend.log.contains("cannot travel as bytes") })
        try vm.close()
        #expect(backend.waitUntil { backend.openDescriptors() == before })
    }
}

@Suite("loop through the backend", .serialized)
struct LoopTests {
    @Test func getFreeAndErrnoOfAnUnboundDevice() throws {
        let backend = try BackendProcess(devices: ["/dev/loop-control", "/dev/loop*"])
        let client = try backend.connect()
        let control = try client.open("/dev/loop-control", flags: O_RDWR)
        let free = try control.ioctl(Ioctl.LOOP_CTL_GET_FREE)
        #expect(free >= 0)
        let loop = try client.open("/dev/loop\(free)", flags: O_RDWR)
        #expect(loop.mode & S_IFMT == S_IFBLK)
        #expect(throws: Errno(ENXIO)) { try loop.ioctl(Ioctl.LOOP_GET_STATUS64, Buffer(232).pointer) }
    }
}
