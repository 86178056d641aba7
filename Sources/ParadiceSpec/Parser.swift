/// Recursive-descent parser for spec files. It recovers at statement boundaries so that one run
/// reports every syntax error of a file.
public struct Parser {
    private var tokens: [Token]
    private var position = 0
    private(set) public var diagnostics: [Diagnostic] = []

    private struct Failure: Error {}

    public init(text: String, file: String) {
        var lexer = Lexer(text: text, file: file)
        tokens = lexer.tokenize()
        diagnostics = lexer.diagnostics
    }

    // MARK: token helpers

    private var current: Token { tokens[position] }

    private mutating func advance() -> Token {
        let t = tokens[position]
        if position < tokens.count - 1 { position += 1 }
        return t
    }

    private func isPunct(_ p: String) -> Bool { current.kind == .punct(p) }
    private func isKeyword(_ k: String) -> Bool { current.kind == .identifier(k) }

    private mutating func fail(_ message: String, at location: SourceLocation? = nil) -> Failure {
        diagnostics.append(Diagnostic(location ?? current.location, message))
        return Failure()
    }

    private mutating func expectPunct(_ p: String, _ context: String) throws {
        if isPunct(p) { _ = advance(); return }
        // `>>` closing two nested `ptr<…<…>>` lists: take one half.
        if p == ">", current.kind == .punct(">>") {
            tokens[position].kind = .punct(">")
            return
        }
        throw fail("expected '\(p)' \(context), found \(current.kind)")
    }

    private mutating func identifier(_ what: String) throws -> (String, SourceLocation) {
        if case .identifier(let s) = current.kind {
            let loc = advance().location
            return (s, loc)
        }
        throw fail("expected \(what), found \(current.kind)")
    }

    private mutating func stringLiteral(_ what: String) throws -> String {
        if case .string(let s) = current.kind { _ = advance(); return s }
        throw fail("expected \(what), found \(current.kind)")
    }

    private mutating func skipNewlines() {
        while current.kind == .newline || current.kind == .punct(";") { _ = advance() }
    }

    private var atStatementEnd: Bool {
        current.kind == .newline || current.kind == .end || isPunct(";") || isPunct("}")
    }

    private mutating func endStatement() throws {
        if current.kind == .newline || isPunct(";") { _ = advance(); return }
        if current.kind == .end || isPunct("}") { return }
        throw fail("unexpected \(current.kind); expected the end of the line")
    }

    /// Skips to the next line at brace depth 0 after an error.
    private mutating func recover() {
        var depth = 0
        while current.kind != .end {
            let t = advance()
            switch t.kind {
            case .punct("{"): depth += 1
            case .punct("}"):
                depth -= 1
                if depth <= 0 { return }
            case .newline where depth == 0: return
            default: break
            }
        }
    }

    // MARK: declarations

    public mutating func parseFile() -> [DeclarationSyntax] {
        var declarations: [DeclarationSyntax] = []
        while true {
            skipNewlines()
            if current.kind == .end { break }
            do {
                declarations.append(try declaration())
            } catch {
                recover()
            }
        }
        return declarations
    }

    private mutating func declaration() throws -> DeclarationSyntax {
        let (keyword, loc) = try identifier("a declaration (struct, union, ioctl, const, enum, flags, type, class, headers)")
        switch keyword {
        case "headers", "cflags":
            var items: [String] = []
            while case .string(let s) = current.kind { items.append(s); _ = advance() }
            if items.isEmpty { throw fail("'\(keyword)' needs at least one string") }
            try endStatement()
            return keyword == "headers" ? .headers(items, loc) : .cflags(items, loc)
        case "facts":
            let path = try stringLiteral("a facts file path")
            try endStatement()
            return .facts(path, loc)
        case "class":
            return try classDeclaration(loc)
        case "const":
            let (name, nameLoc) = try identifier("a constant name")
            try expectPunct("=", "after the constant name")
            let value = try expression()
            var verify = true
            if isKeyword("noverify") { _ = advance(); verify = false }
            try endStatement()
            return .constant(name: name, value: value, verify: verify, nameLoc)
        case "enum", "flags":
            return try enumeration(isFlags: keyword == "flags", loc)
        case "type":
            let (name, nameLoc) = try identifier("a type name")
            try expectPunct("=", "after the type name")
            let type = try typeExpression()
            try endStatement()
            return .alias(name: name, type: type, nameLoc)
        case "struct", "union":
            let (name, nameLoc) = try identifier("a \(keyword) name")
            var record = try recordBody(isUnion: keyword == "union", name: name, nameLoc)
            record.location = nameLoc
            try endStatement()
            return .record(record)
        case "ioctl":
            return .ioctl(try ioctl())
        default:
            throw fail("unknown declaration '\(keyword)'", at: loc)
        }
    }

    private mutating func classDeclaration(_ loc: SourceLocation) throws -> DeclarationSyntax {
        let (name, nameLoc) = try identifier("a class name")
        try expectPunct("{", "to open the class")
        var devices: [String] = []
        var plugin: String?
        var mmapRefusals: [MmapRefusalSyntax] = []
        var states: [StateSyntax] = []
        var paths: [PathVariableSyntax] = []
        var readShape: ReadShapeSyntax?
        while true {
            skipNewlines()
            if isPunct("}") { _ = advance(); break }
            let (item, itemLoc) = try identifier("'devices', 'plugin', 'mmap', 'state', 'path' or 'read'")
            switch item {
            case "devices":
                while case .string(let s) = current.kind { devices.append(s); _ = advance() }
            case "plugin":
                plugin = try identifier("a plug-in name").0
            case "mmap":
                let (word, wordLoc) = try identifier("'refuse'")
                guard word == "refuse" else { throw fail("'mmap' takes refuse CONDITION errno NAME", at: wordLoc) }
                let condition = try expression()
                let (errnoWord, errnoLoc) = try identifier("'errno'")
                guard errnoWord == "errno" else { throw fail("'mmap' takes refuse CONDITION errno NAME", at: errnoLoc) }
                let name = try identifier("an errno name")
                mmapRefusals.append(MmapRefusalSyntax(condition: condition, errno: name, location: itemLoc))
            case "state":
                let (name, nameLoc) = try identifier("a state name")
                for word in ["unset", "errno"] {
                    let (w, wLoc) = try identifier("'\(word)'")
                    guard w == word else { throw fail("'state' takes NAME unset errno NAME", at: wLoc) }
                }
                states.append(StateSyntax(name: name, errno: try identifier("an errno name"), location: nameLoc))
            case "path":
                let (name, nameLoc) = try identifier("a variable name")
                var globs: [String] = []
                while case .string(let s) = current.kind { globs.append(s); _ = advance() }
                guard !globs.isEmpty else { throw fail("'path' takes NAME and one or more globs", at: nameLoc) }
                paths.append(PathVariableSyntax(name: name, globs: globs, location: nameLoc))
            case "read":
                let (word, wordLoc) = try identifier("'stream' or 'records'")
                switch word {
                case "stream": readShape = .stream(itemLoc)
                case "records": readShape = .records(try identifier("a struct name").0, itemLoc)
                default: throw fail("'read' takes stream, or records STRUCT", at: wordLoc)
                }
            default:
                throw fail("unknown class item '\(item)'; expected 'devices', 'plugin', 'mmap', 'state', 'path' or 'read'", at: itemLoc)
            }
            try endStatement()
        }
        try endStatement()
        _ = loc
        return .specClass(name: name, devices: devices, plugin: plugin, mmapRefusals: mmapRefusals, states: states, paths: paths, readShape: readShape, nameLoc)
    }

    private mutating func enumeration(isFlags: Bool, _ loc: SourceLocation) throws -> DeclarationSyntax {
        let (name, nameLoc) = try identifier("an \(isFlags ? "flags" : "enum") name")
        try expectPunct("{", "to open the member list")
        var members: [EnumMemberSyntax] = []
        while true {
            skipNewlines()
            if isPunct("}") { _ = advance(); break }
            do {
                let (member, memberLoc) = try identifier("a member name")
                var value: Expr?
                if isPunct("=") { _ = advance(); value = try expression() }
                var verify = true
                if isKeyword("noverify") { _ = advance(); verify = false }
                members.append(EnumMemberSyntax(name: member, value: value, verify: verify, location: memberLoc))
                if isPunct(",") {
                    _ = advance()
                    if !atStatementEnd { continue }   // several members on one line
                }
                try endStatement()
            } catch {
                recoverInsideBlock()
            }
        }
        try endStatement()
        return .enumeration(name: name, isFlags: isFlags, members: members, nameLoc)
    }

    /// Skips the rest of a line inside `{ }` without leaving the block.
    private mutating func recoverInsideBlock() {
        var depth = 0
        while current.kind != .end {
            if isPunct("}") && depth == 0 { return }
            let t = advance()
            if t.kind == .punct("{") { depth += 1 }
            if t.kind == .punct("}") { depth -= 1 }
            if t.kind == .newline && depth == 0 { return }
        }
    }

    private mutating func recordBody(isUnion: Bool, name: String?, _ loc: SourceLocation) throws -> RecordSyntax {
        var record = RecordSyntax(name: name, isUnion: isUnion, location: loc)
        while !isPunct("{") {
            let (modifier, modLoc) = try identifier("'{' or a modifier (c, packed, align)")
            switch modifier {
            case "c": record.cName = try stringLiteral("a C type name")
            case "packed": record.packed = true
            case "align":
                try expectPunct("(", "after 'align'")
                record.align = try expression()
                try expectPunct(")", "to close 'align('")
            default: throw fail("unknown modifier '\(modifier)'", at: modLoc)
            }
        }
        _ = advance()
        while true {
            skipNewlines()
            if isPunct("}") { _ = advance(); break }
            if current.kind == .end { throw fail("'{' at \(loc) is never closed") }
            do {
                record.fields.append(try field())
            } catch {
                recoverInsideBlock()
            }
        }
        return record
    }

    private mutating func field() throws -> FieldSyntax {
        let (name, loc) = try identifier("a field name")
        let type = try typeExpression()
        var field = FieldSyntax(name: name, type: type, location: loc)
        while !atStatementEnd {
            let (attribute, attrLoc) = try identifier("a field attribute (enum, flags, max, maxbytes, when, align, c, refuse, kept)")
            switch attribute {
            case "enum", "flags":
                try expectPunct("(", "after '\(attribute)'")
                let ref = try identifier("an \(attribute) name")
                try expectPunct(")", "to close '\(attribute)('")
                if attribute == "enum" { field.enumName = ref } else { field.flagsName = ref }
            case "max": field.maxCount = try expression()
            case "maxbytes": field.maxBytes = try expression()
            case "when": field.when = try expression()
            case "align":
                try expectPunct("(", "after 'align'")
                field.align = try expression()
                try expectPunct(")", "to close 'align('")
            case "c": field.cName = try stringLiteral("a C member designator")
            case "refuse": field.refusal = try stringLiteral("the reason the field cannot be forwarded")
            case "kept": field.kept = try stringLiteral("why the driver keeps the memory after the call")
            default: throw fail("unknown field attribute '\(attribute)'", at: attrLoc)
            }
        }
        try endStatement()
        return field
    }

    // MARK: types

    private mutating func typeExpression() throws -> TypeSyntax {
        var base = try baseType()
        var suffixes: [(LengthSyntax, SourceLocation)] = []
        while isPunct("[") {
            let loc = advance().location
            var length: LengthSyntax
            if isKeyword("capacity") {
                _ = advance()
                let n = try expression()
                length = LengthSyntax(count: n, copyOut: n)
            } else {
                length = LengthSyntax(count: try expression(), copyOut: nil)
                if isPunct("->") { _ = advance(); length.copyOut = try expression() }
            }
            try expectPunct("]", "to close the array length")
            suffixes.append((length, loc))
        }
        // C order: T[a][b] is a elements of T[b].
        for (length, loc) in suffixes.reversed() { base = .array(base, length, loc) }
        return base
    }

    private mutating func baseType() throws -> TypeSyntax {
        let (name, loc) = try identifier("a type")
        switch name {
        case "ptr", "ptr64":
            try expectPunct("<", "after '\(name)'")
            let dir = try direction()
            try expectPunct(",", "between the direction and the pointee type")
            let pointee = try typeExpression()
            try expectPunct(">", "to close '\(name)<'")
            return .pointer(wide: name == "ptr64", dir, pointee, loc)
        case "fd", "fd64":
            try expectPunct("<", "after '\(name)'")
            let dir = try direction()
            try expectPunct(">", "to close '\(name)<'")
            return .descriptor(dir, width: name == "fd64" ? 8 : 4, loc)
        case "struct", "union":
            var record = try recordBody(isUnion: name == "union", name: nil, loc)
            record.location = loc
            return .record(record)
        default:
            return .named(name, loc)
        }
    }

    private mutating func direction() throws -> Direction {
        let (d, loc) = try identifier("a direction (in, out, inout)")
        guard let dir = Direction(rawValue: d) else { throw fail("unknown direction '\(d)'; expected in, out or inout", at: loc) }
        return dir
    }

    // MARK: ioctls

    private mutating func ioctl() throws -> IoctlSyntax {
        let (name, loc) = try identifier("an ioctl name")
        var parameters: [ParameterSyntax] = []
        if isPunct("(") {
            _ = advance()
            while !isPunct(")") {
                let (p, pLoc) = try identifier("a parameter name")
                var range: (Expr, Expr)?
                if !isPunct(",") && !isPunct(")") {
                    let lo = try expression(stopAtRange: true)
                    try expectPunct("..", "in the parameter range 'lo..hi'")
                    range = (lo, try expression())
                }
                parameters.append(ParameterSyntax(name: p, range: range, location: pLoc))
                if isPunct(",") { _ = advance() } else if !isPunct(")") { throw fail("expected ',' or ')' in the parameter list") }
            }
            _ = advance()
        }
        try expectPunct("=", "after the ioctl name")
        let encoding = try ioctlEncoding()
        var ioctl = IoctlSyntax(name: name, parameters: parameters, encoding: encoding, location: loc)
        while !atStatementEnd {
            let (option, optLoc) = try identifier("an ioctl option (arg, blocking, returns, max, maxbytes, c, noverify, refuse, sync, remember, forget)")
            switch option {
            case "arg":
                if isKeyword("none") { _ = advance(); ioctl.argument = ArgumentSyntax.none }
                else if isKeyword("value") { _ = advance(); ioctl.argument = .value }
                else if isKeyword("fd") && tokens[position + 1].kind != .punct("<") { _ = advance(); ioctl.argument = .descriptor }
                else {
                    let type = try typeExpression()
                    guard case .pointer = type else {
                        throw fail("'arg' takes none, value, fd or ptr<DIR, T>", at: type.location)
                    }
                    ioctl.argument = .pointer(type)
                }
            case "blocking": ioctl.blocking = true
            case "returns":
                let (what, whatLoc) = try identifier("'fd'")
                guard what == "fd" else { throw fail("'returns' takes 'fd'", at: whatLoc) }
                ioctl.returnsDescriptor = true
            case "maxbytes": ioctl.maxBytes = try expression()
            case "c": ioctl.cExpression = try stringLiteral("a C expression")
            case "noverify": ioctl.verify = false
            case "max": ioctl.maxCount = try expression()
            case "refuse": ioctl.refusal = try stringLiteral("the reason the ioctl is refused")
            case "sync":
                let direction = try direction()
                let offset = try expression()
                let (word, wordLoc) = try identifier("'length'")
                guard word == "length" else { throw fail("'sync' takes DIR OFFSET length LENGTH", at: wordLoc) }
                let length = try expression()
                var condition: Expr?
                if isKeyword("when") { _ = advance(); condition = try expression() }
                ioctl.syncs.append(SyncSyntax(direction: direction, offset: offset, length: length, condition: condition, location: optLoc))
            case "remember":
                let (name, nameLoc) = try identifier("a state name")
                try expectPunct("=", "after the state name")
                let value = try expression()
                var condition: Expr?
                if isKeyword("when") { _ = advance(); condition = try expression() }
                ioctl.remembers.append(RememberSyntax(name: name, value: value, condition: condition, location: nameLoc))
            case "forget":
                ioctl.forgets.append(try identifier("a state name"))
            default: throw fail("unknown ioctl option '\(option)'", at: optLoc)
            }
        }
        try endStatement()
        return ioctl
    }

    private mutating func ioctlEncoding() throws -> EncodingSyntax {
        guard case .identifier(let macro) = current.kind, ["_IO", "_IOR", "_IOW", "_IOWR", "_IOC"].contains(macro) else {
            return .raw(try expression())
        }
        _ = advance()
        try expectPunct("(", "after \(macro)")
        if macro == "_IOC" {
            let dir = try expression()
            try expectPunct(",", "in _IOC(dir, type, nr, size)")
            let type = try expression()
            try expectPunct(",", "in _IOC(dir, type, nr, size)")
            let nr = try expression()
            try expectPunct(",", "in _IOC(dir, type, nr, size)")
            let size = try expression()
            try expectPunct(")", "to close _IOC(")
            return .ioc(dir: dir, type: type, nr: nr, size: size)
        }
        let type = try expression()
        try expectPunct(",", "in \(macro)(type, nr…)")
        let nr = try expression()
        var argType: TypeSyntax?
        if macro != "_IO" {
            try expectPunct(",", "in \(macro)(type, nr, T)")
            argType = try typeExpression()
        }
        try expectPunct(")", "to close \(macro)(")
        return .io(kind: macro, type: type, nr: nr, argType: argType)
    }

    // MARK: expressions

    private static let binaryPrecedence: [String: Int] = [
        "||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
        "|": 4, "^": 5, "&": 6, "<<": 7, ">>": 7, "+": 8, "-": 8, "*": 9, "/": 9, "%": 9,
    ]

    private mutating func expression(stopAtRange: Bool = false) throws -> Expr {
        try binary(minPrecedence: 1)
    }

    private mutating func binary(minPrecedence: Int) throws -> Expr {
        var lhs = try unary()
        while true {
            if isKeyword("in") {
                let loc = advance().location
                try expectPunct("(", "after 'in'")
                var set: [Expr] = []
                while !isPunct(")") {
                    set.append(try expression())
                    if isPunct(",") { _ = advance() } else if !isPunct(")") { throw fail("expected ',' or ')' in the 'in' list") }
                }
                _ = advance()
                lhs = .membership(lhs, set, loc)
                continue
            }
            guard case .punct(let op) = current.kind, let prec = Self.binaryPrecedence[op], prec >= minPrecedence else {
                return lhs
            }
            let loc = advance().location
            let rhs = try binary(minPrecedence: prec + 1)
            lhs = .binary(op, lhs, rhs, loc)
        }
    }

    private mutating func unary() throws -> Expr {
        if case .punct(let op) = current.kind, op == "-" || op == "!" || op == "~" {
            let loc = advance().location
            return .unary(op, try unary(), loc)
        }
        return try primary()
    }

    private mutating func primary() throws -> Expr {
        let token = current
        switch token.kind {
        case .integer(let v):
            _ = advance()
            return .integer(v, token.location)
        case .variable(let name):
            _ = advance()
            var args: [Expr] = []
            if isPunct("(") { args = try argumentList() }
            return .variable(name, args, token.location)
        case .punct("("):
            _ = advance()
            let e = try expression()
            try expectPunct(")", "to close '('")
            return e
        case .identifier(let name):
            _ = advance()
            if name == "sizeof" {
                try expectPunct("(", "after sizeof")
                let type = try typeExpression()
                try expectPunct(")", "to close sizeof(")
                return .sizeof(type, token.location)
            }
            if ["min", "max", "sum"].contains(name), isPunct("(") {
                let args = try argumentList()
                let arity = name == "sum" ? 1 : 2
                guard args.count == arity else {
                    throw fail("\(name)() takes \(arity) argument\(arity == 1 ? "" : "s")", at: token.location)
                }
                return .call(name, args, token.location)
            }
            var path = [name]
            while isPunct(".") {
                _ = advance()
                path.append(try identifier("a field name after '.'").0)
            }
            guard isPunct("[") else { return .name(path, token.location) }
            _ = advance()
            let index = try expression()
            try expectPunct("]", "to close the index")
            var rest: [String] = []
            while isPunct(".") {
                _ = advance()
                rest.append(try identifier("a field name after '.'").0)
            }
            return .element(path, index, rest, token.location)
        default:
            throw fail("expected an expression, found \(token.kind)")
        }
    }

    private mutating func argumentList() throws -> [Expr] {
        try expectPunct("(", "to open the argument list")
        var args: [Expr] = []
        while !isPunct(")") {
            args.append(try expression())
            if isPunct(",") { _ = advance() } else if !isPunct(")") { throw fail("expected ',' or ')' in the argument list") }
        }
        _ = advance()
        return args
    }
}
