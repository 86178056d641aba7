import ParadiceSpec

/// A plan with what the backend needs around it: the guest's bytes for each region, as gathered, and the
/// rules that size the copy back once the driver has answered. A value: the engine runs the call in
/// buffers of its own, and plug-ins read the call through a `CallView`.
public struct PlannedCall: Sendable {
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
    let copyOutRules: [Int: CopyOutRule]
    let specs: SpecSet

    struct CopyOutRule: Sendable {
        var header: Int
        var elementSize: Int
        var countBefore: Int
        var countAfter: Expr
        var frame: Frame
    }

    init(plan: MemoryPlan, ioctl: Ioctl, gathered: [[UInt8]], refusals: [String] = [], keptReasons: [Int: String] = [:],
         copyOutRules: [Int: CopyOutRule] = [:], specs: SpecSet) {
        self.plan = plan
        self.ioctl = ioctl
        self.gathered = gathered
        self.refusals = refusals
        self.keptReasons = keptReasons
        self.copyOutRules = copyOutRules
        self.specs = specs
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
