import ArgumentParser
import CParadice
import ParadiceToolSupport
#if canImport(Glibc)
import Glibc
#endif

/// The guest side of the paravirtual driver: the guest kernel's module (Kernel/paradice) holds device nodes
/// whose calls paradice-guestd serves from a backend.
struct Guest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Give this machine device nodes that a backend's devices serve (kernel module + daemon).",
        subcommands: [GuestStart.self, GuestStatus.self], defaultSubcommand: GuestStart.self)
}

let statusFolder = "/run/paradice"

struct GuestStart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Load the module if needed, start paradice-guestd and wait until its nodes are there.",
        discussion: """
            Example: paradice guest --backend tcp://10.0.2.2:17000 --map /dev/pdk/video0=/dev/video0
            """)

    @Option(name: .long, help: ArgumentHelp("The backend: unix:/path, tcp://host:port, shm:/path, vsock://cid:port or serial:/path.", valueName: "url"))
    var backend: String

    @Option(name: .customLong("map"), help: ArgumentHelp("Put the backend's BACKEND node at GUEST (repeatable).", valueName: "guest=backend"))
    var maps: [String] = []

    @Option(help: ArgumentHelp("The module to load when /dev/paradice is absent.", valueName: "path"))
    var module: String?

    @Flag(help: "Run the daemon in this process's place (its log on standard error) instead of detaching it.")
    var foreground = false

    @OptionGroup var tls: SecurityOptions

    func validate() throws {
        do {
            try GuestSetup.checkBackend(backend)
            try tls.check(backend: backend)
            for map in maps { _ = try GuestSetup.checkMap(map) }
        } catch let failure as GuestSetup.Failure {
            throw ValidationError(failure.description)
        }
    }

    func run() throws {
        let daemon = programFolder() + "/paradice-guestd"
        guard access(daemon, X_OK) == 0 else { fail("no paradice-guestd beside \(programFolder())") }
        if access("/dev/paradice", F_OK) != 0 { try loadModule() }
        var arguments = [daemon, "--backend", backend] + tls.daemonArguments
        for map in maps { arguments += ["--map", map] }
        if foreground {
            let argv = arguments.map { strdup($0) } + [nil]
            execv(daemon, argv)
            fail("cannot run \(daemon): \(String(cString: strerror(errno)))")
        }
        mkdir(statusFolder, 0o755)
        let log = "\(statusFolder)/guestd-\(getpid()).log"
        let pid = try spawnDetached(arguments, log: log)
        let status = "\(statusFolder)/guest-\(pid).status"
        // Registration reads the backend's sysfs over the network: under emulation it takes a while.
        for _ in 0..<1200 {
            var code: Int32 = 0
            if waitpid(pid, &code, WNOHANG) == pid {
                printError("paradice: paradice-guestd ended before its nodes were there; its log (\(log)):")
                printError(readText(log) ?? "")
                throw ExitCode(1)
            }
            if let text = readText(status), GuestSetup.Status(text: text).fields["state"] == "ready" {
                let s = GuestSetup.Status(text: text)
                print("paradice-guestd \(pid): backend \(backend), session \(s.fields["session"] ?? "?"), log \(log)")
                for node in s.nodes { print("  " + node) }
                if s.nodes.isEmpty { print("  (no nodes: see the log)") }
                return
            }
            usleep(100_000)
        }
        printError("paradice: paradice-guestd \(pid) is not ready after 120 s; its log is \(log)")
        throw ExitCode(1)
    }

    private func loadModule() throws {
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: names.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let path: String
        do {
            path = try GuestSetup.modulePath(given: module, programFolder: programFolder(), release: release) { access($0, R_OK) == 0 }
        } catch let failure as GuestSetup.Failure { fail(failure.description) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { fail("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        if paradice_finit_module(fd) != 0 && errno != EEXIST {
            fail("cannot load \(path): \(String(cString: strerror(errno))) (root, and a module built for \(release)?)")
        }
        for _ in 0..<50 where access("/dev/paradice", F_OK) != 0 { usleep(100_000) }
        guard access("/dev/paradice", F_OK) == 0 else { fail("\(path) is loaded but /dev/paradice did not appear") }
    }

    private func spawnDetached(_ arguments: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80)   // POSIX_SPAWN_SETSID (a GNU name Glibc does not import): out of this session
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let r = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, environ)
        guard r == 0 else { fail("cannot start \(arguments[0]): \(String(cString: strerror(r)))") }
        return pid
    }
}

struct GuestStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the running daemons: backend, session, nodes.")

    func run() throws {
        guard let dir = opendir(statusFolder) else { print("no paradice-guestd is running"); return }
        defer { closedir(dir) }
        var shown = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix("guest-"), name.hasSuffix(".status"), let text = readText(statusFolder + "/" + name) else { continue }
            let s = GuestSetup.Status(text: text)
            guard let pid = s.fields["pid"].flatMap({ Int32($0) }), kill(pid, 0) == 0 || errno == EPERM else { continue }
            shown += 1
            print("paradice-guestd \(pid): \(s.fields["state"] ?? "?"), backend \(s.fields["backend"] ?? "?"), session \(s.fields["session"] ?? "?")")
            print("  requests: \(s.fields["requests"] ?? "?"); mirrored mappings: \(s.fields["mappings"] ?? "0"); shared mappings: \(s.fields["shared"] ?? "0"); threads: \(s.fields["threads"] ?? "?")")
            print("  " + pad("node", 22) + pad("number", 9) + pad("backend", 22) + pad("class", 14) + "open files")
            for node in s.nodes {
                let f = node.split(separator: " ").map(String.init)
                guard f.count >= 5 else { continue }
                print("  " + pad(f[0], 22) + pad(f[1], 9) + pad(f[2], 22) + pad(f[3], 14) + f[4])
            }
        }
        if shown == 0 { print("no paradice-guestd is running") }
    }
}

private func fail(_ message: String) -> Never {
    printError("paradice: " + message)
    Glibc.exit(1)
}

private func readText(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buffer, 1, buffer.count, file)
        if n <= 0 { break }
        bytes += buffer[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}
