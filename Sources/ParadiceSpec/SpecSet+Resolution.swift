// The compiler's second pass, and type expressions resolved into laid-out types.

extension SpecSet {
    /// Second pass: resolve and lay out everything, collecting every error.
    func resolveAll(_ parsed: [(SpecFile, [DeclarationSyntax])]) {
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
                        resolveStateChanges(syntax, of: ioctl, in: file.specClass)
                    }
                case .specClass(_, _, _, let refusals, _, _, let readShape, _):
                    file.specClass?.mmapRefusals = refusals.compactMap(resolveMmapRefusal)
                    file.specClass?.readUnit = readShape.map(resolveReadUnit) ?? 0
                default: break
                }
            }
            file.specClass?.records = file.records
        }
        indexCommands()
    }

    /// The bytes one read returns a multiple of: 1 for a stream, a record's size for records.
    private func resolveReadUnit(_ shape: ReadShapeSyntax) -> Int {
        switch shape {
        case .stream: return 1
        case .records(let name, let loc):
            guard let record = records[name] else { error(loc, "'read records' names no struct '\(name)'"); return 0 }
            layout(record)
            return record.size
        }
    }

    static let scalarTypes: [String: IntegerType] = [
        "u8": IntegerType(size: 1, signed: false), "u16": IntegerType(size: 2, signed: false),
        "u32": IntegerType(size: 4, signed: false), "u64": IntegerType(size: 8, signed: false),
        "s8": IntegerType(size: 1, signed: true), "s16": IntegerType(size: 2, signed: true),
        "s32": IntegerType(size: 4, signed: true), "s64": IntegerType(size: 8, signed: true),
        "char": IntegerType(size: 1, signed: true),
        "int": IntegerType(size: 4, signed: true), "uint": IntegerType(size: 4, signed: false),
        "long": IntegerType(size: 8, signed: true), "ulong": IntegerType(size: 8, signed: false),
    ]

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
    func resolveType(_ syntax: TypeSyntax, parameters: [String], pointee: Bool = false) throws -> SpecType {
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

    func resolvePointer(wide: Bool, direction: Direction, pointee: TypeSyntax, _ loc: SourceLocation,
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
}
