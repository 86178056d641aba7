#if canImport(Glibc)
import Glibc
#endif

/// What `paradice guest` decides before it starts anything: checked maps, the module to load, the daemon
/// to run. Pure functions over paths, so that their errors are tested without a kernel module.
public enum GuestSetup {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// A `--map GUEST=BACKEND`: two absolute paths, the guest's under /dev (where the module puts nodes).
    public static func checkMap(_ map: String) throws -> (guest: String, backend: String) {
        guard let eq = map.firstIndex(of: "=") else { throw Failure("--map \(map): want GUEST=BACKEND") }
        let guest = String(map[..<eq]), backend = String(map[map.index(after: eq)...])
        guard guest.hasPrefix("/dev/"), guest.count > 5, !guest.hasSuffix("/") else {
            throw Failure("--map \(map): the guest path must be a node under /dev/")
        }
        guard backend.hasPrefix("/") else { throw Failure("--map \(map): the backend path must be absolute") }
        if guest.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) {
            throw Failure("--map \(map): no . or .. in the guest path")
        }
        return (guest, backend)
    }

    /// A backend URL the frontends dial: unix:PATH, unix://PATH, tcp:HOST:PORT, tcp://HOST:PORT.
    public static func checkBackend(_ url: String) throws {
        if url.hasPrefix("unix:") && url.count > 5 { return }
        if let scheme = ["tcp://", "tcp:"].first(where: url.hasPrefix) {
            let rest = url.dropFirst(scheme.count)
            if let colon = rest.lastIndex(of: ":"), colon != rest.startIndex, !rest[..<colon].contains("/"),
               let port = Int(rest[rest.index(after: colon)...].filter { $0 != "/" }), port > 0, port < 65536 { return }
        }
        throw Failure("--backend \(url): want unix:PATH or tcp://HOST:PORT")
    }

    /// The module file: the one given, else paradice.ko beside the program, else the kernel's extra/ folder.
    public static func modulePath(given: String?, programFolder: String, release: String,
                                  exists: (String) -> Bool) throws -> String {
        if let given {
            guard exists(given) else { throw Failure("--module \(given): no such file") }
            return given
        }
        let candidates = [programFolder + "/paradice.ko", "/lib/modules/\(release)/extra/paradice.ko"]
        guard let found = candidates.first(where: exists) else {
            throw Failure("no paradice.ko at \(candidates.joined(separator: " or ")): build Kernel/paradice or pass --module")
        }
        return found
    }

    /// The lines of a daemon's status file: key → value, and its nodes.
    public struct Status {
        public var fields: [String: String] = [:]
        public var nodes: [String] = []   // "guest-path M:m backend-path class open-files"
        public init(text: String) {
            for line in text.split(separator: "\n") {
                guard let space = line.firstIndex(of: " ") else { continue }
                let key = String(line[..<space]), value = String(line[line.index(after: space)...])
                if key == "node" { nodes.append(value) } else { fields[key] = value }
            }
        }
    }
}
