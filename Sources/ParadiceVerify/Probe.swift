import ParadiceSpec

/// One fact about the C ABI that a spec states and the headers must confirm.
public struct LayoutCheck: Sendable {
    public enum Kind: Sendable { case type, member, constant, ioctl }

    public var kind: Kind
    /// C type name for type and member checks.
    public var cType: String
    /// Member designator, constant name or ioctl C expression.
    public var subject: String
    /// What the spec computed: (size, align), (offset, size), (value), (number).
    public var expected: [Int64]
    /// Compare only the first value (a flexible array member has no size in C).
    public var compareCount: Int
    public var location: SourceLocation
    public var what: String

    /// The key under which the C side's answer is recorded (probe output or facts file).
    public var key: String {
        switch kind {
        case .type: return "type|\(cType)"
        case .member: return "member|\(cType)|\(subject)"
        case .constant: return "const|\(subject)"
        case .ioctl: return "ioctl|\(subject)"
        }
    }

    /// The C expressions that print the actual values.
    var cExpressions: [String] {
        switch kind {
        case .type: return ["sizeof(\(cType))", "_Alignof(\(cType))"]
        case .member:
            return compareCount == 1
                ? ["offsetof(\(cType), \(subject))"]
                : ["offsetof(\(cType), \(subject))", "sizeof(((\(cType) *)0)->\(subject))"]
        case .constant: return ["(long long)(\(subject))"]
        case .ioctl: return ["(long long)(unsigned int)(\(subject))"]
        }
    }
}

/// Collects the checks for one spec file.
public func layoutChecks(for file: SpecFile, in specs: SpecSet) -> [LayoutCheck] {
    var checks: [LayoutCheck] = []
    for record in file.records {
        guard let cType = record.cTypeName else { continue }
        checks.append(LayoutCheck(kind: .type, cType: cType, subject: "", expected: [Int64(record.size), Int64(record.alignment)],
                                  compareCount: 2, location: record.location, what: "\(cType): size, alignment"))
        memberChecks(record, cType: cType, prefix: "", base: 0, into: &checks)
    }
    for c in file.constants where c.verify {
        checks.append(LayoutCheck(kind: .constant, cType: "", subject: c.name, expected: [c.value], compareCount: 1,
                                  location: c.location, what: "constant \(c.name)"))
    }
    for ioctl in file.ioctls where ioctl.verify {
        let params = specs.sampleParameters(ioctl)
        guard let number = try? ioctl.command(in: specs, parameters: params) else { continue }
        var expression = ioctl.cExpression ?? ioctl.name
        if ioctl.cExpression == nil && ioctl.isFamily {
            expression += "(" + ioctl.parameters.map { String(params[$0.name]!) }.joined(separator: ", ") + ")"
        }
        checks.append(LayoutCheck(kind: .ioctl, cType: "", subject: expression, expected: [Int64(number)], compareCount: 1,
                                  location: ioctl.location, what: "ioctl \(expression)"))
    }
    return checks
}

private func memberChecks(_ record: Record, cType: String, prefix: String, base: Int, into checks: inout [LayoutCheck]) {
    for field in record.fields where !field.isSpecOnly {
        let offset = base + field.offset
        if field.isAnonymous {
            if case .record(let inner) = field.type {
                memberChecks(inner, cType: cType, prefix: prefix, base: offset, into: &checks)
            }
            continue
        }
        let designator = prefix + (field.cDesignator ?? field.name)
        let flexible = field.flexible != nil
        checks.append(LayoutCheck(kind: .member, cType: cType, subject: designator,
                                  expected: [Int64(offset), Int64(flexible ? 0 : field.type.size)],
                                  compareCount: flexible ? 1 : 2, location: field.location,
                                  what: "\(cType).\(designator): offset\(flexible ? "" : ", size")"))
        if case .record(let inner) = field.type, inner.name == nil {
            memberChecks(inner, cType: cType, prefix: designator + ".", base: offset, into: &checks)
        }
    }
}

/// Writes the C probe: one printf per check, so a compile error maps back to one spec line.
func probeSource(headers: [String], checks: [LayoutCheck]) -> (source: String, firstLine: Int) {
    var lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/ioctl.h>"]
    for h in headers { lines.append("#include <\(h)>") }
    lines.append("int main(void) {")
    let first = lines.count + 1
    for (id, check) in checks.enumerated() {
        let values = check.cExpressions.map { "(long long)(\($0))" }
        let format = ([String(id)] + Array(repeating: "%lld", count: values.count)).joined(separator: " ")
        lines.append("  printf(\"\(format)\\n\", \(values.joined(separator: ", ")));")
    }
    lines.append("  return 0;")
    lines.append("}")
    return (lines.joined(separator: "\n") + "\n", first)
}
