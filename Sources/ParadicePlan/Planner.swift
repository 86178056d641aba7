#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec
import ParadiceSystem

/// Computes memory plans from the specs. It keeps nothing between calls, so one instance serves every
/// session; what a plan depends on besides the spec and the guest's bytes comes from the file's plug-in
/// (`variables`), which may ask the driver (V4L2's `$ctrl_is_ptr`).
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
            throw PlanError.rejected(errno: .notPermitted, message: "\(ioctl.name) is not forwarded: \(reason)")
        }
        var plan = MemoryPlan(command: command, ioctl: ioctl.name, argument: .none)
        plan.returnsDescriptor = ioctl.returnsDescriptor
        plan.blocking = ioctl.blocking
        if case .pointer(let p) = ioctl.argument, p.isPlain, argument != 0 {
            // One fixed block: no walk, no frames.
            let size = p.pointee.size
            guard size <= (ioctl.maxBytes ?? limits.bytesPerCall) else {
                throw PlanError.rejected(errno: .invalidArgument, message: "\(ioctl.name): \(size) bytes, over the cap")
            }
            guard isUserMemory(address: argument, length: size) else { throw PlanError.fault(address: argument, length: size) }
            plan.regions = [MemoryPlan.Region(address: argument, length: size, direction: p.direction)]
            plan.argument = .region(0)
            let bytes = p.direction.reads && size > 0 ? try memory.read(address: argument, count: size) : [UInt8](repeating: 0, count: size)
            return PlannedCall(plan: plan, ioctl: ioctl, gathered: [bytes], specs: specs, parameters: match.parameters, variables: variables)
        }
        let builder = PlanBuilder(plan: plan, specs: specs, ioctl: ioctl, parameters: match.parameters, memory: memory,
                                  variables: variables, limits: limits, maxBytes: ioctl.maxBytes ?? limits.bytesPerCall)
        let root = Frame(record: nil, region: -1, offset: 0, parent: nil, parameters: match.parameters)
        switch ioctl.argument {
        case .none: builder.plan.argument = .none
        case .value: builder.plan.argument = .value(argument)
        case .descriptor: builder.plan.argument = .descriptor(Int32(truncatingIfNeeded: argument))
        case .pointer(let p):
            if argument == 0 {
                builder.plan.argument = .null
            } else if let region = try builder.follow(p, address: argument, frame: root, path: "arg") {
                builder.plan.argument = .region(region)
            } else {
                builder.plan.argument = .null
            }
        }
        return builder.planned
    }
}
