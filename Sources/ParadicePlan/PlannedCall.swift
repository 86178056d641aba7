import ParadiceSpec

/// A plan with what the backend needs around it: the guest's bytes for each region, as gathered, and the
/// rules that size the copy back once the driver has answered. Immutable: the engine runs the call in
/// buffers of its own, and plug-ins read the call through a `CallView`. A class, so that handing it on
/// (to the call's thread, into each `CallView`) is one reference, not a copy of every field per hand-off.
public final class PlannedCall: Sendable {
    public let plan: MemoryPlan
    public let ioctl: Ioctl
    /// One buffer per region: the guest's bytes for in/inout regions (and for out regions whose copy back
    /// may be shorter, `preserve`), zeros for the other out regions.
    public let gathered: [[UInt8]]
    /// Live fields the spec marks `refuse`: the plan says what memory they name, and the engine does not
    /// run a call that has any (EINVAL).
    public let refusals: [String]
    /// Why each kept pointer (by index in `plan.pointers`) needs a lent buffer: the refusal when none is lent.
    public let keptReasons: [Int: String]
    /// Device mmap ranges of the file whose guest mirror must reach the device before the call (spec
    /// `sync in`, `sync inout`).
    public let syncToDevice: [Range<UInt64>]
    let copyOutRules: [Int: CopyOutRule]
    let specs: SpecSet
    /// The ioctl family's parameters, which `sync` conditions may read.
    let parameters: [String: Int64]

    struct CopyOutRule: Sendable {
        var header: Int
        var elementSize: Int
        var countBefore: Int
        var countAfter: Expr
        var frame: Frame
    }

    init(plan: MemoryPlan, ioctl: Ioctl, gathered: [[UInt8]], refusals: [String] = [], keptReasons: [Int: String] = [:],
         copyOutRules: [Int: CopyOutRule] = [:], specs: SpecSet, parameters: [String: Int64], variables: (any PlanVariables)?) {
        self.plan = plan
        self.ioctl = ioctl
        self.gathered = gathered
        self.refusals = refusals
        self.keptReasons = keptReasons
        self.copyOutRules = copyOutRules
        self.specs = specs
        self.parameters = parameters
        syncToDevice = Self.syncs(of: ioctl, specs: specs, parameters: parameters, result: nil, variables: variables)
    }

    /// Device mmap ranges of the file whose contents the guest's mirror must get after the call (spec
    /// `sync out`, `sync inout`), given its result (-1 for a failed call).
    public func syncToGuest(result: Int64, variables: (any PlanVariables)?) -> [Range<UInt64>] {
        Self.syncs(of: ioctl, specs: specs, parameters: parameters, result: result, variables: variables)
    }

    /// The `sync` ranges before the call (`result` nil: those the driver reads) or after it (those it
    /// writes) whose condition holds. A condition that cannot be evaluated (no plug-in for its variable)
    /// does not hold: without its plug-in a class syncs nothing it names.
    private static func syncs(of ioctl: Ioctl, specs: SpecSet, parameters: [String: Int64], result: Int64?,
                              variables: (any PlanVariables)?) -> [Range<UInt64>] {
        guard !ioctl.syncs.isEmpty else { return [] }
        return ioctl.syncs.compactMap { sync in
            guard result == nil ? sync.direction.reads : sync.direction.writes else { return nil }
            guard let condition = sync.condition else { return sync.range }
            let root = Frame(record: nil, region: -1, offset: 0, parent: nil, parameters: parameters)
            let scope = FrameScope(frame: root, specs: specs, buffers: [], result: result, variables: variables, memory: nil)
            return (try? specs.evaluate(condition, in: scope)).map { $0 != 0 } == true ? sync.range : nil
        }
    }

    /// What the open file's states become after the call (spec `remember`, `forget`), by index into the
    /// class's `states`: a value, or nil for unset. A failed call unsets what it would remember and forgets
    /// nothing; a value that cannot be evaluated, or whose condition does not hold, is unset.
    public func stateChanges(answer: [[UInt8]], result: Int64) -> [(index: Int, value: Int64?)] {
        guard !ioctl.remembers.isEmpty || !ioctl.forgets.isEmpty else { return [] }
        guard result >= 0 else { return ioctl.remembers.map { ($0.index, nil) } }
        var record: Record?
        if case .pointer(let p) = ioctl.argument, case .record(let r) = p.pointee { record = r }
        let root = Frame(record: record, region: 0, offset: 0, parent: nil, parameters: parameters)
        let scope = FrameScope(frame: root, specs: specs, buffers: answer, result: result, variables: nil, memory: nil)
        let forgotten: [(index: Int, value: Int64?)] = ioctl.forgets.map { ($0, nil) }
        return forgotten + ioctl.remembers.map { change in
            if let condition = change.condition, (try? specs.evaluate(condition, in: scope)).map({ $0 != 0 }) != true {
                return (change.index, nil)
            }
            return (change.index, try? specs.evaluate(change.value, in: scope))
        }
    }

    /// Some region copies back fewer bytes than it holds, depending on what the driver answers.
    public var hasCopyOutRules: Bool { !copyOutRules.isEmpty }

    /// The call as the driver is given it: the guest's bytes.
    public var before: CallView { CallView(self, bytes: gathered) }

    /// Bytes to copy back into each region after the call (0 for in-only regions), from the driver's answer
    /// (one buffer per region) and its result, which copy-back expressions read as `result` (nil: not known).
    /// Capacity arrays copy back min(count before, count after) elements. `variables` are the file's plug-in
    /// values (ALSA's `result * $frame_bytes`).
    public func copyOutLengths(answer: [[UInt8]], result: Int64?, variables: (any PlanVariables)? = nil) -> [Int] {
        plan.regions.enumerated().map { index, region in
            guard region.direction.writes else { return 0 }
            guard let rule = copyOutRules[index] else { return region.length }
            let scope = FrameScope(frame: rule.frame, specs: specs, buffers: answer, result: result, variables: variables, memory: nil)
            let after = (try? specs.evaluate(rule.countAfter, in: scope)) ?? Int64(rule.countBefore)
            let count = max(0, min(Int64(rule.countBefore), after))
            return min(region.length, rule.header + Int(count) * rule.elementSize)
        }
    }
}
