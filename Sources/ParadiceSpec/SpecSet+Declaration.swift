// The compiler's first pass: every name of the namespace is claimed before anything is resolved.

extension SpecSet {
    private func claim(_ name: String, _ location: SourceLocation) -> Bool {
        if let previous = declaredAt[name] {
            error(location, "'\(name)' is already declared at \(previous)")
            return false
        }
        if Self.scalarTypes[name] != nil || Self.builtinConstants[name] != nil {
            error(location, "'\(name)' is a built-in name")
            return false
        }
        declaredAt[name] = location
        return true
    }

    /// First pass: every name in the namespace, before anything is resolved.
    func declare(_ parsed: [(SpecFile, [DeclarationSyntax])]) {
        for (file, declarations) in parsed {
            for declaration in declarations {
                switch declaration {
                case .headers(let h, _): file.headers += h
                case .cflags(let c, _): file.cflags += c
                case .facts(let f, _): file.facts = f
                case .specClass(let name, let devices, let plugin, _, let states, let paths, _, let loc):
                    if file.specClass != nil { error(loc, "a spec file declares at most one class"); continue }
                    if let other = classes.first(where: { $0.name == name }) {
                        error(loc, "class '\(name)' is already declared at \(other.location)"); continue
                    }
                    if devices.isEmpty { error(loc, "class '\(name)' names no devices") }
                    let c = SpecClass(name: name, devices: devices, plugin: plugin, file: file.path, location: loc)
                    c.states = declareStates(states)
                    c.pathVariables = declarePathVariables(paths, besides: c.states)
                    file.specClass = c
                    classes.append(c)
                case .constant(let name, let value, _, let loc):
                    if claim(name, loc) { constantSyntax[name] = (value, loc) }
                case .enumeration(let name, let isFlags, let members, let loc):
                    guard claim(name, loc) else { continue }
                    let set = EnumSet(name: name, isFlags: isFlags, location: loc)
                    enums[name] = set
                    var previous: Expr?
                    for m in members {
                        let value: Expr
                        if let v = m.value {
                            value = v
                        } else if isFlags {
                            error(m.location, "a flag needs a value"); continue
                        } else if let p = previous {
                            value = .binary("+", p, .integer(1, m.location), m.location)
                        } else {
                            value = .integer(0, m.location)
                        }
                        previous = .name([m.name], m.location)
                        if claim(m.name, m.location) { constantSyntax[m.name] = (value, m.location) }
                    }
                case .alias(let name, let type, let loc):
                    if claim(name, loc) { aliasSyntax[name] = type }
                case .record(let syntax):
                    guard let name = syntax.name, claim(name, syntax.location) else { continue }
                    let record = Record(name: name, isUnion: syntax.isUnion, location: syntax.location)
                    record.cName = syntax.cName
                    record.syntax = syntax
                    records[name] = record
                    file.records.append(record)
                    collectFieldNames(syntax)
                case .ioctl(let syntax):
                    _ = claim(syntax.name, syntax.location)
                }
            }
        }
    }

    private func collectFieldNames(_ syntax: RecordSyntax) {
        for f in syntax.fields {
            knownFieldNames.insert(f.name)
            if case .record(let inner) = f.type { collectFieldNames(inner) }
        }
    }
}
