#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec

/// How the guests share an exported device (docs/policy.md, "Sharing modes").
public enum SharingMode: String, Sendable, CaseIterable {
    /// Every guest opens it as often as it likes, as local programs do.
    case shared
    /// One guest (one process tree) holds it open at a time; another's open is EBUSY until it lets go.
    case exclusive
    /// Every guest opens it; only the foreground guest's files get what the plug-in gives the active VT
    /// (input events, DRM master), the others what a program on an inactive VT gets.
    case foreground
}

/// A device the backend offers to guests: a path or a glob, the spec class that serves it, how guests share it.
public struct DeviceExport: Sendable, Equatable {
    public var pattern: String
    public var className: String?
    public var sharing: SharingMode = .shared

    /// `PATH` or `PATH=CLASS`.
    public init(_ argument: String) {
        if let eq = argument.lastIndex(of: "="), !argument[argument.index(after: eq)...].contains("/") {
            pattern = String(argument[..<eq])
            className = String(argument[argument.index(after: eq)...])
        } else {
            pattern = argument
            className = nil
        }
    }

    public init(pattern: String, className: String?, sharing: SharingMode = .shared) {
        self.pattern = pattern
        self.className = className
        self.sharing = sharing
    }

    /// `PATH[=CLASS][,sharing=MODE]`, as `--device` and the config file's `device` give it.
    public static func parse(_ argument: String) throws -> DeviceExport {
        var options = argument.split(separator: ",", omittingEmptySubsequences: false)
        var sharing = SharingMode.shared
        while options.count > 1, let last = options.last, last.hasPrefix("sharing=") {
            let name = String(last.dropFirst("sharing=".count))
            guard let mode = SharingMode(rawValue: name) else {
                throw ExportError.unknownSharingMode(name, in: argument)
            }
            sharing = mode
            options.removeLast()
        }
        var export = DeviceExport(options.joined(separator: ","))
        export.sharing = sharing
        return export
    }

    func matches(_ path: String) -> Bool { fnmatch(pattern, path, FNM_PATHNAME) == 0 }
}

public enum ExportError: Error, CustomStringConvertible {
    case unknownSharingMode(String, in: String)

    public var description: String {
        switch self {
        case .unknownSharingMode(let name, let argument):
            return "\(argument): no sharing mode '\(name)' (\(SharingMode.allCases.map(\.rawValue).joined(separator: ", ")))"
        }
    }
}

/// Decides which paths a guest may open and which class serves each.
struct ExportTable {
    let exports: [DeviceExport]
    let specs: SpecSet

    /// Whether `path` is the folder an export's pattern names its nodes in ("/dev/dri" for "/dev/dri/*"):
    /// a guest may stat it and list the exported nodes in it.
    func holdsDevices(_ path: String) -> Bool {
        exports.contains { e in
            guard let slash = e.pattern.lastIndex(of: "/"), slash != e.pattern.startIndex else { return false }
            let folder = e.pattern[..<slash]
            return folder == path && !folder.contains(where: { "*?[".contains($0) })
        }
    }

    /// How guests share an exported path (its first matching export decides, as for its class).
    func sharing(of path: String) -> SharingMode { exports.first { $0.matches(path) }?.sharing ?? .shared }

    /// The class of an exported path, `.some(nil)` for an exported path no spec class claims, nil when not exported.
    func classFor(_ path: String) -> SpecClass?? {
        guard let export = exports.first(where: { $0.matches(path) }) else { return nil }
        if let name = export.className { return .some(specs.specClass(named: name)) }
        let found = specs.classes.first { c in c.devices.contains { fnmatch($0, path, FNM_PATHNAME) == 0 } }
        return .some(found)
    }
}
