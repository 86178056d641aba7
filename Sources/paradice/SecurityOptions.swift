import ArgumentParser
import ParadiceToolSupport
import ParadiceTransport
#if canImport(Glibc)
import Glibc
#endif

/// How a frontend secures a TCP backend: TLS 1.3 with this machine's certificate, or a pre-shared key; plain
/// TCP only when asked for. Every command that reaches a backend takes these options; `paradice run` hands
/// them to the preload through the environment, `paradice guest` to the daemon as its own options.
struct SecurityOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("This frontend's certificate (PEM) for a TLS backend.", valueName: "file"))
    var tlsCert: String?

    @Option(name: .long, help: ArgumentHelp("The certificate's private key (PEM).", valueName: "file"))
    var tlsKey: String?

    @Option(name: .long, help: ArgumentHelp("The CA the backend's certificate must come from (PEM).", valueName: "file"))
    var tlsCa: String?

    @Option(name: .long, help: ArgumentHelp("A pre-shared key instead of certificates: one IDENTITY:HEXKEY line.", valueName: "file"))
    var pskFile: String?

    @Flag(name: .long, help: "Reach a TCP backend without TLS: neither authenticated nor encrypted.")
    var plainTcp = false

    /// The settings, with absolute paths: the preload and the daemon may run elsewhere than here.
    var security: TransportSecurity {
        TransportSecurity(certificate: tlsCert.map(absolute), key: tlsKey.map(absolute), authority: tlsCa.map(absolute),
                          presharedKeys: pskFile.map(absolute), plainTCP: plainTcp)
    }

    /// Refuses TCP with neither TLS nor --plain-tcp, and says plain TCP out loud.
    func check(backend: String) throws {
        guard backend.hasPrefix("tcp:") else { return }
        if let problem = security.problem { throw ValidationError(problem) }
        if plainTcp { printError("paradice: " + TransportSecurity.plainWarning) }
    }

    /// What the preload reads (Sources/ParadiceFrontendCore: pd_security_from_environment).
    func exportForPreload() {
        let s = security
        for (name, value) in [("PARADICE_TLS_CERT", s.certificate), ("PARADICE_TLS_KEY", s.key), ("PARADICE_TLS_CA", s.authority),
                              ("PARADICE_PSK_FILE", s.presharedKeys)] {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
        if s.plainTCP { setenv("PARADICE_PLAIN_TCP", "1", 1) } else { unsetenv("PARADICE_PLAIN_TCP") }
    }

    /// paradice-guestd's options for the same settings.
    var daemonArguments: [String] {
        let s = security
        var arguments: [String] = []
        if let v = s.certificate { arguments += ["--tls-cert", v] }
        if let v = s.key { arguments += ["--tls-key", v] }
        if let v = s.authority { arguments += ["--tls-ca", v] }
        if let v = s.presharedKeys { arguments += ["--psk-file", v] }
        if s.plainTCP { arguments.append("--plain-tcp") }
        return arguments
    }
}

private func absolute(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    guard let resolved = realpath(path, nil) else { return path }   // the layer below names what is missing
    defer { free(resolved) }
    return String(cString: resolved)
}
