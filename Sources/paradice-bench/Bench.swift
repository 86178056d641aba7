import ArgumentParser
import CParadice
import ParadiceClient
import ParadicePlan
import ParadiceSpec
import ParadiceToolSupport
import ParadiceTransport
import ParadiceWire
#if canImport(Glibc)
import Glibc
#endif

/// Prints, in one run, each forwarded operation next to its native baseline and to the raw round trip
/// of the transport it uses, so that ratios compare figures taken on the same machine at the same time.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paradice-bench",
        abstract: "Benchmark forwarded operations against native calls and the raw transport.",
        discussion: "Starts its own paradice-backend (and an echo peer) and runs paradice from the folder of this program.")

    @Option(help: "Timed repetitions of each small operation.") var iterations = 20000
    @Option(help: "Bytes to move in each throughput run.") var bulkBytes = 64 << 20
    @Option(help: "The spec folder for the backend.") var specs: String?
    @Option(help: ArgumentHelp("Only time forwarded TIOCGWINSZ against this running backend (it must export /dev/ptmx); repeated: each in the same run, with its ratio to the first's.", valueName: "url"))
    var backend: [String] = []
    @Option(help: ArgumentHelp("Only time the raw round trip (a 40-byte frame) against this running echo peer (`paradice-backend --echo`); repeated: each in the same run, with its ratio to the first's; with --backend too.", valueName: "url"))
    var echo: [String] = []
    @Option(help: ArgumentHelp("With --backend over TLS: this frontend's certificate, key and CA.", valueName: "file")) var tlsCert: String?
    @Option(help: ArgumentHelp("", visibility: .hidden)) var tlsKey: String?
    @Option(help: ArgumentHelp("", visibility: .hidden)) var tlsCa: String?
    @Option(help: ArgumentHelp("With --backend over TLS: a pre-shared key file.", valueName: "file")) var pskFile: String?
    @Flag(help: "With --backend: plain TCP.") var plainTcp = false
    @Option(help: ArgumentHelp("Only the in-process, native and per-transport rows of this transport (unix, tcp, shm, tls (certificates), tls (psk)), and the C program's; repeated for several. Skips connecting, start-up and throughput: a quick run to repeat on a loaded machine.", valueName: "name"))
    var only: [String] = []

    func run() throws {
        if !backend.isEmpty || !echo.isEmpty {
            let security = TransportSecurity(certificate: tlsCert, key: tlsKey, authority: tlsCa, presharedKeys: pskFile, plainTCP: plainTcp)
            let ws = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
            defer { ws.deallocate() }
            var table = Table()
            var firstEcho: (String, Stats)?
            for url in echo {
                let stats = try rawRoundTrip(Endpoint(url), security: security)
                table.add("\(url): raw round trip (echo, 40-byte frame)", stats, versus: firstEcho.map { [$0] } ?? [])
                if firstEcho == nil { firstEcho = (url, stats) }
            }
            var first: (String, Stats)?
            for url in backend {
                let client = try ParadiceClient.connect(url, name: "bench", security: security)
                let master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
                let stats = measure(iterations) { _ = try? master.ioctl(0x5413, ws) }
                client.disconnect()
                table.add("\(url): forwarded TIOCGWINSZ", stats, versus: first.map { [$0] } ?? [])
                if first == nil { first = (url, stats) }
            }
            table.print()
            return
        }
        let folder = try temporaryFolder()
        let backendPath = programFolder() + "/paradice-backend"
        guard let specFolder = specs ?? SpecLocator.defaultFolder() else { throw ValidationError("no spec folder found; pass --specs DIR") }
        let exported = ["--device", "/dev/ptmx", "--device", "/dev/pts/*", "--device", "/dev/kvm", "--specs", specFolder, "--log-level", "warning"]
        let backend = try Child(backendPath, ["--listen", "unix:\(folder)/backend.sock", "--listen", "tcp://127.0.0.1:0", "--plain-tcp",
                                              "--listen", "shm:\(folder)/backend-ring.sock"] + exported, listeners: 3)
        let echo = try Child(backendPath, ["--echo", "--listen", "unix:\(folder)/echo.sock", "--listen", "tcp://127.0.0.1:0", "--plain-tcp",
                                           "--listen", "shm:\(folder)/echo-ring.sock"], listeners: 3)
        // The same over TLS: a backend and an echo peer that want a certificate of the run's own CA, or its PSK.
        let credentials = try TLSCredentials(folder)
        let tlsBackend = try Child(backendPath, ["--listen", "tcp://127.0.0.1:0"] + credentials.backendOptions + exported, listeners: 1)
        let tlsEcho = try Child(backendPath, ["--echo", "--listen", "tcp://127.0.0.1:0"] + credentials.backendOptions, listeners: 1)
        defer { backend.stop(); echo.stop(); tlsBackend.stop(); tlsEcho.stop(); credentials.remove(); rmdir(folder) }

        print("paradice-bench: \(iterations) iterations per small operation, \(bulkBytes >> 20) MiB per throughput run")
        print("machine: \(cpuModel()), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) cores\n")
        var table = Table()
        var rawUnix: Stats?

        // What the engine adds per call, in process: planning from the spec.
        let specSet = try SpecSet.load(directory: specFolder)
        let planner = Planner(specs: specSet)
        let winsize = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        defer { winsize.deallocate() }
        let snapshot = SnapshotMemory()
        let planning = measure(iterations) {
            _ = try? planner.plan(command: 0x5413, argument: UInt64(UInt(bitPattern: winsize)), className: "tty", memory: snapshot)
        }
        table.add("in process: plan TIOCGWINSZ", planning)

        let nativePty = try NativePty()
        let ws = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        defer { ws.deallocate() }
        let native = measure(iterations) { _ = paradice_ioctl(nativePty.master, 0x5413, UInt(bitPattern: ws)) }
        table.add("native TIOCGWINSZ", native)

        let cpuidBytes = 8 + 40 * 102   // a 4 KiB in/out argument: kvm_cpuid2 with 102 entries
        let cpuid = UnsafeMutableRawPointer.allocate(byteCount: cpuidBytes, alignment: 16)
        defer { cpuid.deallocate() }
        let kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        var nativeCpuid: Stats?
        if kvm >= 0 {
            nativeCpuid = measure(iterations / 4) {
                cpuid.storeBytes(of: UInt32(102), as: UInt32.self)
                _ = paradice_ioctl(kvm, 0xC008_AE05, UInt(bitPattern: cpuid))
            }
            table.add("native KVM_GET_SUPPORTED_CPUID (4 KiB in/out)", nativeCpuid!)
            close(kvm)
        }

        let plainTCP = TransportSecurity(plainTCP: true)
        let transports: [(String, String, String, TransportSecurity)] = [
            ("unix", backend.endpoints[0], echo.endpoints[0], TransportSecurity()),
            ("tcp", backend.endpoints[1], echo.endpoints[1], plainTCP),
            ("shm", backend.endpoints[2], echo.endpoints[2], TransportSecurity()),
            ("tls (certificates)", tlsBackend.endpoints[0], tlsEcho.endpoints[0], credentials.guest),
            ("tls (psk)", tlsBackend.endpoints[0], tlsEcho.endpoints[0], credentials.psk),
        ]
        // Connecting: TCP, the TLS handshake, PD_HELLO and its reply, then goodbye.
        var plainConnect: Stats?
        for (name, backendURL, _, security) in transports.dropFirst() where only.isEmpty {
            let connecting = measure(200) { (try? ParadiceClient.connect(backendURL, name: "bench", security: security))?.disconnect() }
            if plainConnect == nil { plainConnect = connecting }
            table.add("\(name): connect and handshake", connecting, versus: [("tcp", plainConnect!)])
        }
        var tcpRaw: Stats?, tcpForwarded: Stats?, rawShm: Stats?
        for (name, backendURL, echoURL, security) in transports where only.isEmpty || only.contains(name) {

            let raw = try rawRoundTrip(Endpoint(echoURL), security: security)
            table.add("\(name): raw round trip (echo, 40-byte frame)", raw, versus: tcpRaw.map { [("tcp", $0)] } ?? [])
            if name == "unix" { rawUnix = raw }
            if name == "tcp" { tcpRaw = raw }
            if name == "shm" {
                rawShm = raw
                if let rawUnix { table.add("shm: raw round trip against unix's", raw, versus: [("unix raw", rawUnix)]) }
            }

            let client = try ParadiceClient.connect(backendURL, name: "bench", security: security)
            let master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
            let forwarded = measure(iterations) { _ = try? master.ioctl(0x5413, ws) }
            table.add("\(name): forwarded TIOCGWINSZ", forwarded,
                      versus: [("native", native), ("raw", raw)] + (tcpForwarded.map { [("plain tcp", $0)] } ?? []))
            if name == "tcp" { tcpForwarded = forwarded }

            if let nativeCpuid {
                let remoteKvm = try client.open("/dev/kvm", flags: O_RDWR)
                let forwardedCpuid = measure(iterations / 4) {
                    cpuid.storeBytes(of: UInt32(102), as: UInt32.self)
                    _ = try? remoteKvm.ioctl(0xC008_AE05, cpuid)
                }
                table.add("\(name): forwarded KVM_GET_SUPPORTED_CPUID (4 KiB)", forwardedCpuid,
                          versus: [("native", nativeCpuid), ("raw", raw)])
            }
            try? master.close()
        }


        // An unmodified C program's ioctl loop, natively and through the preload frontend.
        if let loop = try? compileProgram(Self.ioctlLoopSource, named: "ioctl-loop", in: folder) {
            let paradice = programFolder() + "/paradice"
            if let native = runAndRead(loop, [loop, String(iterations)]).flatMap(Stats.init(line:)),
               let forwarded = runAndRead(paradice, [paradice, "run", "--backend", backend.endpoints[0], "--", loop, String(iterations)])
                   .flatMap(Stats.init(line:)) {
                table.add("C program: native TIOCGWINSZ", native)
                table.add("C program through paradice run (unix)", forwarded, versus: [("native", native), ("raw", rawUnix ?? native)])
                if let overShm = runAndRead(paradice, [paradice, "run", "--backend", backend.endpoints[2], "--", loop, String(iterations)])
                    .flatMap(Stats.init(line:)) {
                    table.add("C program through paradice run (shm)", overShm, versus: [("native", native), ("raw", rawShm ?? native)])
                }
            }
            unlink(loop)
        }
        // poll then read, as an event loop does: with read-ahead the read takes no round trip of its own.
        if only.isEmpty || only.contains("unix"), let loop = try? compileProgram(Self.pollReadLoopSource, named: "poll-read-loop", in: folder) {
            let paradice = programFolder() + "/paradice"
            if let native = runAndRead(loop, [loop, String(iterations)]).flatMap(Stats.init(line:)),
               let forwarded = runAndRead(paradice, [paradice, "run", "--backend", backend.endpoints[0], "--", loop, String(iterations)])
                   .flatMap(Stats.init(line:)) {
                table.add("C program: native poll + read of a pty master", native)
                table.add("C program: poll + read through paradice run (unix)", forwarded, versus: [("native", native), ("raw", rawUnix ?? native)])
            }
            unlink(loop)
        }
        if !only.isEmpty {
            table.print()
            return
        }
        // Start-up: a program that does nothing, plainly and under paradice run.
        let paradice = programFolder() + "/paradice"
        let plain = measure(30) { _ = runAndRead("/bin/true", ["/bin/true"]) }
        let wrapped = measure(30) { _ = runAndRead(paradice, [paradice, "run", "--backend", backend.endpoints[0], "--", "/bin/true"]) }
        table.add("start-up: /bin/true", plain)
        table.add("start-up: paradice run -- /bin/true", wrapped, versus: [("plain", plain)])

        for chunk in [4096, 65536, 1 << 20] {
            let nativeRate = try nativePtyThroughput(chunk: chunk)
            let client = try ParadiceClient.connect(backend.endpoints[0], name: "bench")
            let forwardedRate = try forwardedPtyThroughput(client, chunk: chunk)
            table.addRate("pty write, \(chunk / 1024) KiB writes: native", nativeRate)
            table.addRate("pty write, \(chunk / 1024) KiB writes: forwarded (unix)", forwardedRate, versus: nativeRate)
        }
        table.print()
    }

    // MARK: throughput

    /// Bytes per second written into a pty master while a thread drains the raw-mode slave.
    private func nativePtyThroughput(chunk: Int) throws -> Double {
        let pty = try NativePty()
        return try ptyThroughput(slave: pty.slave, chunk: chunk) { buffer in write(pty.master, buffer.baseAddress, buffer.count) }
    }

    private func forwardedPtyThroughput(_ client: ParadiceClient, chunk: Int) throws -> Double {
        let master = try client.open("/dev/ptmx", flags: O_RDWR | O_NOCTTY)
        let number = UnsafeMutableRawPointer.allocate(byteCount: 4, alignment: 4)
        defer { number.deallocate() }
        try master.ioctl(0x8004_5430, number)
        number.storeBytes(of: Int32(0), as: Int32.self)
        try master.ioctl(0x4004_5431, number)
        try master.ioctl(0x8004_5430, number)
        let slave = open("/dev/pts/\(number.load(as: UInt32.self))", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else { throw Errno.current }
        makeRaw(slave)
        defer { try? master.close() }
        return try ptyThroughput(slave: slave, chunk: chunk) { buffer in (try? master.write(buffer)) ?? -1 }
    }

    private func ptyThroughput(slave: Int32, chunk: Int, write: (UnsafeRawBufferPointer) -> Int) throws -> Double {
        let total = bulkBytes
        let drained = Drain(fd: slave, expected: total)
        drained.start()
        let data = [UInt8](repeating: 0x61, count: chunk)
        let start = now()
        var sent = 0
        while sent < total {
            let n = data.withUnsafeBytes { write(UnsafeRawBufferPointer(rebasing: $0[0..<min(chunk, total - sent)])) }
            guard n > 0 else { throw Errno.ioError }
            sent += n
        }
        drained.wait()
        let seconds = Double(now() - start) / 1e9
        close(slave)
        return Double(total) / seconds
    }
}

// MARK: measuring

struct Stats {
    var median: Double   // nanoseconds
    var p90: Double

    init(median: Double, p90: Double) {
        self.median = median
        self.p90 = p90
    }

    /// "MEDIAN P90" in nanoseconds, as the C loop prints them.
    init?(line: String) {
        let parts = line.split(separator: " ").compactMap { Double(String($0).trimmingWhitespace) }
        guard parts.count == 2 else { return nil }
        self.init(median: parts[0], p90: parts[1])
    }
}

func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Times each call separately after a warm-up; the median is what the ratios use.
extension Bench {
    /// A 40-byte frame to an echo peer and back: the transport alone, no engine.
    func rawRoundTrip(_ endpoint: Endpoint, security: TransportSecurity) throws -> Stats {
        let socket = try FrameSocket.connect(endpoint, security: security)
        defer { socket.close() }
        let probe = Frame(op: PD_IOCTL.code, request: 1, handle: 1, body: [UInt8](repeating: 0, count: 40))
        return measure(iterations) {
            try? socket.send(probe)
            _ = try? socket.receive()
        }
    }
}

func measure(_ iterations: Int, _ body: () -> Void) -> Stats {
    for _ in 0..<max(iterations / 10, 100) { body() }
    var samples = [UInt64](repeating: 0, count: iterations)
    for i in 0..<iterations {
        let t0 = now()
        body()
        samples[i] = now() - t0
    }
    samples.sort()
    return Stats(median: Double(samples[iterations / 2]), p90: Double(samples[iterations * 9 / 10]))
}

struct Table {
    var rows: [(String, String, String)] = []

    mutating func add(_ name: String, _ stats: Stats, versus baselines: [(String, Stats)] = []) {
        let ratios = baselines.map { String(format2(stats.median / $0.1.median)) + "× " + $0.0 }.joined(separator: ", ")
        rows.append((name, "\(us(stats.median)) µs (p90 \(us(stats.p90)))", ratios))
    }

    mutating func addRate(_ name: String, _ rate: Double, versus baseline: Double? = nil) {
        rows.append((name, "\(format2(rate / 1e6)) MB/s", baseline.map { "\(format2(rate / $0))× native" } ?? ""))
    }

    func print() {
        let width = (rows.map { $0.0.count }.max() ?? 0) + 2
        for row in rows {
            Swift.print(pad(row.0, width) + pad(row.1, 28) + row.2)
        }
    }

    private func us(_ ns: Double) -> String { format2(ns / 1000) }
}

// MARK: helpers

extension Bench {
    /// Times TIOCGWINSZ on a pty master it opens itself; prints "median p90" in nanoseconds.
    static let ioctlLoopSource = """
        #include <fcntl.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/ioctl.h>
        #include <time.h>
        static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
        static int cmp(const void *a, const void *b) { long long x = *(const long long *)a, y = *(const long long *)b; return x < y ? -1 : x > y; }
        int main(int argc, char **argv) {
            int n = atoi(argv[1]);
            int fd = open("/dev/ptmx", O_RDWR | O_NOCTTY);
            if (fd < 0) { perror("open"); return 1; }
            struct winsize w;
            long long *t = malloc(sizeof *t * n);
            for (int i = 0; i < n / 10; i++) ioctl(fd, TIOCGWINSZ, &w);
            for (int i = 0; i < n; i++) { long long t0 = now(); ioctl(fd, TIOCGWINSZ, &w); t[i] = now() - t0; }
            qsort(t, n, sizeof *t, cmp);
            printf("%lld %lld\\n", t[n / 2], t[n * 9 / 10]);
            return 0;
        }
        """

    /// Times a poll of a pty master its slave has just written a byte to, and the read of it; prints
    /// "median p90" in nanoseconds.
    static let pollReadLoopSource = """
        #include <fcntl.h>
        #include <poll.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/ioctl.h>
        #include <time.h>
        #include <unistd.h>
        static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
        static int cmp(const void *a, const void *b) { long long x = *(const long long *)a, y = *(const long long *)b; return x < y ? -1 : x > y; }
        int main(int argc, char **argv) {
            int n = atoi(argv[1]), unlock = 0, number;
            int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
            if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) != 0 || ioctl(master, TIOCGPTN, &number) != 0) { perror("ptmx"); return 1; }
            char path[64], b[16];
            snprintf(path, sizeof path, "/dev/pts/%d", number);
            int slave = open(path, O_RDWR | O_NOCTTY);
            if (slave < 0) { perror("slave"); return 1; }
            long long *t = malloc(sizeof *t * n);
            for (int i = 0; i < n + n / 10; i++) {
                if (write(slave, "x", 1) != 1) return 1;
                long long t0 = now();
                struct pollfd p = { master, POLLIN, 0 };
                if (poll(&p, 1, -1) != 1 || read(master, b, sizeof b) != 1) { perror("poll/read"); return 1; }
                if (i >= n / 10) t[i - n / 10] = now() - t0;
            }
            qsort(t, n, sizeof *t, cmp);
            printf("%lld %lld\\n", t[n / 2], t[n * 9 / 10]);
            return 0;
        }
        """
}

/// Compiles C source with the system compiler; nil when there is none.
func compileProgram(_ source: String, named name: String, in folder: String) throws -> String {
    let c = folder + "/\(name).c", binary = folder + "/\(name)"
    guard let f = fopen(c, "w") else { throw Errno.current }
    fputs(source, f)
    fclose(f)
    defer { unlink(c) }
    guard runAndRead("/usr/bin/cc", ["cc", "-O2", "-o", binary, c]) != nil else { throw Errno.noSuchFileOrDirectory }
    return binary
}

/// Runs a program to completion; its standard output when it exits 0.
@discardableResult
func runAndRead(_ path: String, _ argv: [String], quiet: Bool = false) -> String? {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { return nil }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    if quiet { posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) }
    let args = argv.map { strdup($0) } + [nil]
    defer { args.forEach { free($0) } }
    var child: pid_t = 0
    let r = posix_spawn(&child, path, &actions, nil, args, environ)
    posix_spawn_file_actions_destroy(&actions)
    close(pipeFDs[1])
    guard r == 0 else { close(pipeFDs[0]); return nil }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(pipeFDs[0], &buffer, buffer.count)
        if n <= 0 { break }
        output += buffer[0..<n]
    }
    close(pipeFDs[0])
    var status: Int32 = 0
    waitpid(child, &status, 0)
    return status == 0 ? String(decoding: output, as: UTF8.self) : nil
}

final class NativePty {
    let master: Int32
    let slave: Int32

    init() throws {
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        self.master = master
        var value: Int32 = 0
        // The pointer is used only inside the closure that lends it (TIOCSPTLCK, then TIOCGPTN).
        func ptyIoctl(_ command: UInt) -> Int {
            withUnsafeMutablePointer(to: &value) { paradice_ioctl(master, command, UInt(bitPattern: $0)) }
        }
        guard master >= 0, ptyIoctl(0x4004_5431) == 0, ptyIoctl(0x8004_5430) == 0 else { throw Errno.current }
        slave = open("/dev/pts/\(value)", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else { throw Errno.current }
        makeRaw(slave)
    }

    deinit {
        close(master)
        close(slave)
    }
}

func makeRaw(_ fd: Int32) {
    var t = termios()
    tcgetattr(fd, &t)
    cfmakeraw(&t)
    tcsetattr(fd, TCSANOW, &t)
}

/// Reads a descriptor until `expected` bytes have come, on its own thread.
final class Drain: @unchecked Sendable {
    let fd: Int32
    let expected: Int
    private var thread = pthread_t()

    init(fd: Int32, expected: Int) {
        self.fd = fd
        self.expected = expected
    }

    func start() {
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let drain = Unmanaged<Drain>.fromOpaque(raw!).takeRetainedValue()
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var got = 0
            while got < drain.expected {
                let n = read(drain.fd, &buffer, buffer.count)
                if n <= 0 { break }
                got += n
            }
            return nil
        }, me)
    }

    func wait() { pthread_join(thread, nil) }
}

/// A child process whose stdout announces its listeners.
final class Child {
    let pid: pid_t
    let endpoints: [String]

    init(_ path: String, _ arguments: [String], listeners: Int) throws {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { throw Errno.current }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
        posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let r = posix_spawn(&child, path, &actions, nil, argv, environ)
        posix_spawn_file_actions_destroy(&actions)
        close(pipeFDs[1])
        guard r == 0 else { throw Errno(r) }
        pid = child
        var text = ""
        var found: [String] = []
        var byte: UInt8 = 0
        while found.count < listeners, read(pipeFDs[0], &byte, 1) == 1 {
            if byte == 10 {
                if let last = text.split(separator: " ").last, text.contains("listening on") { found.append(String(last)) }
                text = ""
            } else {
                text.append(Character(UnicodeScalar(byte)))
            }
        }
        close(pipeFDs[0])
        endpoints = found
        guard found.count == listeners else { stop(); throw Errno.ioError }
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}


func temporaryFolder() throws -> String {
    var template = Array("/tmp/paradice-bench-XXXXXX".utf8CString)
    // mkdtemp answers a pointer into the template: read while the template is lent.
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!).map { String(cString: $0) } }) else {
        throw Errno.current
    }
    return made
}

func cpuModel() -> String {
    guard let f = fopen("/proc/cpuinfo", "r") else { return "unknown cpu" }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, 512, f) != nil {
        let s = String(cString: line)
        if s.hasPrefix("model name"), let colon = s.firstIndex(of: ":") {
            return String(s[s.index(after: colon)...]).trimmingWhitespace
        }
    }
    return "unknown cpu"
}

/// A CA, a backend's and a guest's certificate and a PSK, made for one run with the openssl CLI.
struct TLSCredentials {
    let folder: String

    init(_ parent: String) throws {
        folder = parent + "/tls"
        mkdir(folder, 0o700)
        let f = folder
        func openssl(_ arguments: [String]) throws {
            guard runAndRead("/usr/bin/openssl", ["openssl"] + arguments, quiet: true) != nil else {
                throw ValidationError("openssl \(arguments.first ?? ""): failed (is the openssl CLI installed?)")
            }
        }
        func key(_ name: String) throws { try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "\(f)/\(name).key"]) }
        func issue(_ name: String, _ extensions: String) throws {
            try key(name)
            try openssl(["req", "-new", "-key", "\(f)/\(name).key", "-subj", "/CN=\(name)", "-out", "\(f)/\(name).csr"])
            guard let ext = fopen("\(f)/\(name).ext", "w") else { throw Errno.current }
            fputs(extensions, ext)
            fclose(ext)
            try openssl(["x509", "-req", "-in", "\(f)/\(name).csr", "-CA", "\(f)/ca.pem", "-CAkey", "\(f)/ca.key", "-CAcreateserial",
                         "-days", "2", "-extfile", "\(f)/\(name).ext", "-out", "\(f)/\(name).pem"])
        }
        try key("ca")
        try openssl(["req", "-new", "-x509", "-key", "\(f)/ca.key", "-out", "\(f)/ca.pem", "-days", "2", "-subj", "/CN=paradice-bench CA",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        try issue("backend", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
        try issue("guest", "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:guest\n")
        guard let key = runAndRead("/usr/bin/openssl", ["openssl", "rand", "-hex", "32"]), let psk = fopen("\(f)/psk", "w") else {
            throw ValidationError("openssl rand: failed")
        }
        fputs("bench:" + key.trimmingWhitespace + "\n", psk)
        fclose(psk)
    }

    var backendOptions: [String] {
        ["--tls-cert", "\(folder)/backend.pem", "--tls-key", "\(folder)/backend.key", "--tls-ca", "\(folder)/ca.pem", "--psk-file", "\(folder)/psk"]
    }
    var guest: TransportSecurity {
        TransportSecurity(certificate: "\(folder)/guest.pem", key: "\(folder)/guest.key", authority: "\(folder)/ca.pem")
    }
    var psk: TransportSecurity { TransportSecurity(presharedKeys: "\(folder)/psk") }

    func remove() {
        for name in ["ca.key", "ca.pem", "ca.srl", "backend.key", "backend.csr", "backend.ext", "backend.pem",
                     "guest.key", "guest.csr", "guest.ext", "guest.pem", "psk"] { unlink("\(folder)/\(name)") }
        rmdir(folder)
    }
}
