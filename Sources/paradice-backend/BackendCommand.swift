import ArgumentParser
import Logging
import ParadiceEngine
import ParadiceSpec
import ParadiceTransport
#if canImport(Glibc)
import Glibc
#endif

@main
struct BackendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paradice-backend",
        abstract: "Serve this machine's device files to Paradice guests.",
        discussion: """
            Every guest that connects gets a session of its own: the files it opens, and everything they \
            return, are closed when it disconnects or dies. Ioctls are forwarded as the specs say; an ioctl \
            no spec describes fails with ENOTTY.

            TCP listeners speak TLS 1.3: guests prove themselves with a certificate the CA signed \
            (--tls-cert, --tls-key, --tls-ca) or a pre-shared key (--psk-file, IDENTITY:HEXKEY lines). Plain \
            TCP, unauthenticated and unencrypted, only with --plain-tcp.

            Example: paradice-backend --listen unix:/run/paradice.sock --listen tcp://0.0.0.0:7000 \
            --tls-cert backend.pem --tls-key backend.key --tls-ca ca.pem \
            --device /dev/ptmx --device '/dev/pts/*' --device /dev/net/tun --device /dev/kvm
            """
    )

    @Option(name: .long, help: ArgumentHelp("Where to accept guests: unix:/path, tcp://host:port, shm:/path, vsock://cid:port or serial:/path (repeatable).", valueName: "url"))
    var listen: [String] = []

    @Option(name: .long, help: ArgumentHelp("Plug-ins to enable, comma-separated (repeatable).", valueName: "list"))
    var plugins: [String] = []

    @Option(name: .long, help: ArgumentHelp("A device (or glob) to export, with its spec class if the specs do not claim it and how guests share it (repeatable).", valueName: "path[=class][,sharing=shared|exclusive|foreground]"))
    var device: [String] = []

    @Option(name: .long, help: ArgumentHelp("The spec folder.", valueName: "dir"))
    var specs: String?

    @Option(name: .long, help: ArgumentHelp("A config file with the same settings: listen, plugins, device, specs, log-level, tls-cert, tls-key, tls-ca, psk-file, plain-tcp, policy.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    @Option(name: .long, help: ArgumentHelp("A read-only subtree guests may read, list and follow links in, e.g. /sys (repeatable).", valueName: "dir"))
    var tree: [String] = []

    @Flag(name: .long, help: "Let guests on this machine (unix sockets) mmap devices for real: they receive the device's descriptor.")
    var shareMappings = false

    @Option(name: .long, help: ArgumentHelp("Files one guest session may hold open, ioctl-created ones included; more are EMFILE (default 4096).", valueName: "n"))
    var maxOpenFiles: Int?

    @Option(name: .long, help: ArgumentHelp("Calls of one session on worker threads not yet answered; more are EAGAIN (default 1024).", valueName: "n"))
    var maxRequestsInFlight: Int?

    @Option(name: .long, help: ArgumentHelp("Worker threads running one session's calls at once; more calls wait for one (default 64).", valueName: "n"))
    var maxWorkers: Int?

    @Option(name: .long, help: ArgumentHelp("Bytes of device mappings one session may hold (K, M, G suffixes); more are ENOMEM (default 8G).", valueName: "bytes"))
    var maxMappedBytes: String?

    @Option(name: .long, help: ArgumentHelp("Bytes one session's reads in flight may fill; more are EAGAIN, one read always passes (default 64M).", valueName: "bytes"))
    var maxReadBytesInFlight: String?

    @Option(name: .long, help: ArgumentHelp("The largest frame a guest may send (at most 80M); a larger one ends its session (default 80M).", valueName: "bytes"))
    var maxFrame: String?

    @Option(name: .long, help: ArgumentHelp("Guest sessions at once; a further connection is refused (default 1024).", valueName: "n"))
    var maxSessions: Int?

    @Option(name: .long, help: ArgumentHelp("Seconds a new connection has to send its handshake before it is closed (default 10).", valueName: "s"))
    var handshakeTimeout: Int?

    @Option(name: .long, help: ArgumentHelp("Seconds a forked guest process has to claim the files its parent held at the fork; then they are dropped (default 60).", valueName: "s"))
    var forkTimeout: Int?

    @Option(name: .long, help: ArgumentHelp("The backend's certificate (PEM, with its chain) for TLS on TCP listeners.", valueName: "file"))
    var tlsCert: String?

    @Option(name: .long, help: ArgumentHelp("The certificate's private key (PEM).", valueName: "file"))
    var tlsKey: String?

    @Option(name: .long, help: ArgumentHelp("The CA whose certificates guests must show (PEM).", valueName: "file"))
    var tlsCa: String?

    @Option(name: .long, help: ArgumentHelp("Pre-shared keys guests may use instead: IDENTITY:HEXKEY lines (16 to 64 bytes).", valueName: "file"))
    var pskFile: String?

    @Option(name: .long, help: ArgumentHelp("Which guest may open which devices, how, and which ioctls (YAML, docs/policy.md); SIGHUP reloads it. Without one every guest may use every export.", valueName: "file"))
    var policy: String?

    @Flag(name: .long, help: "Serve TCP listeners without TLS: guests are neither authenticated nor encrypted.")
    var plainTcp = false

    @Flag(name: .long, help: .hidden)
    var echo = false

    mutating func run() throws {
        var settings = ConfigFile.Settings()
        if let config {
            do { settings = try ConfigFile.load(config) } catch { throw ValidationError("\(error)") }
        }
        let listen = settings.listen + self.listen
        let plugins = (settings.plugins + self.plugins).flatMap { $0.split(separator: ",").map { String($0).trimmingWhitespace } }.filter { !$0.isEmpty }
        let devices = settings.devices + device
        let level = logLevel ?? settings.logLevel ?? "info"
        guard let logLevelValue = Logger.Level(rawValue: level) else { throw ValidationError("unknown log level '\(level)'") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevelValue
            return handler
        }
        let logger = Logger(label: "paradice.backend")
        let security = TransportSecurity(certificate: tlsCert ?? settings.tlsCert, key: tlsKey ?? settings.tlsKey,
                                         authority: tlsCa ?? settings.tlsCA, presharedKeys: pskFile ?? settings.pskFile,
                                         plainTCP: plainTcp || settings.plainTCP)
        let endpoints: [Endpoint]
        do { endpoints = try listen.map(Endpoint.init) } catch { throw ValidationError("\(error)") }
        if endpoints.contains(where: \.isTCP), let problem = security.problem { throw ValidationError(problem) }
        if endpoints.contains(where: \.isTCP), security.plainTCP { printError("paradice-backend: " + TransportSecurity.plainWarning) }
        if echo {
            let listeners: [Listener]
            do { listeners = try endpoints.map { try Listener($0, security: security) } } catch {
                printError("paradice-backend: \(error)")
                throw ExitCode(1)
            }
            announce(listeners)
            EchoServer.run(listeners)
        }

        guard let specFolder = specs ?? settings.specs ?? locateSpecs() else {
            throw ValidationError("no spec folder found; pass --specs DIR")
        }
        var configuration = BackendConfiguration(specsDirectory: specFolder)
        configuration.listen = endpoints
        configuration.security = security
        configuration.plugins = plugins
        do { configuration.devices = try devices.map(DeviceExport.parse) } catch { throw ValidationError("\(error)") }
        configuration.shareMappings = shareMappings || settings.shareMappings
        configuration.trees = settings.trees + tree
        configuration.limits = try limits(settings.limits)
        configuration.policyFile = policy ?? settings.policy

        let backend: Backend
        do {
            backend = try Backend(configuration: configuration, availablePlugins: AvailablePlugins.all, logger: logger)
        } catch let errors as SpecErrors {
            for d in errors.diagnostics { printError("\(d)") }
            throw ExitCode(1)
        } catch let failure as PolicyFile.Failure {
            printError("\(failure)")
            throw ExitCode(1)
        } catch {
            printError("paradice-backend: \(error)")
            throw ExitCode(1)
        }
        announce(backend.listeners)
        backend.run()
    }

    /// The config file's limits, then the command line's over them.
    private func limits(_ file: [String: String]) throws -> GuestLimits {
        var limits = GuestLimits()
        func set(_ key: String, _ option: String?, _ keyPath: WritableKeyPath<GuestLimits, Int>, bytes: Bool = false, most: Int = .max) throws {
            guard let text = option ?? file[key] else { return }
            guard let value = bytes ? parseByteCount(text) : Int(text), value > 0, value <= most else {
                throw ValidationError("--\(key): '\(text)' is not a \(bytes ? "byte count" : "count") from 1 to \(most)")
            }
            limits[keyPath: keyPath] = value
        }
        try set("max-open-files", maxOpenFiles.map(String.init), \.openFiles)
        try set("max-requests-in-flight", maxRequestsInFlight.map(String.init), \.requestsInFlight)
        try set("max-workers", maxWorkers.map(String.init), \.workerThreads)
        try set("max-mapped-bytes", maxMappedBytes, \.mappedBytes, bytes: true)
        try set("max-read-bytes-in-flight", maxReadBytesInFlight, \.readBytesInFlight, bytes: true)
        try set("max-frame", maxFrame, \.maxFrame, bytes: true, most: GuestLimits().maxFrame)
        try set("max-sessions", maxSessions.map(String.init), \.sessions)
        try set("handshake-timeout", handshakeTimeout.map(String.init), \.handshakeSeconds)
        try set("fork-timeout", forkTimeout.map(String.init), \.forkTicketSeconds)
        return limits
    }

    private func locateSpecs() -> String? {
        if let env = getenv("PARADICE_SPECS") { return String(cString: env) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        var parts = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: "/").dropLast()
        for _ in 0..<4 {
            let base = "/" + parts.joined(separator: "/")
            for candidate in [base + "/Specs", base + "/share/paradice/Specs"] {
                var st = stat()
                if stat(candidate, &st) == 0 { return candidate }
            }
            parts = parts.dropLast()
        }
        return nil
    }
}


/// `4096`, `64K`, `80M`, `8G`.
func parseByteCount(_ text: String) -> Int? {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    guard let last = text.uppercased().last else { return nil }
    let scale = units[last] ?? 1
    let digits = scale == 1 ? Substring(text) : text.dropLast()
    guard let n = Int(digits) else { return nil }
    let (product, overflow) = n.multipliedReportingOverflow(by: scale)
    return overflow ? nil : product
}

func printError(_ s: String) {
    var line = s + "\n"
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
}

/// One line per listener on stdout, so that a parent that asked for port 0 learns the port.
func announce(_ listeners: [Listener]) {
    for listener in listeners {
        var line = "paradice-backend: listening on \(listener.endpoint)\n"
        _ = line.withUTF8 { write(1, $0.baseAddress, $0.count) }
    }
}
