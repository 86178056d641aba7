// Constants and enum members, evaluated on first use; the name checks of run-time expressions.

extension SpecSet {
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
        case .element(_, let index, _, _): return containsSum(index)
        case .variable(_, let args, _): return args.contains(where: containsSum)
        default: return false
        }
    }

    /// Every name used in a run-time expression must exist somewhere: a typo is caught at compile time.
    func checkNames(_ expr: Expr, parameters: [String]) {
        expr.visitNames { name, loc in
            if constantSyntax[name] == nil && constantValues[name] == nil && Self.builtinConstants[name] == nil
                && !knownFieldNames.contains(name) && !parameters.contains(name) && name != "result"
            {
                error(loc, "unknown name '\(name)': not a field, parameter or constant")
            }
        }
    }
}
