// Struct and union layout (C rules for LP64) and the field attributes applied while laying out.

extension SpecSet {
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
}
