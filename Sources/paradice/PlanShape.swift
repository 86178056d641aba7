import ParadiceSpec

/// A human-readable account of an ioctl: number, argument layout with offsets, and which regions its plan holds.
struct PlanShape {
    let specs: SpecSet

    func describe(_ ioctl: Ioctl) -> String {
        var out: [String] = []
        let params = specs.sampleParameters(ioctl)
        let number = (try? ioctl.command(in: specs, parameters: params)) ?? 0
        var head = "ioctl \(ioctl.name)"
        if ioctl.isFamily {
            head += "(" + ioctl.parameters.map { p in p.range.map { "\(p.name) \($0.lowerBound)..\($0.upperBound)" } ?? p.name }.joined(separator: ", ") + ")"
            head += "  e.g. " + ioctl.parameters.map { "\($0.name)=\(params[$0.name]!)" }.joined(separator: " ") + " →"
        }
        head += " 0x" + String(number, radix: 16)
        if case .generic(let dir, _, _, _) = ioctl.encoding {
            head += " (dir \(["none", "write", "read", "read|write"][Int(dir)]), type \(typeLabel(IoctlNumber.type(number))), nr \(IoctlNumber.nr(number)), size \(IoctlNumber.size(number)))"
        }
        out.append(head)
        var flags: [String] = []
        if ioctl.blocking { flags.append("blocking") }
        if ioctl.returnsDescriptor { flags.append("returns a new fd") }
        if let m = ioctl.maxBytes { flags.append("at most \(m) bytes") }
        if let r = ioctl.refusal { flags.append("refused: \(r)") }
        if !flags.isEmpty { out.append("  " + flags.joined(separator: ", ")) }
        out.append("  argument: \(ioctl.argument)")
        out.append("plan:")
        switch ioctl.argument {
        case .none: out.append("  no memory; the argument is 0")
        case .value: out.append("  no memory; the integer argument is passed as is")
        case .descriptor: out.append("  no memory; the argument is one of the guest's fds, translated")
        case .pointer(let p): region(p, path: "arg", depth: 1, into: &out, seen: [])
        }
        return out.joined(separator: "\n")
    }

    private func typeLabel(_ t: UInt32) -> String {
        (0x21...0x7e).contains(t) ? "'\(Character(UnicodeScalar(UInt8(t))))'" : "0x" + String(t, radix: 16)
    }

    private func region(_ p: PointerType, path: String, depth: Int, into out: inout [String], seen: Set<ObjectIdentifier>) {
        let indent = String(repeating: "  ", count: depth)
        let element = p.pointee
        var size: String
        if let length = p.length {
            size = "\(length.count) × \(element.size) bytes"
            if let c = length.copyOut { size += ", copied back: min(before, \(c) after)" }
        } else if case .record(let r) = element, let flex = r.flexibleField {
            size = "\(r.size) + \(flex.flexible!.count) × \(flex.type.size) bytes"
            if let c = flex.flexible?.copyOut { size += ", tail copied back: min(before, \(c) after)" }
        } else {
            size = "\(element.size) bytes"
        }
        var caps: [String] = []
        if let m = p.maxCount { caps.append("max \(m)") }
        if let m = p.maxBytes { caps.append("maxbytes \(m)") }
        out.append("\(indent)\(p.direction.rawValue.padding(5)) \(path) → \(element) [\(size)]\(caps.isEmpty ? "" : " (" + caps.joined(separator: ", ") + ")")")
        if case .record(let r) = element {
            if seen.contains(ObjectIdentifier(r)) {
                out.append("\(indent)  … linked list of \(r.displayName), at most \(p.maxCount ?? 16) nodes")
                return
            }
            layout(r, base: 0, depth: depth + 1, into: &out, seen: seen.union([ObjectIdentifier(r)]))
        } else if case .pointer(let inner) = element {
            region(inner, path: "\(path)[i]", depth: depth + 1, into: &out, seen: seen)
        } else if case .descriptor(let d, _) = element {
            out.append("\(indent)  fd<\(d.rawValue)> translated between guest and backend descriptors")
        }
    }

    private func layout(_ r: Record, base: Int, depth: Int, into out: inout [String], seen: Set<ObjectIdentifier>) {
        let indent = String(repeating: "  ", count: depth)
        for f in r.fields {
            let offset = base + f.offset
            var line = "\(indent)+\(String(offset).padding(4)) \(f.name.padding(18)) "
            if let flex = f.flexible {
                line += "\(f.type)[\(ArrayLength(count: flex.count, copyOut: flex.copyOut))]  (flexible"
                line += f.maxCount.map { ", max \($0))" } ?? ")"
            } else {
                line += "\(f.type)  (\(f.type.size) bytes)"
            }
            if let c = f.check { line += " \(c.isFlags ? "flags" : "enum")(\(c.name))" }
            if let w = f.when { line += "  when \(w)" }
            if let r = f.refusal { line += "  REFUSED: \(r)" }
            out.append(line)
            switch f.type {
            case .record(let inner) where inner.name == nil || inner.needsVisit:
                if inner.name == nil { layout(inner, base: offset, depth: depth + 1, into: &out, seen: seen) }
                else if inner.containsReferences { layout(inner, base: offset, depth: depth + 1, into: &out, seen: seen) }
            case .pointer(let p):
                region(p, path: f.name, depth: depth + 1, into: &out, seen: seen)
            default: break
            }
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
