import ParadiceSpec

/// Computes memory plans from the specs. Stateless: one instance serves every session.
public struct Planner: Sendable {
    public let specs: SpecSet
    public var limits: PlanLimits

    public init(specs: SpecSet, limits: PlanLimits = PlanLimits()) {
        self.specs = specs
        self.limits = limits
    }

    /// The plan for `command` with argument `argument` on a file of class `className`.
    public func plan(command: UInt32, argument: UInt64, className: String,
                     memory: some GuestMemory, variables: (any PlanVariables)? = nil) throws -> PlannedCall {
        guard let match = specs.match(command: command, inClass: className) else { throw PlanError.unknownCommand(command) }
        return try plan(match, command: command, argument: argument, memory: memory, variables: variables)
    }

    public func plan(command: UInt32, argument: UInt64, specClass: SpecClass,
                     memory: some GuestMemory, variables: (any PlanVariables)? = nil) throws -> PlannedCall {
        guard let match = specs.match(command: command, in: specClass) else { throw PlanError.unknownCommand(command) }
        return try plan(match, command: command, argument: argument, memory: memory, variables: variables)
    }

    public func plan(_ match: SpecSet.Match, command: UInt32, argument: UInt64,
                     memory: some GuestMemory, variables: (any PlanVariables)? = nil) throws -> PlannedCall {
        let ioctl = match.ioctl
        if let reason = ioctl.refusal {
            throw PlanError.rejected(errno: 1, message: "\(ioctl.name) is not forwarded: \(reason)")   // EPERM
        }
        let call = PlannedCall(specs: specs, command: command, ioctl: ioctl, variables: variables)
        if case .pointer(let p) = ioctl.argument, p.isPlain, argument != 0 {
            // One fixed block: no walk, no frames.
            let size = p.pointee.size
            guard size <= (ioctl.maxBytes ?? limits.bytesPerCall) else {
                throw PlanError.rejected(errno: 22, message: "\(ioctl.name): \(size) bytes, over the cap")
            }
            guard isUserMemory(address: argument, length: size) else { throw PlanError.fault(address: argument, length: size) }
            let region = MemoryPlan.Region(address: argument, length: size, direction: p.direction)
            call.plan.regions = [region]
            call.buffers = [p.direction.reads && size > 0 ? try memory.read(address: argument, count: size) : [UInt8](repeating: 0, count: size)]
            call.plan.argument = .region(0)
            return call
        }
        let builder = PlanBuilder(call: call, memory: memory, limits: limits, maxBytes: ioctl.maxBytes ?? limits.bytesPerCall)
        let root = Frame(record: nil, region: -1, offset: 0, parent: nil, parameters: match.parameters)
        switch ioctl.argument {
        case .none: call.plan.argument = .none
        case .value: call.plan.argument = .value(argument)
        case .descriptor: call.plan.argument = .descriptor(Int32(truncatingIfNeeded: argument))
        case .pointer(let p):
            if argument == 0 {
                call.plan.argument = .null
            } else if let region = try builder.follow(p, address: argument, frame: root, path: "arg") {
                call.plan.argument = .region(region)
            } else {
                call.plan.argument = .null
            }
        }
        return call
    }
}

/// A plan with what the backend needs around it: the gathered bytes and the rules that size the
/// copy back once the driver has answered.
public final class PlannedCall: @unchecked Sendable {
    public internal(set) var plan: MemoryPlan
    public let ioctl: Ioctl
    /// One buffer per region: the guest's bytes for in/inout regions, zeros for out regions.
    /// After the call, put the driver's results here before asking for `copyOutLengths()`.
    public var buffers: [[UInt8]] = []
    /// The ioctl's return value, which copy-back expressions may read as `result`.
    public var result: Int64?
    /// Live fields the spec marks `refuse`: the plan says what memory they name, and the engine does not
    /// run a call that has any (EINVAL).
    public internal(set) var refusals: [String] = []
    /// Why each kept pointer (by index in `plan.pointers`) needs a lent buffer: the refusal when none is lent.
    public internal(set) var keptReasons: [Int: String] = [:]
    let specs: SpecSet
    let variables: (any PlanVariables)?
    var copyOutRules: [Int: CopyOutRule] = [:]

    struct CopyOutRule {
        var header: Int
        var elementSize: Int
        var countBefore: Int
        var countAfter: Expr
        var frame: Frame
    }

    /// Some region copies back fewer bytes than it holds, depending on what the driver answers.
    public var hasCopyOutRules: Bool { !copyOutRules.isEmpty }

    init(specs: SpecSet, command: UInt32, ioctl: Ioctl, variables: (any PlanVariables)?) {
        self.specs = specs
        self.ioctl = ioctl
        self.variables = variables
        self.plan = MemoryPlan(command: command, ioctl: ioctl.name, argument: .none)
        plan.returnsDescriptor = ioctl.returnsDescriptor
        plan.blocking = ioctl.blocking
    }

    /// Bytes to copy back into each region after the call (0 for in-only regions).
    /// Capacity arrays copy back min(count before, count after) elements.
    /// An integer of a region's bytes (after the call, the driver's answer), or nil outside them: what
    /// plug-ins read of a call.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, region: Int = 0) -> T? {
        guard buffers.indices.contains(region), offset >= 0, offset <= buffers[region].count - MemoryLayout<T>.size else { return nil }
        return buffers[region].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }

    public func copyOutLengths() -> [Int] {
        plan.regions.enumerated().map { index, region in
            guard region.direction.writes else { return 0 }
            guard let rule = copyOutRules[index] else { return region.length }
            let scope = FrameScope(frame: rule.frame, call: self, memory: nil)
            let after = (try? specs.evaluate(rule.countAfter, in: scope)) ?? Int64(rule.countBefore)
            let count = max(0, min(Int64(rule.countBefore), after))
            return min(region.length, rule.header + Int(count) * rule.elementSize)
        }
    }
}

/// Where an expression is evaluated: a struct instance inside a region, and the structs around it.
final class Frame {
    let record: Record?
    let region: Int
    let offset: Int
    let parent: Frame?
    let parameters: [String: Int64]

    init(record: Record?, region: Int, offset: Int, parent: Frame?, parameters: [String: Int64] = [:]) {
        self.record = record
        self.region = region
        self.offset = offset
        self.parent = parent
        self.parameters = parameters
    }

    /// The field a (dotted) name denotes, searching this struct, then the enclosing ones.
    func resolve(_ path: [String]) -> (frame: Frame, field: Field, offset: Int)? {
        var frame: Frame? = self
        while let f = frame {
            if let record = f.record, let (field, offset) = record.field(named: path[0]) {
                var current = field
                var at = f.offset + offset
                for component in path.dropFirst() {
                    guard case .record(let inner) = current.type, let (next, o) = inner.field(named: component) else { return nil }
                    current = next
                    at += o
                }
                return (f, current, at)
            }
            frame = f.parent
        }
        return nil
    }

    var root: Frame { parent?.root ?? self }
}

struct FrameScope: EvaluationScope {
    let frame: Frame
    let call: PlannedCall
    let memory: (any GuestMemory)?

    func value(of path: [String], at location: SourceLocation) throws -> Int64? {
        if let (_, field, offset) = frame.resolve(path) {
            guard let buffer = call.buffers[safe: frame.resolve(path)!.frame.region] else { return 0 }
            return readValue(field.type, buffer, offset)
        }
        if path.count == 1, let v = frame.root.parameters[path[0]] { return v }
        if path == ["result"] {
            guard let r = call.result else { throw EvaluationError(location, "'result' is known only after the call") }
            return r
        }
        return nil
    }

    func variable(_ name: String, arguments: [Int64], at location: SourceLocation) throws -> Int64 {
        guard let provider = call.variables else {
            throw PlanError.rejected(errno: 22, message: "\(location): $\(name) needs the class plug-in, and none is loaded")
        }
        guard let v = try provider.value(of: name, arguments: arguments) else {
            throw PlanError.rejected(errno: 22, message: "\(location): the plug-in has no value for $\(name)")
        }
        return v
    }

    func sum(of path: [String], at location: SourceLocation) throws -> Int64 {
        guard let memory, let (owner, field, offset) = frame.resolve(path),
              case .pointer(let p) = field.type, let length = p.length, case .integer(let element) = p.pointee,
              let buffer = call.buffers[safe: owner.region]
        else {
            throw EvaluationError(location, "sum() takes a pointer field to an array of integers")
        }
        let address = UInt64(bitPattern: readValue(.integer(IntegerType(size: 8, signed: false)), buffer, offset))
        let count = try call.specs.evaluate(length.count, in: FrameScope(frame: owner, call: call, memory: memory))
        guard address != 0, count > 0 else { return 0 }
        guard count <= Int64(p.maxCount ?? 4096) else {
            throw PlanError.rejected(errno: 22, message: "\(location): \(field.name) holds \(count) elements, over its cap")
        }
        let size = Int(count) * element.size
        guard isUserMemory(address: address, length: size) else { throw PlanError.fault(address: address, length: size) }
        let bytes = try memory.read(address: address, count: size)
        var total: Int64 = 0
        for i in 0..<Int(count) {
            let v = readValue(.integer(IntegerType(size: element.size, signed: false)), bytes, i * element.size)
            let (s, o) = total.addingReportingOverflow(v)
            guard !o else { throw EvaluationError(location, "sum overflows") }
            total = s
        }
        return total
    }
}

/// Little-endian read of an integer-like value (integers sign-extend when signed).
func readValue(_ type: SpecType, _ bytes: [UInt8], _ offset: Int) -> Int64 {
    let size: Int
    var signed = false
    switch type {
    case .integer(let i): size = i.size; signed = i.signed
    case .descriptor(_, let w): size = w; signed = true
    case .pointer: size = 8
    default: return 0
    }
    guard offset >= 0, offset + size <= bytes.count else { return 0 }
    var v: UInt64 = 0
    for i in 0..<size { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
    if signed && size < 8 && (v >> (UInt64(size) * 8 - 1)) & 1 == 1 { v |= ~0 << (UInt64(size) * 8) }
    return Int64(bitPattern: v)
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
