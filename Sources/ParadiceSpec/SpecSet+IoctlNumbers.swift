// Ioctl declarations resolved into encodings and arguments, and the command numbers they denote.

extension SpecSet {
    func resolveIoctl(_ syntax: IoctlSyntax, file: SpecFile) -> Ioctl? {
        var parameters: [IoctlParameter] = []
        for p in syntax.parameters {
            var range: ClosedRange<Int64>?
            if let (lo, hi) = p.range, let l = constantExpression(lo), let h = constantExpression(hi) {
                if l <= h { range = l...h } else { error(p.location, "empty range \(l)..\(h)") }
            }
            parameters.append(IoctlParameter(name: p.name, range: range, location: p.location))
        }
        let parameterNames = parameters.map(\.name)
        let encoding: Ioctl.Encoding
        var defaultArgument: IoctlArgument = .none
        var needsExplicitArgument = false
        switch syntax.encoding {
        case .raw(let e):
            encoding = .raw(e)
            needsExplicitArgument = true
        case .ioc(let dir, let type, let nr, let size):
            guard let d = constantExpression(dir), (0...3).contains(d) else {
                error(syntax.location, "_IOC direction must be _IOC_NONE, _IOC_READ, _IOC_WRITE or both")
                return nil
            }
            encoding = .generic(dir: UInt32(d), type: type, nr: nr, size: size)
            needsExplicitArgument = d != 0
        case .io(let kind, let type, let nr, let argType):
            let dir: UInt32 = ["_IO": 0, "_IOW": 1, "_IOR": 2, "_IOWR": 3][kind]!
            var size: Expr = .integer(0, syntax.location)
            if let t = argType {
                guard let resolved = try? resolveType(t, parameters: parameterNames) else { return nil }
                size = .integer(Int64(resolved.size), t.location)
                let direction: Direction = dir == 1 ? .input : dir == 2 ? .output : .both
                let pointer = PointerType(direction: direction, wide: false, location: t.location)
                pointer.pointee = resolved
                defaultArgument = .pointer(pointer)
            }
            encoding = .generic(dir: dir, type: type, nr: nr, size: size)
        }
        let ioctl = Ioctl(name: syntax.name, location: syntax.location, encoding: encoding, file: file.path)
        ioctl.parameters = parameters
        ioctl.blocking = syntax.blocking
        ioctl.returnsDescriptor = syntax.returnsDescriptor
        ioctl.cExpression = syntax.cExpression
        ioctl.verify = syntax.verify
        ioctl.refusal = syntax.refusal
        for sync in syntax.syncs {
            guard let offset = constantExpression(sync.offset), let length = constantExpression(sync.length) else { continue }
            guard offset >= 0, length > 0, offset <= Int64.max - length else {
                error(sync.location, "sync range \(offset) length \(length) is not a range of mmap offsets")
                continue
            }
            ioctl.syncs.append(SyncPoint(direction: sync.direction, range: UInt64(offset)..<UInt64(offset + length),
                                         condition: sync.condition, location: sync.location))
        }
        if let m = syntax.maxBytes, let v = constantExpression(m) { ioctl.maxBytes = Int(v) }

        switch syntax.argument {
        case .none?: ioctl.argument = .none
        case .value?: ioctl.argument = .value
        case .descriptor?: ioctl.argument = .descriptor
        case .pointer(let t)?:
            guard case .pointer(let wide, let dir, let pointee, let loc) = t,
                  let p = try? resolvePointer(wide: wide, direction: dir, pointee: pointee, loc, parameters: parameterNames)
            else { return nil }
            ioctl.argument = .pointer(p)
        case nil:
            if needsExplicitArgument {
                error(syntax.location, "ioctl '\(syntax.name)' needs 'arg …': its encoding does not name the argument type")
            }
            ioctl.argument = defaultArgument
        }

        if let m = syntax.maxCount, let v = constantExpression(m) {
            if case .pointer(let p) = ioctl.argument, p.length != nil { p.maxCount = Int(v) }
            else { error(m.location, "'max' applies to an argument that points to a variable array") }
        }

        // Each parameter must be recoverable from an incoming number.
        if case .generic(_, let type, let nr, let size) = encoding {
            guard constantExpression(type) != nil else { return nil }
            for p in parameters {
                var used = false
                for e in [nr, size] { e.visitNames { n, _ in if n == p.name { used = true } } }
                if !used { error(p.location, "parameter '\(p.name)' appears in neither the nr nor the size of the encoding") }
            }
            do {
                _ = try ioctl.command(in: self, parameters: sampleParameters(ioctl))
            } catch let e as EvaluationError {
                error(e.location, e.message)
                return nil
            } catch {
                return nil
            }
        } else if !parameters.isEmpty {
            error(syntax.location, "a plain-number ioctl cannot take parameters")
        }
        return ioctl
    }

    /// Representative parameter values (used for the verifier and for `spec show`).
    public func sampleParameters(_ ioctl: Ioctl) -> [String: Int64] {
        var values: [String: Int64] = [:]
        for p in ioctl.parameters {
            var inSize = false
            if case .generic(_, _, _, let size) = ioctl.encoding {
                size.visitNames { n, _ in if n == p.name { inSize = true } }
            }
            if let r = p.range {
                values[p.name] = r.lowerBound + (r.upperBound - r.lowerBound) / 2
            } else {
                values[p.name] = inSize ? 64 : 1
            }
        }
        return values
    }
}

extension Ioctl {
    /// The command number for the given family parameters (none for a plain ioctl).
    public func command(in specs: SpecSet, parameters: [String: Int64]) throws -> UInt32 {
        let scope = ConstantScope(parameters: parameters)
        switch encoding {
        case .raw(let e):
            let v = try specs.evaluate(e, in: scope)
            guard v >= 0, v <= Int64(UInt32.max) else { throw EvaluationError(e.location, "ioctl number out of range") }
            return UInt32(v)
        case .generic(let dir, let type, let nr, let size):
            let t = try specs.evaluate(type, in: scope)
            let n = try specs.evaluate(nr, in: scope)
            let s = try specs.evaluate(size, in: scope)
            guard (0...255).contains(t) else { throw EvaluationError(type.location, "ioctl type \(t) does not fit in 8 bits") }
            guard (0...255).contains(n) else { throw EvaluationError(nr.location, "ioctl nr \(n) does not fit in 8 bits") }
            guard (0...Int64(IoctlNumber.sizeMask)).contains(s) else {
                throw EvaluationError(size.location, "argument size \(s) does not fit in the 14-bit size field")
            }
            return IoctlNumber.make(dir: dir, type: UInt32(t), nr: UInt32(n), size: UInt32(s))
        }
    }
}
