/// Where the names of an expression get their values: the fields being read, ioctl parameters,
/// plug-in variables. Constants are resolved by the spec set itself.
public protocol EvaluationScope {
    /// The value of a field or parameter, or nil when this scope does not know the name.
    func value(of path: [String], at location: SourceLocation) throws -> Int64?
    /// A plug-in variable or function.
    func variable(_ name: String, arguments: [Int64], at location: SourceLocation) throws -> Int64
    /// The sum of the elements behind pointer field `path`.
    func sum(of path: [String], at location: SourceLocation) throws -> Int64
    /// Field `rest` of element `index` of array field `path` (`intervals[K].min`), or nil when this scope
    /// has no such field.
    func element(of path: [String], index: Int64, then rest: [String], at location: SourceLocation) throws -> Int64?
}

extension EvaluationScope {
    public func element(of path: [String], index: Int64, then rest: [String], at location: SourceLocation) throws -> Int64? { nil }
}

/// An expression could not be evaluated.
public struct EvaluationError: Error, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    /// The errno a guest should see for this failure, when it is not a spec bug.
    public var errno: Int32?

    public init(_ location: SourceLocation, _ message: String, errno: Int32? = nil) {
        self.location = location
        self.message = message
        self.errno = errno
    }

    public var description: String { "\(location): \(message)" }
}

/// A scope that knows nothing but constants (and, optionally, ioctl parameters).
public struct ConstantScope: EvaluationScope {
    public var parameters: [String: Int64]

    public init(parameters: [String: Int64] = [:]) { self.parameters = parameters }

    public func value(of path: [String], at location: SourceLocation) throws -> Int64? {
        path.count == 1 ? parameters[path[0]] : nil
    }

    public func variable(_ name: String, arguments: [Int64], at location: SourceLocation) throws -> Int64 {
        throw EvaluationError(location, "plug-in variable $\(name) has no value here")
    }

    public func sum(of path: [String], at location: SourceLocation) throws -> Int64 {
        throw EvaluationError(location, "sum() needs argument data")
    }
}

extension SpecSet {
    /// Evaluates with checked 64-bit arithmetic: an overflow is an error, never a wrapped size.
    public func evaluate(_ expr: Expr, in scope: some EvaluationScope) throws -> Int64 {
        switch expr {
        case .integer(let v, _):
            return v
        case .name(let path, let loc):
            if let v = try scope.value(of: path, at: loc) { return v }
            if path.count == 1, let c = try constantValue(path[0]) { return c }
            throw EvaluationError(loc, "unknown name '\(path.joined(separator: "."))'")
        case .variable(let name, let args, let loc):
            let values = try args.map { try evaluate($0, in: scope) }
            return try scope.variable(name, arguments: values, at: loc)
        case .unary(let op, let e, let loc):
            let v = try evaluate(e, in: scope)
            switch op {
            case "-":
                guard v != .min else { throw EvaluationError(loc, "arithmetic overflow") }
                return -v
            case "!": return v == 0 ? 1 : 0
            default: return ~v
            }
        case .binary(let op, let a, let b, let loc):
            let x = try evaluate(a, in: scope)
            if op == "&&" { return x == 0 ? 0 : (try evaluate(b, in: scope) != 0 ? 1 : 0) }
            if op == "||" { return x != 0 ? 1 : (try evaluate(b, in: scope) != 0 ? 1 : 0) }
            let y = try evaluate(b, in: scope)
            return try Self.apply(op, x, y, loc)
        case .call(let name, let args, let loc):
            if name == "sum" {
                guard case .name(let path, _) = args[0] else {
                    throw EvaluationError(loc, "sum() takes the name of a pointer field")
                }
                return try scope.sum(of: path, at: loc)
            }
            let x = try evaluate(args[0], in: scope)
            let y = try evaluate(args[1], in: scope)
            return name == "min" ? Swift.min(x, y) : Swift.max(x, y)
        case .sizeof(let type, let loc):
            do {
                return Int64(try resolveStandaloneType(type).size)
            } catch let errors as SpecErrors {
                throw EvaluationError(loc, errors.diagnostics.first?.message ?? "bad type in sizeof")
            }
        case .membership(let e, let set, _):
            let v = try evaluate(e, in: scope)
            for candidate in set where try evaluate(candidate, in: scope) == v { return 1 }
            return 0
        case .element(let path, let index, let rest, let loc):
            let i = try evaluate(index, in: scope)
            if let v = try scope.element(of: path, index: i, then: rest, at: loc) { return v }
            throw EvaluationError(loc, "'\(path.joined(separator: "."))' is no array field here")
        }
    }

    static func apply(_ op: String, _ x: Int64, _ y: Int64, _ loc: SourceLocation) throws -> Int64 {
        func checked(_ r: (partialValue: Int64, overflow: Bool)) throws -> Int64 {
            if r.overflow { throw EvaluationError(loc, "arithmetic overflow") }
            return r.partialValue
        }
        switch op {
        case "+": return try checked(x.addingReportingOverflow(y))
        case "-": return try checked(x.subtractingReportingOverflow(y))
        case "*": return try checked(x.multipliedReportingOverflow(by: y))
        case "/", "%":
            guard y != 0 else { throw EvaluationError(loc, "division by zero") }
            return try checked(op == "/" ? x.dividedReportingOverflow(by: y) : x.remainderReportingOverflow(dividingBy: y))
        case "<<":
            guard y >= 0, y < 63 else { throw EvaluationError(loc, "shift out of range") }
            return x << y
        case ">>":
            guard y >= 0, y < 64 else { throw EvaluationError(loc, "shift out of range") }
            return x >> y
        case "&": return x & y
        case "|": return x | y
        case "^": return x ^ y
        case "==": return x == y ? 1 : 0
        case "!=": return x != y ? 1 : 0
        case "<": return x < y ? 1 : 0
        case "<=": return x <= y ? 1 : 0
        case ">": return x > y ? 1 : 0
        case ">=": return x >= y ? 1 : 0
        default: throw EvaluationError(loc, "unknown operator \(op)")
        }
    }
}
