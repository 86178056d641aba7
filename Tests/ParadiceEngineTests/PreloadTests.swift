import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

let programSources: String = {
    let parts = #filePath.split(separator: "/").dropLast()
    return "/" + parts.joined(separator: "/") + "/Programs"
}()

/// `paradice run --backend URL [extra] -- command…`, with its output. A TCP backend is a plain one (the test
/// backends and the driver VM's) unless `extra` brings TLS options. `namespace`: run inside that network
/// namespace (ip netns exec), to reach a backend listening on TCP there.
func paradiceRun(_ backend: String, _ command: [String], extra: [String] = [], namespace: String? = nil,
                 timeout: Double = 30) throws -> (status: Int32, output: String, errors: String) {
    let p = Process()
    let plain = backend.hasPrefix("tcp") && !extra.contains { $0.hasPrefix("--tls-") || $0 == "--psk-file" } ? ["--plain-tcp"] : []
    let arguments = ["run", "--backend", backend] + plain + extra + ["--"] + command
    if let namespace {
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", namespace, productsFolder + "/paradice"] + arguments
    } else {
        p.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        p.arguments = arguments
    }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Drain both pipes while it runs: a program that prints more than a pipe holds must not block.
    let collected = PipeCollector(out, err)
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
    let (output, errors) = collected.finish()
    return (p.terminationStatus, output, withoutThePlainTCPWarning(errors))
}

/// A client's output without the line `paradice run --plain-tcp` prints of its own (the driver VM's backend
/// is reached over plain TCP): what is left is the client's, to compare with the same client natively.
func withoutThePlainTCPWarning(_ text: String) -> String {
    let warning = "paradice: warning: plain TCP: "
    guard text.contains(warning) else { return text }
    return text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix(warning) }.joined(separator: "\n")
}

/// Compiles one of Programs/*.c into the backend's scratch folder.
func compile(_ name: String, into folder: String, flags: [String] = ["-O1"]) throws -> String {
    let output = folder + "/" + name
    let r = try run("/usr/bin/gcc", flags + ["-pthread", "-o", output, programSources + "/\(name).c"])
    guard r.status == 0 else { throw BackendFailure(log: "gcc \(name): \(r.output)") }
    return output
}

/// A pty made natively on this machine; the program under test reaches its slave through Paradice.
final class NativePty: @unchecked Sendable {
    let master: Int32
    let slavePath: String
    init() throws {
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        self.master = master
        var unlock: Int32 = 0
        var n: UInt32 = 0
        // Each pointer is used only inside the closure that lends it.
        guard master >= 0,
              withUnsafeMutablePointer(to: &unlock, { paradice_ioctl(master, 0x4004_5431, UInt(bitPattern: $0)) }) == 0,
              withUnsafeMutablePointer(to: &n, { paradice_ioctl(master, 0x8004_5430, UInt(bitPattern: $0)) }) == 0
        else { throw Errno.current }
        slavePath = "/dev/pts/\(n)"
    }
    deinit { close(master) }
}

@Suite("unmodified programs through paradice run", .serialized)
struct PreloadTests {
    @Test func sttyReadsAndSetsAForwardedPty() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let pty = try NativePty()
        let all = try paradiceRun(backend.endpoint, ["stty", "-F", pty.slavePath, "-a"])
        #expect(all.status == 0, "\(all.errors)")
        #expect(all.output.contains("speed 38400 baud"))
        #expect(all.output.contains("intr = ^C"))
        let set = try paradiceRun(backend.endpoint, ["stty", "-F", pty.slavePath, "cols", "100", "rows", "40"])
        #expect(set.status == 0, "\(set.errors)")
        // Checked on the backend side: the kernel's own window size of that pty.
        var ws = [UInt16](repeating: 0, count: 4)
        #expect(ws.withUnsafeMutableBytes { paradice_ioctl(pty.master, 0x5413, UInt(bitPattern: $0.baseAddress)) } == 0)
        #expect(ws[0] == 40 && ws[1] == 100)
        #expect(backend.log.contains("guest=stty"))
    }

    @Test func ipTuntapAddsAndDeletesAnInterfaceOnTheBackend() throws {
        let namespace = "pdrun\(getpid())"
        try #require(run("/usr/sbin/ip", ["netns", "add", namespace]).status == 0)
        defer { _ = try? run("/usr/sbin/ip", ["netns", "del", namespace]) }
        let backend = try BackendProcess(devices: ["/dev/net/tun"], namespace: namespace)
        let add = try paradiceRun(backend.endpoint, ["ip", "tuntap", "add", "dev", "pdt0", "mode", "tun"])
        #expect(add.status == 0, "\(add.errors)")
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pdt0"]).status == 0)
        #expect(try run("/usr/sbin/ip", ["link", "show", "pdt0"]).status != 0)   // not on the guest's side
        let del = try paradiceRun(backend.endpoint, ["ip", "tuntap", "del", "dev", "pdt0", "mode", "tun"])
        #expect(del.status == 0, "\(del.errors)")
        #expect(try run("/usr/sbin/ip", ["-n", namespace, "link", "show", "pdt0"]).status != 0)
    }

    @Test func pythonIoctlAndSelect() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let pty = try NativePty()
        let script = """
            import os, fcntl, termios, struct, select, sys
            fd = os.open("\(pty.slavePath)", os.O_RDWR | os.O_NOCTTY)
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            print("winsize", struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\\0" * 8))[:2])
            r, _, _ = select.select([fd], [], [], 0.1)
            print("before", bool(r), flush=True)
            local, _ = os.pipe()   # a local descriptor in the same select: only the forwarded one wakes it
            os.write(fd, b"armed\\n")   # the writer below waits for this, however slowly the program starts
            r, _, _ = select.select([fd, local], [], [], 10)
            print("after", r == [fd], os.read(fd, 100))
            """
        let writer = Thread {
            var seen = ""
            var buffer = [UInt8](repeating: 0, count: 64)
            var p = pollfd(fd: pty.master, events: Int16(POLLIN), revents: 0)
            while !seen.contains("armed"), poll(&p, 1, 20_000) == 1 {
                let n = read(pty.master, &buffer, buffer.count)
                if n <= 0 { break }
                seen += String(decoding: buffer[0..<n], as: UTF8.self)
            }
            usleep(200_000)   // the program is in its select, or about to be
            _ = write(pty.master, "hello\n", 6)
        }
        writer.start()
        let result = try paradiceRun(backend.endpoint, ["python3", "-c", script])
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("winsize (24, 80)"))
        #expect(result.output.contains("before False"))
        #expect(result.output.contains("after True b'hello\\n'"))
    }

    @Test func ddReadsAForwardedDevice() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let pty = try NativePty()
        _ = write(pty.master, "line one\n", 9)
        let result = try paradiceRun(backend.endpoint, ["dd", "if=\(pty.slavePath)", "bs=64", "count=1", "status=none"])
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output == "line one\n")
    }

    @Test func aMultithreadedProgram() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("threads", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("workers 4, reader got 4 bytes"))
    }

    @Test func aFortifiedLargeFileProgram() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("fortified", into: backend.folder, flags: ["-O2", "-D_FORTIFY_SOURCE=2", "-D_FILE_OFFSET_BITS=64"])
        let symbols = try run("/usr/bin/nm", ["-D", program]).output
        for symbol in ["__read_chk", "__poll_chk", "__open64_2"] { #expect(symbols.contains(symbol), "\(symbol)") }
        let pty = try NativePty()
        let writer = Thread {
            usleep(700_000)
            _ = write(pty.master, "fortified\n", 10)
        }
        writer.start()
        let result = try paradiceRun(backend.endpoint, [program, pty.slavePath, "64"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        // The backend's pty major (136) and the slave's minor.
        let minor = pty.slavePath.split(separator: "/").last!
        #expect(result.output.contains("read 10 bytes: fortified\n, major 136 minor \(minor), queued 0"))
    }

    @Test func epollWritevAndStdio() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("events", into: backend.folder)
        let pty = try NativePty()
        // Each line goes in once the program says it waits for it ("ready", "second"): however slow its start,
        // the first wait finds nothing and the later ones find their line.
        let client = Process()
        client.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        client.arguments = ["run", "--backend", backend.endpoint, "--", program, pty.slavePath]
        let out = Pipe(), err = Pipe()
        client.standardOutput = out
        client.standardError = err
        try client.run()
        var output = ""
        for (cue, line) in [("ready\n", "evented\n"), ("second\n", "abcdefg\n")] {
            while !output.contains(cue) {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                output += String(decoding: chunk, as: UTF8.self)
            }
            _ = write(pty.master, line, line.utf8.count)
        }
        output += String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        client.waitUntilExit()
        let result = (status: client.terminationStatus, output: output,
                      errors: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("before: 0"))
        #expect(result.output.contains("after: 1 ready, forwarded yes"))
        #expect(result.output.contains("read 8: evented"))
        #expect(result.output.contains("drained: 0"))
        #expect(result.output.contains("ppoll 0 pselect 0"))
        #expect(result.output.contains("ready again: ppoll 1 pselect 1, readv 8: abc|defg"))
        #expect(result.output.contains("done"))
        // What the program wrote (writev, then stdio) arrives at the native master, after the echo of the input.
        var buffer = [UInt8](repeating: 0, count: 256)
        var text = ""
        var p = pollfd(fd: pty.master, events: Int16(POLLIN), revents: 0)
        while poll(&p, 1, 500) == 1 {
            let n = read(pty.master, &buffer, 256)
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        #expect(text.contains("vector\r\n"))
        #expect(text.contains("stdio\r\n"))
    }

    @Test func repliesThatBreakTheTrustModelAreRefused() throws {
        // A backend that breaks the protocol on purpose (Programs/hostile-backend.py): each broken reply
        // fails its ioctl with EPROTO and one line naming the rule, and writes nothing of the program's.
        let folder = NSTemporaryDirectory() + "paradice-hostile-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let backend = Process()
        backend.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        backend.arguments = [programSources + "/hostile-backend.py", folder + "/hostile.sock"]
        let announced = Pipe()
        backend.standardOutput = announced
        try backend.run()
        defer { kill(backend.processIdentifier, SIGKILL); backend.waitUntilExit() }
        _ = announced.fileHandleForReading.availableData   // "listening on …": it accepts
        let script = """
            import os, fcntl, errno
            fd = os.open("/dev/hostile", os.O_RDWR)
            for command in (0x5413, 0x5414, 0x5415, 0x5416):
                buffer = bytearray(b"original")
                try:
                    fcntl.ioctl(fd, command, buffer, True)
                    print(hex(command), "accepted", bytes(buffer))
                except OSError as e:
                    print(hex(command), errno.errorcode[e.errno], bytes(buffer))
            """
        let result = try paradiceRun("unix:" + folder + "/hostile.sock", ["python3", "-c", script],
                                     extra: ["--map", "/dev/hostile=/dev/hostile"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        for command in ["0x5413", "0x5414", "0x5415", "0x5416"] {
            #expect(result.output.contains("\(command) EPROTO b'original'"), "\(result.output)")
        }
        #expect(result.errors.contains("ioctl 0x5413: ioctl reply writes memory the frontend did not send"), "\(result.errors)")
        #expect(result.errors.contains("ioctl 0x5414: the backend's PD_NEED rounds did not converge in 16 rounds"))
        #expect(result.errors.contains("ioctl 0x5415: ioctl reply region past the frame"))
        #expect(result.errors.contains("ioctl 0x5416: PD_NEED slot outside the gathered regions"))

        // A lawful reply that makes a new file but cannot be written back (the argument is read-only memory):
        // as a kernel whose copy to user memory fails, the call fails with EFAULT and leaves no descriptor.
        let readOnly = """
            import ctypes, errno, os
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
            libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
            page = libc.mmap(None, 4096, 1, 0x22, -1, 0)   # PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS
            fd = os.open("/dev/hostile", os.O_RDWR)
            before = len(os.listdir("/proc/self/fd"))
            r = libc.ioctl(fd, 0x5417, page)
            print("0x5417", r, errno.errorcode.get(ctypes.get_errno()), len(os.listdir("/proc/self/fd")) - before)
            """
        let faulted = try paradiceRun("unix:" + folder + "/hostile.sock", ["python3", "-c", readOnly],
                                      extra: ["--map", "/dev/hostile=/dev/hostile"])
        #expect(faulted.output.contains("0x5417 -1 EFAULT 0"), "\(faulted.output)\(faulted.errors)")
        let closed = (try? String(contentsOfFile: folder + "/hostile.sock.closed", encoding: .utf8)) ?? ""
        #expect(closed.split(separator: "\n").contains("close 7"), "closed: \(closed)")

        // A new handle in a slot is taken from the reply's bytes and becomes a descriptor of the program's; a
        // slot whose bytes the reply does not carry adopts nothing.
        let slots = """
            import fcntl, os, struct
            fd = os.open("/dev/hostile", os.O_RDWR)
            before = len(os.listdir("/proc/self/fd"))
            out = fcntl.ioctl(fd, 0x5418, bytes(8))
            new = struct.unpack_from("<i", out)[0]
            print("0x5418", len(os.listdir("/proc/self/fd")) - before, new not in (fd, 9), out[4:] == bytes(4))
            out = fcntl.ioctl(fd, 0x5419, b"abcdefgh")
            print("0x5419", out, len(os.listdir("/proc/self/fd")) - before)
            """
        let adopted = try paradiceRun("unix:" + folder + "/hostile.sock", ["python3", "-c", slots],
                                      extra: ["--map", "/dev/hostile=/dev/hostile"])
        #expect(adopted.output.contains("0x5418 1 True True"), "\(adopted.output)\(adopted.errors)")
        #expect(adopted.output.contains("0x5419 b'abcdefgh' 1"), "\(adopted.output)\(adopted.errors)")
        #expect(adopted.errors.contains("ioctl 0x5419: a new handle in no region the reply writes"), "\(adopted.errors)")
    }

    @Test func aCloseRacingAReadLeavesTheReadItsFile() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("closerace", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("in-flight read got 6: after\n"), "\(result.output)")
        #expect(result.output.contains("closed descriptor: EBADF"))
    }

    @Test func tenThousandForwardedWakeUpsOnAPty() throws {
        // Each wait starts with nothing to read; the writer sends the next byte only after the program
        // echoed the last, so every wait needs its own forwarded event (a lost one is a 5 s expiry).
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("wakeups", into: backend.folder)
        let pty = try NativePty()
        let count = 10_000
        let writer = ByteWriter(pty.master, count: count)
        writer.start()
        let result = try paradiceRun(backend.endpoint, [program, pty.slavePath, String(count)], timeout: 600)
        let writerFailure = writer.finish()
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("10000 wake-ups: epoll_wait 3334, poll 3333, select 3333"), "\(result.output)")
        #expect(writerFailure == nil, "\(writerFailure ?? "")")
    }

    @Test func descriptorsAcrossDupForkAndExec() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let program = try compile("lifecycle", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("exec child ok"))
        #expect(result.output.contains("lifecycle ok"))
    }

    @Test func anExitingChildReleasesTheDeviceBeforeItsParentsWaitReturns() throws {
        // Over TCP, as with a driver VM: the release must not wait for the backend to notice a closed socket.
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], tcp: true)
        let program = try compile("exitrelease", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program, String(backend.pid), "/dev/ptmx"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("released at every exit"))
    }

    @Test func mmapIsTheDevicesOwnSharedMappingOnTheSameHost() throws {
        let backend = try BackendProcess(devices: ["/dev/kvm"], extra: ["--share-mappings"])
        let program = try compile("mapping", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("KVM_RUN -1 EINTR"))
    }

    @Test func mmapAcrossTheBoundaryIsAMirrorSyncedAtThePluginsPoints() throws {
        // Over TCP no descriptor can travel: the backend maps the vcpu, the program gets a mirror, and the
        // spec's sync clause on KVM_RUN sends kvm_run to the device before the call and back after it.
        let backend = try BackendProcess(devices: ["/dev/kvm"], tcp: true, extra: ["--plugins", "kvm"])
        let program = try compile("mapping", into: backend.folder)
        let result = try paradiceRun(backend.endpoint, [program])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("KVM_RUN -1 EINTR"))
        #expect(backend.log.contains("mapped"))
    }

    @Test func mmapOfADeviceWithoutMmapIsEnodev() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let script = """
            import os, mmap, errno
            fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
            try:
                mmap.mmap(fd, 4096)
            except OSError as e:
                print("mmap", errno.errorcode[e.errno])
            """
        let result = try paradiceRun(backend.endpoint, ["python3", "-c", script])
        #expect(result.output.contains("mmap ENODEV"), "\(result.errors)")
    }

    @Test func sysfsIdentificationThroughAnExportedTree() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"], extra: ["--tree", "/sys"])
        let program = try compile("sysfs", into: backend.folder)
        let native = try run(program, ["/dev/ptmx"])
        let forwarded = try paradiceRun(backend.endpoint, [program, "/dev/ptmx"])
        #expect(forwarded.status == 0, "\(forwarded.errors)")
        #expect(native.output.contains("link ../../devices/virtual/tty/ptmx"))
        #expect(native.output.contains("uevent DEVNAME=ptmx"))
        // Native root may write sysfs files; through the tree export it is read-only.
        let expected = native.output.replacingOccurrences(of: "write open: Permission denied", with: "write open: Read-only file system")
            .replacingOccurrences(of: "write open: allowed", with: "write open: Read-only file system")
        #expect(forwarded.output == expected)
        #expect(backend.log.contains("guest=sysfs"))
    }

    @Test func aMappedPath() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let pty = try NativePty()
        _ = write(pty.master, "mapped\n", 7)
        let result = try paradiceRun(backend.endpoint, ["dd", "if=/dev/paradice-console", "bs=64", "count=1", "status=none"],
                                     extra: ["--map", "/dev/paradice-console=\(pty.slavePath)"])
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output == "mapped\n")
    }

    @Test func anUnreachableBackendIsOneClearLine() throws {
        let result = try paradiceRun("unix:/nonexistent/paradice.sock", ["stty", "-F", "/dev/ptmx", "-a"])
        #expect(result.status != 0)
        #expect(result.errors.contains("paradice: cannot reach the backend at unix:/nonexistent/paradice.sock"))
    }

    @Test func aBackendThatDiesIsEioNotAHang() throws {
        var backend: BackendProcess? = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"])
        let pty = try NativePty()
        let endpoint = backend!.endpoint
        let script = """
            import os, sys, time, errno
            fd = os.open("\(pty.slavePath)", os.O_RDWR | os.O_NOCTTY)
            print("open", flush=True)
            sys.stdin.readline()
            try:
                os.read(fd, 10)
            except OSError as e:
                print("error", errno.errorcode[e.errno], flush=True)
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: productsFolder + "/paradice")
        p.arguments = ["run", "--backend", endpoint] + (endpoint.hasPrefix("tcp") ? ["--plain-tcp"] : []) + ["--", "python3", "-c", script]
        let input = Pipe(), out = Pipe(), err = Pipe()
        p.standardInput = input
        p.standardOutput = out
        p.standardError = err
        try p.run()
        var seen = ""
        while !seen.contains("open") { seen += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self) }
        kill(backend!.pid, SIGKILL)
        backend = nil
        input.fileHandleForWriting.write("go\n".data(using: .utf8)!)
        p.waitUntilExit()
        seen += String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(seen.contains("error EIO"))
        // One line says which backend was lost.
        let said = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(said.contains("paradice: lost the backend at \(endpoint)"), "\(said)")
    }
}

/// Writes bytes 0, 1, 2, … (mod 256) to a pty master one at a time, each after the program echoed the one
/// before (and the first after its "R"), on a thread of its own.
final class ByteWriter: @unchecked Sendable {
    private let master: Int32
    private let count: Int
    private let done = DispatchSemaphore(value: 0)
    private var failure: String?

    init(_ master: Int32, count: Int) {
        self.master = master
        self.count = count
    }

    func start() {
        Thread { [self] in
            defer { done.signal() }
            guard let ready = next(), ready == UInt8(ascii: "R") else { failure = "no ready byte from the program"; return }
            for i in 0..<count {
                var byte = UInt8(i % 256)
                guard write(master, &byte, 1) == 1 else { failure = "write of byte \(i): errno \(errno)"; return }
                guard let echo = next() else { failure = "no echo of byte \(i) within 10 s"; return }
                guard echo == byte else { failure = "echo \(echo) of byte \(i) (\(byte))"; return }
            }
        }.start()
    }

    /// The next byte from the program, or nil after 10 s (or when it is gone).
    private func next() -> UInt8? {
        var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 10_000) == 1 else { return nil }
        var byte: UInt8 = 0
        return read(master, &byte, 1) == 1 ? byte : nil
    }

    /// Waits for the writer; what went wrong, if anything.
    func finish() -> String? {
        done.wait()
        return failure
    }
}

/// Reads a process's stdout and stderr on threads of their own until both close.
final class PipeCollector: @unchecked Sendable {
    private var output = Data(), errors = Data()
    private let done = DispatchGroup()

    init(_ out: Pipe, _ err: Pipe) {
        for (pipe, isOutput) in [(out, true), (err, false)] {
            done.enter()
            Thread {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                if isOutput { self.output = data } else { self.errors = data }
                self.done.leave()
            }.start()
        }
    }

    func finish() -> (String, String) {
        done.wait()
        return (String(decoding: output, as: UTF8.self), String(decoding: errors, as: UTF8.self))
    }
}
