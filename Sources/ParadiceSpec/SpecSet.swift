#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A compiled set of spec files sharing one namespace.
public final class SpecSet: @unchecked Sendable {
    public private(set) var files: [SpecFile] = []
    public private(set) var classes: [SpecClass] = []
    public private(set) var records: [String: Record] = [:]
    public private(set) var enums: [String: EnumSet] = [:]
    public private(set) var ioctls: [Ioctl] = []

    private var diagnostics: [Diagnostic] = []
    private var constantSyntax: [String: (Expr, SourceLocation)] = [:]
    private var constantValues: [String: Int64] = [:]
    private var constantsInProgress: Set<String> = []
    private var aliasSyntax: [String: TypeSyntax] = [:]
    private var aliasesInProgress: Set<String> = []
    private var declaredAt: [String: SourceLocation] = [:]
    private var knownFieldNames: Set<String> = []

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

    private func error(_ location: SourceLocation, _ message: String) {
        diagnostics.append(Diagnostic(location, message))
    }

    private func claim(_ name: String, _ location: SourceLocation) -> Bool {
        if let previous = declaredAt[name] {
            error(location, "'\(name)' is already declared at \(previous)")
            return false
        }
        if Self.scalarTypes[name] != nil || Self.builtinConstants[name] != nil {
            error(location, "'\(name)' is a built-in name")
            return false
        }
        declaredAt[name] = location
        return true
    }

    /// First pass: every name in the namespace, before anything is resolved.
    private func declare(_ parsed: [(SpecFile, [DeclarationSyntax])]) {
        for (file, declarations) in parsed {
            for declaration in declarations {
                switch declaration {
                case .headers(let h, _): file.headers += h
                case .cflags(let c, _): file.cflags += c
                case .facts(let f, _): file.facts = f
                case .specClass(let name, let devices, let plugin, let loc):
                    if file.specClass != nil { error(loc, "a spec file declares at most one class"); continue }
                    if let other = classes.first(where: { $0.name == name }) {
                        error(loc, "class '\(name)' is already declared at \(other.location)"); continue
                    }
                    if devices.isEmpty { error(loc, "class '\(name)' names no devices") }
                    let c = SpecClass(name: name, devices: devices, plugin: plugin, file: file.path, location: loc)
                    file.specClass = c
                    classes.append(c)
                case .constant(let name, let value, _, let loc):
                    if claim(name, loc) { constantSyntax[name] = (value, loc) }
                case .enumeration(let name, let isFlags, let members, let loc):
                    guard claim(name, loc) else { continue }
                    let set = EnumSet(name: name, isFlags: isFlags, location: loc)
                    enums[name] = set
                    var previous: Expr?
                    for m in members {
                        let value: Expr
                        if let v = m.value {
                            value = v
                        } else if isFlags {
                            error(m.location, "a flag needs a value"); continue
                        } else if let p = previous {
                            value = .binary("+", p, .integer(1, m.location), m.location)
                        } else {
                            value = .integer(0, m.location)
                        }
                        previous = .name([m.name], m.location)
                        if claim(m.name, m.location) { constantSyntax[m.name] = (value, m.location) }
                    }
                case .alias(let name, let type, let loc):
                    if claim(name, loc) { aliasSyntax[name] = type }
                case .record(let syntax):
                    guard let name = syntax.name, claim(name, syntax.location) else { continue }
                    let record = Record(name: name, isUnion: syntax.isUnion, location: syntax.location)
                    record.cName = syntax.cName
                    record.syntax = syntax
                    records[name] = record
                    file.records.append(record)
                    collectFieldNames(syntax)
                case .ioctl(let syntax):
                    _ = claim(syntax.name, syntax.location)
                }
            }
        }
    }

    private func collectFieldNames(_ syntax: RecordSyntax) {
        for f in syntax.fields {
            knownFieldNames.insert(f.name)
            if case .record(let inner) = f.type { collectFieldNames(inner) }
        }
    }

    /// Second pass: resolve and lay out everything, collecting every error.
    private func resolveAll(_ parsed: [(SpecFile, [DeclarationSyntax])]) {
        for (file, declarations) in parsed {
            for declaration in declarations {
                switch declaration {
                case .constant(let name, _, let verify, let loc):
                    if let v = try? constantValue(name) {
                        file.constants.append(Constant(name: name, value: v, verify: verify, location: loc))
                    }
                case .enumeration(let name, _, let members, _):
                    guard let set = enums[name] else { continue }
                    for m in members {
                        guard let v = try? constantValue(m.name) else { continue }
                        set.members.append((m.name, v))
                        file.constants.append(Constant(name: m.name, value: v, verify: m.verify, location: m.location))
                    }
                case .alias(let name, _, let loc):
                    do { _ = try resolveAlias(name, loc) } catch {}
                case .record(let syntax):
                    if let name = syntax.name, let record = records[name] { layout(record) }
                case .ioctl(let syntax):
                    if let ioctl = resolveIoctl(syntax, file: file) {
                        ioctls.append(ioctl)
                        file.ioctls.append(ioctl)
                        if let c = file.specClass {
                            ioctl.specClass = c
                            c.ioctls.append(ioctl)
                        }
                    }
                default: break
                }
            }
            file.specClass?.records = file.records
        }
        indexCommands()
    }

    // MARK: constants

    /// The value of a constant or enum member, or nil when no such name exists.
    public func constantValue(_ name: String) throws -> Int64? {
        if let v = constantValues[name] { return v }
        if let v = Self.builtinConstants[name] { return v }
        guard let (expr, loc) = constantSyntax[name] else { return nil }
        guard !constantsInProgress.contains(name) else {
            throw EvaluationError(loc, "constant '\(name)' is defined in terms of itself")
        }
        constantsInProgress.insert(name)
        defer { constantsInProgress.remove(name) }
        do {
            let v = try evaluate(expr, in: ConstantScope())
            constantValues[name] = v
            return v
        } catch let e as EvaluationError {
            error(e.location, e.message)
            constantSyntax[name] = nil   // report once
            throw e
        }
    }

    func constantExpression(_ expr: Expr, parameters: [String: Int64] = [:]) -> Int64? {
        do {
            return try evaluate(expr, in: ConstantScope(parameters: parameters))
        } catch let e as EvaluationError {
            error(e.location, e.message)
            return nil
        } catch {
            return nil
        }
    }

    /// Whether the expression depends only on constants (so an array of that length is fixed).
    func isConstant(_ expr: Expr) -> Bool {
        var constant = true
        expr.visitNames { name, _ in
            if constantSyntax[name] == nil && constantValues[name] == nil && Self.builtinConstants[name] == nil {
                constant = false
            }
        }
        return constant && !expr.usesVariables && !containsSum(expr)
    }

    private func containsSum(_ expr: Expr) -> Bool {
        switch expr {
        case .call(let n, let args, _): return n == "sum" || args.contains(where: containsSum)
        case .unary(_, let e, _): return containsSum(e)
        case .binary(_, let a, let b, _): return containsSum(a) || containsSum(b)
        case .membership(let e, let s, _): return containsSum(e) || s.contains(where: containsSum)
        case .variable(_, let args, _): return args.contains(where: containsSum)
        default: return false
        }
    }

    /// Every name used in a run-time expression must exist somewhere: a typo is caught at compile time.
    private func checkNames(_ expr: Expr, parameters: [String]) {
        expr.visitNames { name, loc in
            if constantSyntax[name] == nil && constantValues[name] == nil && Self.builtinConstants[name] == nil
                && !knownFieldNames.contains(name) && !parameters.contains(name) && name != "result"
            {
                error(loc, "unknown name '\(name)': not a field, parameter or constant")
            }
        }
    }

    // MARK: types

    static let scalarTypes: [String: IntegerType] = [
        "u8": IntegerType(size: 1, signed: false), "u16": IntegerType(size: 2, signed: false),
        "u32": IntegerType(size: 4, signed: false), "u64": IntegerType(size: 8, signed: false),
        "s8": IntegerType(size: 1, signed: true), "s16": IntegerType(size: 2, signed: true),
        "s32": IntegerType(size: 4, signed: true), "s64": IntegerType(size: 8, signed: true),
        "char": IntegerType(size: 1, signed: true),
        "int": IntegerType(size: 4, signed: true), "uint": IntegerType(size: 4, signed: false),
        "long": IntegerType(size: 8, signed: true), "ulong": IntegerType(size: 8, signed: false),
    ]

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

    private func resolveAlias(_ name: String, _ loc: SourceLocation) throws -> SpecType {
        guard let syntax = aliasSyntax[name] else { throw SpecErrors([]) }
        guard !aliasesInProgress.contains(name) else {
            error(loc, "type '\(name)' is defined in terms of itself")
            throw SpecErrors([])
        }
        aliasesInProgress.insert(name)
        defer { aliasesInProgress.remove(name) }
        return try resolveType(syntax, parameters: [])
    }

    /// A type used in `sizeof(…)`.
    func resolveStandaloneType(_ syntax: TypeSyntax) throws -> SpecType {
        try resolveType(syntax, parameters: [])
    }

    /// Resolves a type that must have a fixed size. Variable arrays are handled by the callers that allow them.
    private func resolveType(_ syntax: TypeSyntax, parameters: [String], pointee: Bool = false) throws -> SpecType {
        switch syntax {
        case .named(let name, let loc):
            if let scalar = Self.scalarTypes[name] { return .integer(scalar) }
            if let record = records[name] {
                // A pointer may point at a struct still being laid out (a linked list's next field).
                if !(pointee && record.layoutState == .inProgress) { layout(record) }
                return .record(record)
            }
            if aliasSyntax[name] != nil { return try resolveAlias(name, loc) }
            error(loc, "unknown type '\(name)'")
            throw SpecErrors([])
        case .pointer(let wide, let dir, let pointee, let loc):
            return .pointer(try resolvePointer(wide: wide, direction: dir, pointee: pointee, loc, parameters: parameters))
        case .descriptor(let dir, let width, _):
            return .descriptor(dir, width: width)
        case .record(let syntax):
            let record = Record(name: nil, isUnion: syntax.isUnion, location: syntax.location)
            record.syntax = syntax
            record.cName = syntax.cName
            layout(record, parameters: parameters)
            return .record(record)
        case .array(let element, let length, let loc):
            guard length.copyOut == nil, isConstant(length.count) else {
                error(loc, "an array of variable length [\(length.count)] is allowed only behind a pointer or as the last field of a struct")
                throw SpecErrors([])
            }
            guard let n = constantExpression(length.count), n >= 0, n <= 1 << 24 else {
                error(loc, "array length must be a constant between 0 and 16M")
                throw SpecErrors([])
            }
            if case .named("char", _) = element { return .string(count: Int(n)) }
            return .array(try resolveType(element, parameters: parameters), count: Int(n))
        }
    }

    private func resolvePointer(wide: Bool, direction: Direction, pointee: TypeSyntax, _ loc: SourceLocation,
                                parameters: [String]) throws -> PointerType {
        let pointer = PointerType(direction: direction, wide: wide, location: loc)
        if case .array(let element, let length, _) = pointee, length.copyOut != nil || !isConstant(length.count) {
            checkNames(length.count, parameters: parameters)
            if let c = length.copyOut { checkNames(c, parameters: parameters) }
            if case .named("char", _) = element {
                pointer.pointee = .integer(IntegerType(size: 1, signed: true))
            } else {
                pointer.pointee = try resolveType(element, parameters: parameters)
            }
            pointer.length = ArrayLength(count: length.count, copyOut: length.copyOut)
        } else {
            pointer.pointee = try resolveType(pointee, parameters: parameters, pointee: true)
            if case .record(let r) = pointer.pointee, r.layoutState == .done, r.flexibleField != nil, direction == .output {
                // An out-only struct with a flexible tail: its length must come from data the guest sends.
                error(loc, "the flexible array of '\(r.displayName)' is sized by a field the driver only writes; use inout")
            }
        }
        return pointer
    }

    // MARK: layout

    private func roundUp(_ v: Int, _ a: Int) -> Int { (v + a - 1) / a * a }

    /// Lays out a record (C rules for LP64), resolving its fields on first use.
    func layout(_ record: Record, parameters: [String] = []) {
        switch record.layoutState {
        case .done: return
        case .inProgress:
            error(record.location, "'\(record.displayName)' contains itself by value")
            return
        case .pending: break
        }
        guard let syntax = record.syntax else { record.layoutState = .done; return }
        record.layoutState = .inProgress
        defer { record.layoutState = .done; record.syntax = nil }
        record.packed = syntax.packed
        if let a = syntax.align {
            if let v = constantExpression(a), v > 0, v & (v - 1) == 0 { record.explicitAlignment = Int(v) }
            else { error(a.location, "alignment must be a power of two") }
        }

        var offset = 0
        var alignment = 1
        var size = 0
        for (index, f) in syntax.fields.enumerated() {
            if f.name != "_", syntax.fields[..<index].contains(where: { $0.name == f.name }) {
                error(f.location, "field '\(f.name)' is already declared in '\(record.displayName)'")
            }
            var field: Field
            let isLast = index == syntax.fields.count - 1
            if case .array(let element, let length, let loc) = f.type, length.copyOut != nil || !isConstant(length.count) {
                guard isLast, !record.isUnion else {
                    error(loc, "a variable array [\(length.count)] must be the last field of a struct (a flexible array member)")
                    continue
                }
                checkNames(length.count, parameters: parameters)
                guard let elementType = try? resolveType(element, parameters: parameters) else { continue }
                field = Field(name: f.name, type: elementType, offset: 0, location: f.location)
                field.flexible = ArrayLength(count: length.count, copyOut: length.copyOut)
            } else {
                guard let type = try? resolveType(f.type, parameters: parameters) else { continue }
                field = Field(name: f.name, type: type, offset: 0, location: f.location)
            }
            field.cDesignator = f.name == "_" ? "" : (f.cName ?? f.name)
            field.refusal = f.refusal
            field.kept = f.kept
            if f.kept != nil {
                if case .pointer = field.type {} else { error(f.location, "'kept' applies to a pointer; '\(f.name)' is not one") }
            }
            applyAttributes(f, to: &field, parameters: parameters)

            var fieldAlignment = record.packed ? 1 : field.type.alignment
            if let a = f.align, let v = constantExpression(a) {
                if v > 0 && v & (v - 1) == 0 { fieldAlignment = max(fieldAlignment, Int(v)) }
                else { error(a.location, "alignment must be a power of two") }
            }
            alignment = max(alignment, fieldAlignment)
            if record.isUnion {
                size = max(size, field.type.size)
            } else {
                offset = roundUp(offset, fieldAlignment)
                field.offset = offset
                offset += field.flexible == nil ? field.type.size : 0
                size = offset
            }
            record.fields.append(field)
        }
        if let a = record.explicitAlignment { alignment = max(alignment, a) }
        record.alignment = alignment
        record.size = roundUp(size, alignment)

        record.containsReferences = record.fields.contains { $0.type.containsReferences }
        record.isDiscriminated = record.fields.contains { $0.when != nil }
        record.needsVisit = record.fields.contains {
            $0.type.needsVisit || $0.check != nil || $0.flexible != nil || $0.when != nil || $0.refusal != nil
        }
        if record.isUnion && record.containsReferences {
            for f in record.fields where f.when == nil {
                error(f.location, "member '\(f.name)' of a union holding pointers or fds needs 'when CONDITION'")
            }
        }
    }

    private func applyAttributes(_ f: FieldSyntax, to field: inout Field, parameters: [String]) {
        if let (name, loc) = f.enumName {
            if let e = enums[name], !e.isFlags { field.check = e } else { error(loc, "'\(name)' is not an enum") }
        }
        if let (name, loc) = f.flagsName {
            if let e = enums[name], e.isFlags { field.check = e } else { error(loc, "'\(name)' is not a flags set") }
        }
        if field.check != nil, case .integer = field.type {} else if field.check != nil {
            error(f.location, "enum() and flags() apply to integer fields")
        }
        if let w = f.when {
            checkNames(w, parameters: parameters)
            field.when = w
        }
        func cap(_ e: Expr?) -> Int? {
            guard let e, let v = constantExpression(e) else { return nil }
            guard v >= 0 else { error(e.location, "a cap must not be negative"); return nil }
            return Int(v)
        }
        let maxCount = cap(f.maxCount)
        let maxBytes = cap(f.maxBytes)
        guard maxCount != nil || maxBytes != nil else { return }
        if field.flexible != nil {
            field.maxCount = maxCount
            if maxBytes != nil, let t = maxBytes, let size = Optional(field.type.size), size > 0 {
                field.maxCount = min(maxCount ?? Int.max, t / size)
            }
        } else if case .pointer(let p) = field.type {
            p.maxCount = maxCount ?? p.maxCount
            p.maxBytes = maxBytes ?? p.maxBytes
        } else {
            error(f.location, "'max' and 'maxbytes' apply to pointers and flexible arrays")
        }
    }

    // MARK: ioctls

    private func resolveIoctl(_ syntax: IoctlSyntax, file: SpecFile) -> Ioctl? {
        var parameters: [IoctlParameter] = []
        for p in syntax.parameters {
            var range: ClosedRange<Int64>?
            if let (lo, hi) = p.range, let l = constantExpression(lo), let h = constantExpression(hi) {
                if l <= h { range = l...h } else { error(p.location, "empty range \(l)..\(h)") }
            }
            parameters.append(IoctlParameter(name: p.name, range: range, location: p.location))
        }
        let parameterNames = parameters.map(\.name)
        let encoding: Ioctl.Encoding
        var defaultArgument: IoctlArgument = .none
        var needsExplicitArgument = false
        switch syntax.encoding {
        case .raw(let e):
            encoding = .raw(e)
            needsExplicitArgument = true
        case .ioc(let dir, let type, let nr, let size):
            guard let d = constantExpression(dir), (0...3).contains(d) else {
                error(syntax.location, "_IOC direction must be _IOC_NONE, _IOC_READ, _IOC_WRITE or both")
                return nil
            }
            encoding = .generic(dir: UInt32(d), type: type, nr: nr, size: size)
            needsExplicitArgument = d != 0
        case .io(let kind, let type, let nr, let argType):
            let dir: UInt32 = ["_IO": 0, "_IOW": 1, "_IOR": 2, "_IOWR": 3][kind]!
            var size: Expr = .integer(0, syntax.location)
            if let t = argType {
                guard let resolved = try? resolveType(t, parameters: parameterNames) else { return nil }
                size = .integer(Int64(resolved.size), t.location)
                let direction: Direction = dir == 1 ? .input : dir == 2 ? .output : .both
                let pointer = PointerType(direction: direction, wide: false, location: t.location)
                pointer.pointee = resolved
                defaultArgument = .pointer(pointer)
            }
            encoding = .generic(dir: dir, type: type, nr: nr, size: size)
        }
        let ioctl = Ioctl(name: syntax.name, location: syntax.location, encoding: encoding, file: file.path)
        ioctl.parameters = parameters
        ioctl.blocking = syntax.blocking
        ioctl.returnsDescriptor = syntax.returnsDescriptor
        ioctl.cExpression = syntax.cExpression
        ioctl.verify = syntax.verify
        ioctl.refusal = syntax.refusal
        if let m = syntax.maxBytes, let v = constantExpression(m) { ioctl.maxBytes = Int(v) }

        switch syntax.argument {
        case .none?: ioctl.argument = .none
        case .value?: ioctl.argument = .value
        case .descriptor?: ioctl.argument = .descriptor
        case .pointer(let t)?:
            guard case .pointer(let wide, let dir, let pointee, let loc) = t,
                  let p = try? resolvePointer(wide: wide, direction: dir, pointee: pointee, loc, parameters: parameterNames)
            else { return nil }
            ioctl.argument = .pointer(p)
        case nil:
            if needsExplicitArgument {
                error(syntax.location, "ioctl '\(syntax.name)' needs 'arg …': its encoding does not name the argument type")
            }
            ioctl.argument = defaultArgument
        }

        if let m = syntax.maxCount, let v = constantExpression(m) {
            if case .pointer(let p) = ioctl.argument, p.length != nil { p.maxCount = Int(v) }
            else { error(m.location, "'max' applies to an argument that points to a variable array") }
        }

        // Each parameter must be recoverable from an incoming number.
        if case .generic(_, let type, let nr, let size) = encoding {
            guard constantExpression(type) != nil else { return nil }
            for p in parameters {
                var used = false
                for e in [nr, size] { e.visitNames { n, _ in if n == p.name { used = true } } }
                if !used { error(p.location, "parameter '\(p.name)' appears in neither the nr nor the size of the encoding") }
            }
            do {
                _ = try ioctl.command(in: self, parameters: sampleParameters(ioctl))
            } catch let e as EvaluationError {
                error(e.location, e.message)
                return nil
            } catch {
                return nil
            }
        } else if !parameters.isEmpty {
            error(syntax.location, "a plain-number ioctl cannot take parameters")
        }
        return ioctl
    }

    /// Representative parameter values (used for the verifier and for `spec show`).
    public func sampleParameters(_ ioctl: Ioctl) -> [String: Int64] {
        var values: [String: Int64] = [:]
        for p in ioctl.parameters {
            var inSize = false
            if case .generic(_, _, _, let size) = ioctl.encoding {
                size.visitNames { n, _ in if n == p.name { inSize = true } }
            }
            if let r = p.range {
                values[p.name] = r.lowerBound + (r.upperBound - r.lowerBound) / 2
            } else {
                values[p.name] = inSize ? 64 : 1
            }
        }
        return values
    }

    private func indexCommands() {
        for c in classes {
            var exact: [UInt32: Ioctl] = [:]
            var fams: [Ioctl] = []
            for ioctl in c.ioctls {
                if ioctl.isFamily { fams.append(ioctl); continue }
                guard let number = try? ioctl.command(in: self, parameters: [:]) else { continue }
                if let other = exact[number] {
                    error(ioctl.location, "'\(ioctl.name)' has the same number 0x\(String(number, radix: 16)) as '\(other.name)' at \(other.location)")
                    continue
                }
                exact[number] = ioctl
            }
            c.exactCommands = exact
            c.families = fams
        }
    }

    // MARK: lookup

    public struct Match: Sendable {
        public var ioctl: Ioctl
        public var parameters: [String: Int64]
    }

    /// The ioctl of a class that an incoming command number denotes, with its family parameters.
    public func match(command: UInt32, inClass className: String) -> Match? {
        guard let c = specClass(named: className) else { return nil }
        return match(command: command, in: c)
    }

    public func match(command: UInt32, in specClass: SpecClass) -> Match? {
        if let ioctl = specClass.exactCommands[command] { return Match(ioctl: ioctl, parameters: [:]) }
        for ioctl in specClass.families {
            if let p = solve(ioctl, command) { return Match(ioctl: ioctl, parameters: p) }
        }
        return nil
    }

    private func solve(_ ioctl: Ioctl, _ command: UInt32) -> [String: Int64]? {
        guard case .generic(let dir, let type, let nr, let size) = ioctl.encoding,
              IoctlNumber.dir(command) == dir,
              let t = try? evaluate(type, in: ConstantScope()), UInt32(truncatingIfNeeded: t) & 0xff == IoctlNumber.type(command)
        else { return nil }
        var values: [String: Int64] = [:]
        for (expr, actual) in [(nr, Int64(IoctlNumber.nr(command))), (size, Int64(IoctlNumber.size(command)))] {
            var names: [String] = []
            expr.visitNames { n, _ in if ioctl.parameters.contains(where: { $0.name == n }), !names.contains(n) { names.append(n) } }
            guard names.count <= 1 else { return nil }
            if let p = names.first {
                var probe = values
                probe[p] = 0
                guard let base = try? evaluate(expr, in: ConstantScope(parameters: probe)) else { return nil }
                values[p] = actual - base
            }
        }
        for p in ioctl.parameters {
            guard let v = values[p.name] else { return nil }
            let range = p.range ?? 0...(isInSize(ioctl, p.name) ? Int64(IoctlNumber.sizeMask) : 255)
            guard range.contains(v) else { return nil }
        }
        guard (try? ioctl.command(in: self, parameters: values)) == command else { return nil }
        return values
    }

    private func isInSize(_ ioctl: Ioctl, _ name: String) -> Bool {
        guard case .generic(_, _, _, let size) = ioctl.encoding else { return false }
        var found = false
        size.visitNames { n, _ in if n == name { found = true } }
        return found
    }
}

extension Ioctl {
    /// The command number for the given family parameters (none for a plain ioctl).
    public func command(in specs: SpecSet, parameters: [String: Int64]) throws -> UInt32 {
        let scope = ConstantScope(parameters: parameters)
        switch encoding {
        case .raw(let e):
            let v = try specs.evaluate(e, in: scope)
            guard v >= 0, v <= Int64(UInt32.max) else { throw EvaluationError(e.location, "ioctl number out of range") }
            return UInt32(v)
        case .generic(let dir, let type, let nr, let size):
            let t = try specs.evaluate(type, in: scope)
            let n = try specs.evaluate(nr, in: scope)
            let s = try specs.evaluate(size, in: scope)
            guard (0...255).contains(t) else { throw EvaluationError(type.location, "ioctl type \(t) does not fit in 8 bits") }
            guard (0...255).contains(n) else { throw EvaluationError(nr.location, "ioctl nr \(n) does not fit in 8 bits") }
            guard (0...Int64(IoctlNumber.sizeMask)).contains(s) else {
                throw EvaluationError(size.location, "argument size \(s) does not fit in the 14-bit size field")
            }
            return IoctlNumber.make(dir: dir, type: UInt32(t), nr: UInt32(n), size: UInt32(s))
        }
    }
}
