#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Per-file state: a class's `state` declarations and the ioctls' `remember` and `forget` clauses.

extension SpecSet {
    func declareStates(_ syntax: [StateSyntax]) -> [StateVariable] {
        var states: [StateVariable] = []
        for s in syntax {
            if let previous = states.first(where: { $0.name == s.name }) {
                error(s.location, "state '\(s.name)' is already declared at \(previous.location)")
                continue
            }
            guard let number = Self.errnoNumbers[s.errno.0] else {
                error(s.errno.1, "unknown errno '\(s.errno.0)'")
                continue
            }
            states.append(StateVariable(name: s.name, unsetErrno: number, location: s.location))
        }
        return states
    }

    func declarePathVariables(_ syntax: [PathVariableSyntax], besides states: [StateVariable]) -> [PathVariable] {
        var variables: [PathVariable] = []
        for p in syntax {
            if let previous = states.first(where: { $0.name == p.name })?.location ?? variables.first(where: { $0.name == p.name })?.location {
                error(p.location, "'\(p.name)' is already declared at \(previous)")
                continue
            }
            variables.append(PathVariable(name: p.name, globs: p.globs, location: p.location))
        }
        return variables
    }

    /// `remember` and `forget` name states of the ioctl's class; a remembered value and its condition
    /// read the fields of the struct the argument points to (which the driver writes) and constants.
    func resolveStateChanges(_ syntax: IoctlSyntax, of ioctl: Ioctl, in specClass: SpecClass?) {
        func index(_ name: String, _ location: SourceLocation) -> Int? {
            guard let specClass else {
                error(location, "'\(name)' is no state: this file declares no class")
                return nil
            }
            guard let i = specClass.states.firstIndex(where: { $0.name == name }) else {
                error(location, "'\(name)' is no state of class '\(specClass.name)'")
                return nil
            }
            return i
        }
        for (name, location) in syntax.forgets {
            if let i = index(name, location) { ioctl.forgets.append(i) }
        }
        guard let first = syntax.remembers.first else { return }
        guard case .pointer(let p) = ioctl.argument, p.length == nil, p.direction.writes, case .record(let record) = p.pointee else {
            error(first.location, "'remember' reads the struct the driver writes back; ioctl '\(ioctl.name)' points to none")
            return
        }
        for r in syntax.remembers {
            guard let i = index(r.name, r.location) else { continue }
            var valid = true
            for e in [r.value] + (r.condition.map { [$0] } ?? []) {
                if let variable = e.variableLocation {
                    error(variable, "a remembered value reads the argument's fields and constants, not plug-in variables")
                    valid = false
                    continue
                }
                do { _ = try evaluate(e, in: RecordCheckScope(record: record)) } catch let e as EvaluationError {
                    error(e.location, e.message)
                    valid = false
                } catch { valid = false }
            }
            if valid { ioctl.remembers.append(StateChange(index: i, value: r.value, condition: r.condition, location: r.location)) }
        }
    }
}

/// Checks, at compile time, that an expression's names are integer fields of `record` (array elements by
/// an index in bounds) or constants. Fields read as 1, so that a sample evaluation divides by none.
struct RecordCheckScope: EvaluationScope {
    let record: Record

    func value(of path: [String], at location: SourceLocation) throws -> Int64? {
        guard let field = Self.field(path, in: record) else { return nil }
        guard Self.isInteger(field.type) else { throw EvaluationError(location, "'\(path.joined(separator: "."))' is no integer field") }
        return 1
    }

    func element(of path: [String], index: Int64, then rest: [String], at location: SourceLocation) throws -> Int64? {
        guard let field = Self.field(path, in: record) else { return nil }
        guard case .array(let element, let count) = field.type else {
            throw EvaluationError(location, "'\(path.joined(separator: "."))' is no array field")
        }
        guard index >= 0, index < Int64(count) else {
            throw EvaluationError(location, "index \(index) is outside '\(path.joined(separator: "."))' (\(count) elements)")
        }
        var type = element
        if !rest.isEmpty {
            guard case .record(let inner) = element, let f = Self.field(rest, in: inner) else {
                throw EvaluationError(location, "'\(rest.joined(separator: "."))' is no field of an element of '\(path.joined(separator: "."))'")
            }
            type = f.type
        }
        guard Self.isInteger(type) else { throw EvaluationError(location, "an element of '\(path.joined(separator: "."))' is no integer") }
        return 1
    }

    func variable(_ name: String, arguments: [Int64], at location: SourceLocation) throws -> Int64 {
        throw EvaluationError(location, "plug-in variable $\(name) has no value here")
    }

    func sum(of path: [String], at location: SourceLocation) throws -> Int64 {
        throw EvaluationError(location, "sum() needs guest memory, which a remembered value does not read")
    }

    static func field(_ path: [String], in record: Record) -> Field? {
        guard var (field, _) = record.field(named: path[0]) else { return nil }
        for component in path.dropFirst() {
            guard case .record(let inner) = field.type, let (next, _) = inner.field(named: component) else { return nil }
            field = next
        }
        return field
    }

    static func isInteger(_ type: SpecType) -> Bool {
        if case .integer = type { return true }
        return false
    }
}

extension SpecClass {
    /// The values of the class's path variables for an open file at `path`, in declaration order.
    public func pathVariableValues(for path: String) -> [Int64] {
        pathVariables.map { v in v.globs.contains { fnmatch($0, path, FNM_PATHNAME) == 0 } ? 1 : 0 }
    }
}
