// The run-time index: each class's exact command numbers and families, and how an incoming number is matched.

extension SpecSet {
    func indexCommands() {
        for c in classes {
            var exact: [UInt32: Ioctl] = [:]
            var fams: [Ioctl] = []
            for ioctl in c.ioctls {
                if ioctl.isFamily { fams.append(ioctl); continue }
                guard let number = try? ioctl.command(in: self, parameters: [:]) else { continue }
                if let other = exact[number] {
                    error(ioctl.location, "'\(ioctl.name)' has the same number 0x\(String(number, radix: 16)) as '\(other.name)' at \(other.location)")
                    continue
                }
                exact[number] = ioctl
            }
            c.exactCommands = exact
            c.families = fams
        }
    }

    public struct Match: Sendable {
        public var ioctl: Ioctl
        public var parameters: [String: Int64]
    }

    /// The ioctl of a class that an incoming command number denotes, with its family parameters.
    public func match(command: UInt32, inClass className: String) -> Match? {
        guard let c = specClass(named: className) else { return nil }
        return match(command: command, in: c)
    }

    public func match(command: UInt32, in specClass: SpecClass) -> Match? {
        if let ioctl = specClass.exactCommands[command] { return Match(ioctl: ioctl, parameters: [:]) }
        for ioctl in specClass.families {
            if let p = solve(ioctl, command) { return Match(ioctl: ioctl, parameters: p) }
        }
        return nil
    }

    private func solve(_ ioctl: Ioctl, _ command: UInt32) -> [String: Int64]? {
        guard case .generic(let dir, let type, let nr, let size) = ioctl.encoding,
              IoctlNumber.dir(command) == dir,
              let t = try? evaluate(type, in: ConstantScope()), UInt32(truncatingIfNeeded: t) & 0xff == IoctlNumber.type(command)
        else { return nil }
        var values: [String: Int64] = [:]
        for (expr, actual) in [(nr, Int64(IoctlNumber.nr(command))), (size, Int64(IoctlNumber.size(command)))] {
            var names: [String] = []
            expr.visitNames { n, _ in if ioctl.parameters.contains(where: { $0.name == n }), !names.contains(n) { names.append(n) } }
            guard names.count <= 1 else { return nil }
            if let p = names.first {
                var probe = values
                probe[p] = 0
                guard let base = try? evaluate(expr, in: ConstantScope(parameters: probe)) else { return nil }
                values[p] = actual - base
            }
        }
        for p in ioctl.parameters {
            guard let v = values[p.name] else { return nil }
            let range = p.range ?? 0...(isInSize(ioctl, p.name) ? Int64(IoctlNumber.sizeMask) : 255)
            guard range.contains(v) else { return nil }
        }
        guard (try? ioctl.command(in: self, parameters: values)) == command else { return nil }
        return values
    }

    private func isInSize(_ ioctl: Ioctl, _ name: String) -> Bool {
        guard case .generic(_, _, _, let size) = ioctl.encoding else { return false }
        var found = false
        size.visitNames { n, _ in if n == name { found = true } }
        return found
    }
}
