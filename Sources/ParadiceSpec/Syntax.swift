/// The parsed, not yet resolved form of a spec file.

/// Which way guest memory travels for the driver: `in` it reads, `out` it writes.
public enum Direction: String, Sendable, Codable, CaseIterable {
    case input = "in"
    case output = "out"
    case both = "inout"

    /// The driver reads this memory: the guest's bytes must be gathered.
    public var reads: Bool { self != .output }
    /// The driver writes this memory: the bytes go back to the guest.
    public var writes: Bool { self != .input }
}

/// An expression over fields, parameters, constants and plug-in variables.
public indirect enum Expr: Sendable, CustomStringConvertible {
    case integer(Int64, SourceLocation)
    case name([String], SourceLocation)
    case variable(String, [Expr], SourceLocation)
    case unary(String, Expr, SourceLocation)
    case binary(String, Expr, Expr, SourceLocation)
    case call(String, [Expr], SourceLocation)
    case sizeof(TypeSyntax, SourceLocation)
    case membership(Expr, [Expr], SourceLocation)
    /// `base[index].rest`: one element of an array field (`intervals[K].min`).
    case element([String], Expr, [String], SourceLocation)

    public var location: SourceLocation {
        switch self {
        case .integer(_, let l), .name(_, let l), .variable(_, _, let l), .unary(_, _, let l),
            .binary(_, _, _, let l), .call(_, _, let l), .sizeof(_, let l), .membership(_, _, let l), .element(_, _, _, let l):
            return l
        }
    }

    public var description: String {
        switch self {
        case .integer(let v, _): return v > 9 || v < 0 ? "0x" + String(UInt64(bitPattern: v), radix: 16) : String(v)
        case .name(let path, _): return path.joined(separator: ".")
        case .variable(let n, let args, _):
            return args.isEmpty ? "$\(n)" : "$\(n)(\(args.map(\.description).joined(separator: ", ")))"
        case .unary(let op, let e, _): return "\(op)\(e)"
        case .binary(let op, let a, let b, _): return "(\(a) \(op) \(b))"
        case .call(let f, let args, _): return "\(f)(\(args.map(\.description).joined(separator: ", ")))"
        case .sizeof(let t, _): return "sizeof(\(t))"
        case .membership(let e, let set, _): return "\(e) in (\(set.map(\.description).joined(separator: ", ")))"
        case .element(let base, let index, let rest, _):
            return base.joined(separator: ".") + "[\(index)]" + rest.map { "." + $0 }.joined()
        }
    }

    /// Names the expression reads (first path component), for checks.
    func visitNames(_ body: (String, SourceLocation) -> Void) {
        switch self {
        case .integer, .sizeof: break
        case .name(let p, let l): body(p[0], l)
        case .variable(_, let args, _), .call(_, let args, _): args.forEach { $0.visitNames(body) }
        case .unary(_, let e, _): e.visitNames(body)
        case .binary(_, let a, let b, _): a.visitNames(body); b.visitNames(body)
        case .membership(let e, let s, _): e.visitNames(body); s.forEach { $0.visitNames(body) }
        case .element(let p, let index, _, let l): body(p[0], l); index.visitNames(body)
        }
    }

    /// Where the expression's first plug-in variable is written, for a diagnostic; nil when it reads none.
    var variableLocation: SourceLocation? {
        switch self {
        case .integer, .sizeof, .name: return nil
        case .variable(_, _, let l): return l
        case .call(_, let args, _): return args.lazy.compactMap(\.variableLocation).first
        case .unary(_, let e, _), .element(_, let e, _, _): return e.variableLocation
        case .binary(_, let a, let b, _): return a.variableLocation ?? b.variableLocation
        case .membership(let e, let s, _): return e.variableLocation ?? s.lazy.compactMap(\.variableLocation).first
        }
    }

    var usesVariables: Bool {
        switch self {
        case .integer, .sizeof, .name: return false
        case .variable: return true
        case .call(_, let args, _): return args.contains { $0.usesVariables }
        case .unary(_, let e, _): return e.usesVariables
        case .binary(_, let a, let b, _): return a.usesVariables || b.usesVariables
        case .membership(let e, let s, _): return e.usesVariables || s.contains { $0.usesVariables }
        case .element(_, let index, _, _): return index.usesVariables
        }
    }
}

public struct LengthSyntax: Sendable {
    public var count: Expr
    public var copyOut: Expr?      // `capacity n` → n; `n -> m` → m
}

public indirect enum TypeSyntax: Sendable, CustomStringConvertible {
    case named(String, SourceLocation)
    case pointer(wide: Bool, Direction, TypeSyntax, SourceLocation)
    case descriptor(Direction, width: Int, SourceLocation)
    case record(RecordSyntax)
    case array(TypeSyntax, LengthSyntax, SourceLocation)

    public var location: SourceLocation {
        switch self {
        case .named(_, let l), .pointer(_, _, _, let l), .descriptor(_, _, let l), .array(_, _, let l): return l
        case .record(let r): return r.location
        }
    }

    public var description: String {
        switch self {
        case .named(let n, _): return n
        case .pointer(let wide, let d, let t, _): return "\(wide ? "ptr64" : "ptr")<\(d.rawValue), \(t)>"
        case .descriptor(let d, let w, _): return "\(w == 8 ? "fd64" : "fd")<\(d.rawValue)>"
        case .record(let r): return r.isUnion ? "union {…}" : "struct {…}"
        case .array(let t, let l, _): return "\(t)[\(l.count)]"
        }
    }
}

public struct FieldSyntax: Sendable {
    public var name: String
    public var type: TypeSyntax
    public var location: SourceLocation
    public var enumName: (String, SourceLocation)?
    public var flagsName: (String, SourceLocation)?
    public var maxCount: Expr?
    public var maxBytes: Expr?
    public var when: Expr?
    public var align: Expr?
    public var cName: String?
    public var refusal: String?
    public var kept: String?
}

public struct RecordSyntax: Sendable {
    public var name: String?
    public var isUnion: Bool
    public var cName: String?
    public var packed = false
    public var align: Expr?
    public var fields: [FieldSyntax] = []
    public var location: SourceLocation
}

public struct ParameterSyntax: Sendable {
    public var name: String
    public var range: (Expr, Expr)?
    public var location: SourceLocation
}

public enum EncodingSyntax: Sendable {
    case io(kind: String, type: Expr, nr: Expr, argType: TypeSyntax?)   // _IO / _IOR / _IOW / _IOWR
    case ioc(dir: Expr, type: Expr, nr: Expr, size: Expr)
    case raw(Expr)
}

public enum ArgumentSyntax: Sendable {
    case none
    case value
    case descriptor
    case pointer(TypeSyntax)
}

public struct IoctlSyntax: Sendable {
    public var name: String
    public var parameters: [ParameterSyntax]
    public var encoding: EncodingSyntax
    public var argument: ArgumentSyntax?
    public var blocking = false
    public var returnsDescriptor = false
    public var maxBytes: Expr?
    public var cExpression: String?
    public var verify = true
    public var refusal: String?
    public var maxCount: Expr?
    public var syncs: [SyncSyntax] = []
    public var remembers: [RememberSyntax] = []
    public var forgets: [(String, SourceLocation)] = []
    public var location: SourceLocation
}

/// `remember NAME = VALUE [when COND]` on an ioctl: after a successful call the open file's state NAME
/// takes VALUE, read over the argument's struct as the driver left it (unset when COND does not hold).
public struct RememberSyntax: Sendable {
    public var name: String
    public var value: Expr
    public var condition: Expr?
    public var location: SourceLocation
}

/// `state NAME unset errno ERRNO` in a class: a per-file value that ioctls `remember` and `forget`, read as
/// `$NAME`; a plan that reads it while unset is refused with ERRNO.
/// `path NAME GLOB…` in a class: `$NAME` is 1 on an open file whose path matches one of the globs, else 0.
public struct PathVariableSyntax: Sendable {
    public var name: String
    public var globs: [String]
    public var location: SourceLocation
}

public struct StateSyntax: Sendable {
    public var name: String
    public var errno: (String, SourceLocation)
    public var location: SourceLocation
}

/// `sync DIR OFFSET length LENGTH [when COND]` on an ioctl.
public struct SyncSyntax: Sendable {
    public var direction: Direction
    public var offset: Expr
    public var length: Expr
    public var condition: Expr?
    public var location: SourceLocation
}

/// `mmap refuse COND errno NAME` in a class: mmaps of the class's files for which COND (over `offset`,
/// `length` and constants) holds are refused with errno NAME.
public struct MmapRefusalSyntax: Sendable {
    public var condition: Expr
    public var errno: (String, SourceLocation)
    public var location: SourceLocation
}

public struct EnumMemberSyntax: Sendable {
    public var name: String
    public var value: Expr?
    public var verify: Bool
    public var location: SourceLocation
}

/// `read stream` or `read records TYPE`: how the class's reads may be split (ReadShape).
public enum ReadShapeSyntax: Sendable {
    case stream(SourceLocation)
    case records(String, SourceLocation)
}

public enum DeclarationSyntax: Sendable {
    case headers([String], SourceLocation)
    case cflags([String], SourceLocation)
    case facts(String, SourceLocation)
    case specClass(name: String, devices: [String], plugin: String?, mmapRefusals: [MmapRefusalSyntax], states: [StateSyntax], paths: [PathVariableSyntax], readShape: ReadShapeSyntax?, SourceLocation)
    case constant(name: String, value: Expr, verify: Bool, SourceLocation)
    case enumeration(name: String, isFlags: Bool, members: [EnumMemberSyntax], SourceLocation)
    case alias(name: String, type: TypeSyntax, SourceLocation)
    case record(RecordSyntax)
    case ioctl(IoctlSyntax)
}
