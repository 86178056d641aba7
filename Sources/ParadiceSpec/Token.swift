/// A lexical token of the spec language.
public struct Token: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case identifier(String)
        case variable(String)      // $name
        case integer(Int64)
        case string(String)
        case punct(String)
        case newline
        case end
    }

    public var kind: Kind
    public var location: SourceLocation
}

extension Token.Kind: CustomStringConvertible {
    public var description: String {
        switch self {
        case .identifier(let s): return "'\(s)'"
        case .variable(let s): return "'$\(s)'"
        case .integer(let v): return "'\(v)'"
        case .string(let s): return "\"\(s)\""
        case .punct(let p): return "'\(p)'"
        case .newline: return "end of line"
        case .end: return "end of file"
        }
    }
}
