#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec

/// A device the backend offers to guests: a path or a glob, and the spec class that serves it.
public struct DeviceExport: Sendable, Equatable {
    public var pattern: String
    public var className: String?

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

    public init(pattern: String, className: String?) {
        self.pattern = pattern
        self.className = className
    }

    func matches(_ path: String) -> Bool { fnmatch(pattern, path, FNM_PATHNAME) == 0 }
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

    /// The class of an exported path, `.some(nil)` for an exported path no spec class claims, nil when not exported.
    func classFor(_ path: String) -> SpecClass?? {
        guard let export = exports.first(where: { $0.matches(path) }) else { return nil }
        if let name = export.className { return .some(specs.specClass(named: name)) }
        let found = specs.classes.first { c in c.devices.contains { fnmatch($0, path, FNM_PATHNAME) == 0 } }
        return .some(found)
    }
}
