import ArgumentParser
import ParadiceClient
import ParadiceSpec
import ParadiceToolSupport
#if canImport(Glibc)
import Glibc
#endif

/// Runs an unmodified program with the backend's devices forwarded: the preload frontend (a C library
/// that knows no device class) carries its file operations on those paths to the backend.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a program with device files forwarded to a backend.",
        discussion: """
            Opens of the paths the backend exports (and of those given with --map) go to the backend; \
            everything else is untouched. Example:
              paradice run --backend unix:/run/paradice.sock -- stty -F /dev/pts/3 -a
              paradice run --backend tcp://10.0.0.1:7000 --tls-cert me.pem --tls-key me.key --tls-ca ca.pem -- stty -a
            """)

    @OptionGroup var options: BackendOption

    @Option(name: .customLong("map"), help: ArgumentHelp("Forward GUEST as the backend's BACKEND path (repeatable).", valueName: "guest=backend"))
    var maps: [String] = []

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments, after --.")
    var command: [String] = []

    func run() throws {
        var program = command
        if program.first == "--" { program.removeFirst() }
        guard let executable = program.first else { throw ValidationError("name a program to run after --") }
        guard let library = preloadLibrary() else {
            printError("paradice: libParadicePreload.so is not installed beside \(programFolder())")
            throw ExitCode(1)
        }
        var patterns: [String]
        do {
            patterns = try ParadiceClient.connect(options.backend, name: "paradice run", security: options.tls.security).devices.map(\.path)
        } catch {
            // The program still runs; its opens of device paths fail with a clear message from the frontend.
            printError("paradice: cannot reach the backend at \(options.backend): \(error)")
            patterns = (try? SpecLocator.defaultFolder().map { try SpecSet.load(directory: $0) })??.classes.flatMap(\.devices) ?? []
        }
        for map in maps {
            guard let eq = map.firstIndex(of: "="), map.first == "/" else { throw ValidationError("--map takes /guest/path=/backend/path") }
            patterns.append(String(map[map.index(after: eq)...]))
        }
        setenv("PARADICE_BACKEND", options.backend, 1)
        options.tls.exportForPreload()
        setenv("PARADICE_FORWARD", patterns.joined(separator: ":"), 1)
        setenv("PARADICE_MAP", maps.joined(separator: ":"), 1)
        let existing = getenv("LD_PRELOAD").map { String(cString: $0) }
        setenv("LD_PRELOAD", existing.map { "\(library):\($0)" } ?? library, 1)
        let argv = program.map { strdup($0) } + [nil]
        execvp(executable, argv)
        printError("paradice: cannot run \(executable): \(String(cString: strerror(errno)))")
        throw ExitCode(127)
    }

    /// PARADICE_PRELOAD_LIBRARY (a colon-separated list) replaces the installed library: a build of the
    /// frontend under ASan, with the sanitizer's runtime first (scripts/sanitize-preload.sh).
    private func preloadLibrary() -> String? {
        if let chosen = getenv("PARADICE_PRELOAD_LIBRARY").map({ String(cString: $0) }), !chosen.isEmpty { return chosen }
        let folder = programFolder()
        for candidate in [folder + "/libParadicePreload.so", folder + "/../lib/paradice/libParadicePreload.so"] {
            if access(candidate, R_OK) == 0 { return candidate }
        }
        return nil
    }
}
