import ArgumentParser
import ParadiceClient
import ParadiceSystem
import ParadiceToolSupport
#if canImport(Glibc)
import Glibc
#endif

struct BackendOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The backend: unix:/path, tcp://host:port, shm:/path, vsock://cid:port or serial:/path.", valueName: "url"))
    var backend: String

    @OptionGroup var tls: SecurityOptions

    func validate() throws { try tls.check(backend: backend) }

    func connect() throws -> ParadiceClient {
        do {
            return try ParadiceClient.connect(backend, name: "paradice \(CommandLine.arguments.dropFirst().first ?? "")",
                                              security: tls.security)
        } catch {
            printError("paradice: cannot reach the backend at \(backend): \(error)")
            throw ExitCode(1)
        }
    }
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the devices a backend exports.")
    @OptionGroup var options: BackendOption

    func run() throws {
        let client = try options.connect()
        for d in client.devices {
            var line = pad(d.path, 24) + pad(d.className.isEmpty ? "-" : d.className, 8)
            if d.mode != 0 { line += "char \(d.rdev >> 8 & 0xfff):\(d.rdev & 0xff | (d.rdev >> 12) & 0xfff00)" }
            print(line)
        }
    }
}

struct Focus: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a guest the foreground of the backend's foreground devices (input events, DRM master).",
        discussion: "GUEST is a connected guest's PSK identity, certificate subject or CN, or 'uid N'. The backend's policy must allow it (may-focus); without a policy only uid 0 or the backend's own user, over a unix socket.")
    @OptionGroup var options: BackendOption
    @Argument(help: "The guest to bring to the foreground.") var guest: String

    func run() throws {
        let client = try options.connect()
        do {
            let files = try client.focus(guest)
            print("\(guest) is the foreground (\(files) open file\(files == 1 ? "" : "s") of foreground devices)")
        } catch let error as Errno {
            switch error {
            case .notPermitted: printError("paradice: focus: the backend's policy does not let this client switch the foreground")
            case .noSuchFileOrDirectory: printError("paradice: focus: no guest named '\(guest)' is connected to the backend")
            case .invalidArgument: printError("paradice: focus: '\(guest)' names more than one connected guest")
            default: printError("paradice: focus: \(error)")
            }
            throw ExitCode(1)
        }
    }
}

struct Cat: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy a forwarded device's bytes to standard output.")
    @OptionGroup var options: BackendOption
    @Argument(help: "The device path on the backend.") var path: String
    @Option(help: "Stop after this many bytes.") var bytes: Int?

    func run() throws {
        let client = try options.connect()
        let file: RemoteFile
        do { file = try client.open(path, flags: O_RDONLY | O_NOCTTY) } catch {
            printError("paradice: \(path): \(error)")
            throw ExitCode(1)
        }
        var total = 0
        while bytes.map({ total < $0 }) ?? true {
            let chunk = try file.read(count: min(65536, (bytes ?? Int.max) - total))
            if chunk.isEmpty { break }
            var sent = 0
            while sent < chunk.count {
                let n = chunk[sent...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
                if n <= 0 { throw ExitCode(1) }
                sent += n
            }
            total += chunk.count
        }
    }
}
