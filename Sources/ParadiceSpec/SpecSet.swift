#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A compiled set of spec files sharing one namespace.
public final class SpecSet: @unchecked Sendable {
    public internal(set) var files: [SpecFile] = []
    public internal(set) var classes: [SpecClass] = []
    public internal(set) var records: [String: Record] = [:]
    public internal(set) var enums: [String: EnumSet] = [:]
    public internal(set) var ioctls: [Ioctl] = []

    var diagnostics: [Diagnostic] = []
    var constantSyntax: [String: (Expr, SourceLocation)] = [:]
    var constantValues: [String: Int64] = [:]
    var constantsInProgress: Set<String> = []
    var aliasSyntax: [String: TypeSyntax] = [:]
    var aliasesInProgress: Set<String> = []
    var declaredAt: [String: SourceLocation] = [:]
    var knownFieldNames: Set<String> = []

    public static let builtinConstants: [String: Int64] = [
        "_IOC_NONE": 0, "_IOC_WRITE": 1, "_IOC_READ": 2,
    ]

    // MARK: loading

    /// Loads every `*.spec` file of a folder.
    public static func load(directory: String) throws -> SpecSet {
        guard let dir = opendir(directory) else {
            throw SpecErrors([Diagnostic(SourceLocation(file: directory, line: 0, column: 0), "cannot open the spec folder")])
        }
        defer { closedir(dir) }
        var paths: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name.hasSuffix(".spec") { paths.append(directory + "/" + name) }
        }
        return try load(paths: paths.sorted())
    }

    /// Loads the named files as one namespace.
    public static func load(paths: [String]) throws -> SpecSet {
        var sources: [(String, String)] = []
        var errors: [Diagnostic] = []
        for path in paths {
            do {
                sources.append((path, try readTextFile(path)))
            } catch {
                errors.append(Diagnostic(SourceLocation(file: path, line: 0, column: 0), "cannot read the file"))
            }
        }
        if !errors.isEmpty { throw SpecErrors(errors) }
        return try compile(sources: sources)
    }

    /// Compiles spec texts (path, text) as one namespace. Throws every diagnostic found.
    public static func compile(sources: [(path: String, text: String)]) throws -> SpecSet {
        let set = SpecSet()
        var parsed: [(SpecFile, [DeclarationSyntax])] = []
        for (path, text) in sources {
            var parser = Parser(text: text, file: path)
            let declarations = parser.parseFile()
            set.diagnostics += parser.diagnostics
            let file = SpecFile(path: path)
            set.files.append(file)
            parsed.append((file, declarations))
        }
        set.declare(parsed)
        set.resolveAll(parsed)
        if !set.diagnostics.isEmpty {
            throw SpecErrors(set.diagnostics.sorted { a, b in
                (a.location.file, a.location.line, a.location.column) < (b.location.file, b.location.line, b.location.column)
            })
        }
        return set
    }

    /// A whole file as text (UTF-8), without Foundation.
    public static func readTextFile(_ path: String) throws -> String {
        guard let f = fopen(path, "rb") else { throw SpecErrors([]) }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func error(_ location: SourceLocation, _ message: String) {
        diagnostics.append(Diagnostic(location, message))
    }

    // MARK: lookup by name

    public func record(named name: String) -> Record? { records[name] }
    /// The byte offset of a field inside a struct, by a dotted path through nested structs and unions
    /// ("v4l2_buffer", "m.userptr"): plug-ins take layouts from here rather than restating a header.
    public func offset(of path: String, in recordName: String) -> Int? {
        var record = records[recordName]
        var at = 0
        for part in path.split(separator: ".") {
            guard let (field, offset) = record?.field(named: String(part)) else { return nil }
            at += offset
            if case .record(let inner) = field.type { record = inner } else { record = nil }
        }
        return at
    }
    public func specClass(named name: String) -> SpecClass? { classes.first { $0.name == name } }
    public func ioctl(named name: String) -> Ioctl? { ioctls.first { $0.name == name } }
}
