import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// Plans one spec'd ioctl against arbitrary guest bytes, as the backend does with what a guest sends, and
/// checks what the engine relies on afterwards without looking again: every region, slot and buffer
/// within bounds and caps, copy-back lengths within their regions.
///
/// An input is a 16-byte header, then guest memory:
///
///     0-1   which ioctl (little-endian, modulo the number of spec'd ioctls of every class), or with a raw
///           command, which class (modulo the number of classes)
///     2     flags (`Flags`)
///     3     the plug-in variables' seed
///     4-7   family parameters (each takes its value from these bits), or the whole command number
///     8-15  the argument: an offset into the flat memory (low 16 bits), or the raw value
///     16…   guest memory: flat at `flatBase`, or pd_region records as PD_IOCTL carries them
///
/// Reads outside what the input holds give zeros and are answered in a next round (as PD_NEED makes the
/// frontend send them), with bytes taken from the input again.
public final class PlannerFuzzer: Sendable {
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Bytes 4-7 are the command number, matched against the chosen class's ioctls.
        public static let rawCommand = Flags(rawValue: 1 << 0)
        /// Memory is pd_region records, not one flat block.
        public static let regions = Flags(rawValue: 1 << 1)
        /// A plug-in answers the spec's `$name` variables (with values from the input).
        public static let variables = Flags(rawValue: 1 << 2)
        /// The driver fails the call (result -1).
        public static let driverFails = Flags(rawValue: 1 << 3)
        /// Bytes 8-15 are the argument itself.
        public static let rawArgument = Flags(rawValue: 1 << 4)
    }

    public static let headerSize = 16
    public static let flatBase: UInt64 = 0x10000
    /// Rounds of "planning asked for more memory": the engine's PD_NEED rounds.
    static let rounds = 4

    public let planner: Planner
    /// Every ioctl of every class, in spec order.
    public let ioctls: [(specClass: SpecClass, ioctl: Ioctl)]
    public let classes: [SpecClass]

    public init(specs: SpecSet) {
        planner = Planner(specs: specs)
        classes = specs.classes
        ioctls = specs.classes.flatMap { c in c.ioctls.map { (c, $0) } }
    }

    public enum Outcome: Equatable, Sendable {
        case tooShort
        case noCommand
        case refused(errno: Errno)
        case planned(regions: Int)
    }

    /// Plans the input's ioctl; traps when a plan breaks what the engine relies on.
    @discardableResult
    public func run(_ input: [UInt8]) -> Outcome {
        guard input.count >= Self.headerSize, !ioctls.isEmpty else { return .tooShort }
        let selector = Int(input[0]) | Int(input[1]) << 8
        let flags = Flags(rawValue: input[2])
        let seed = input[3]
        let word = UInt32(input[4]) | UInt32(input[5]) << 8 | UInt32(input[6]) << 16 | UInt32(input[7]) << 24
        let value = (8..<16).reduce(UInt64(0)) { $0 | UInt64(input[$1]) << (8 * UInt64($1 - 8)) }
        let body = Array(input[Self.headerSize...])
        let (chosenClass, ioctl) = ioctls[selector % ioctls.count]

        var specClass = chosenClass
        let command: UInt32
        if flags.contains(.rawCommand) {
            specClass = classes[selector % classes.count]
            command = word
        } else if ioctl.isFamily {
            var parameters: [String: Int64] = [:]
            for (i, p) in ioctl.parameters.enumerated() {
                let bits = Int64(word >> UInt32(8 * (i % 4)))
                let range = p.range ?? 0...Int64(IoctlNumber.sizeMask)
                let span = range.upperBound - range.lowerBound + 1
                parameters[p.name] = span > 0 ? range.lowerBound + bits % span : range.lowerBound
            }
            guard let c = try? ioctl.command(in: planner.specs, parameters: parameters) else { return .noCommand }
            command = c
        } else {
            guard let c = try? ioctl.command(in: planner.specs, parameters: [:]) else { return .noCommand }
            command = c
        }
        let argument = flags.contains(.rawArgument) ? value : Self.flatBase + (value & 0xffff)
        let memory = FuzzMemory(flags.contains(.regions) ? Self.parseRegions(body) : [(Self.flatBase, body)])
        let variables: (any PlanVariables)? = flags.contains(.variables) ? FuzzVariables(seed: seed, bytes: body) : nil

        var call: PlannedCall?
        for round in 0..<Self.rounds {
            do {
                call = try planner.plan(command: command, argument: argument, specClass: specClass, memory: memory, variables: variables)
            } catch let error as PlanError {
                call = nil
                if memory.missing.isEmpty || round == Self.rounds - 1 { return .refused(errno: error.errno) }
            } catch {
                preconditionFailure("planning \(specClass.name) 0x\(String(command, radix: 16)) threw \(error), not a PlanError: the guest would see no errno of its own")
            }
            if memory.missing.isEmpty { break }
            memory.answerMissing(from: body)
        }
        guard let call else { return .refused(errno: .badAddress) }
        check(call, ioctl: call.ioctl)
        answer(call, flags: flags, seed: seed, variables: variables, from: body)
        return .planned(regions: call.plan.regions.count)
    }

    /// What IoctlForwarding indexes and writes without checking.
    private func check(_ call: PlannedCall, ioctl: Ioctl) {
        let plan = call.plan
        let limits = planner.limits
        precondition(plan.regions.count <= limits.regionsPerCall, "\(ioctl.name): \(plan.regions.count) regions")
        precondition(call.gathered.count == plan.regions.count, "\(ioctl.name): \(call.gathered.count) buffers for \(plan.regions.count) regions")
        var total = 0
        for (i, region) in plan.regions.enumerated() {
            precondition(region.length >= 0 && call.gathered[i].count == region.length,
                         "\(ioctl.name): region \(i) holds \(region.length) bytes, its buffer \(call.gathered[i].count)")
            let (end, overflow) = region.address.addingReportingOverflow(UInt64(region.length))
            precondition(region.length == 0 || (!overflow && end <= 0x0000_8000_0000_0000),
                         "\(ioctl.name): region \(i) at 0x\(String(region.address, radix: 16)) + \(region.length) leaves user space")
            total += region.length
        }
        let cap = ioctl.maxBytes ?? limits.bytesPerCall
        precondition(total <= cap, "\(ioctl.name): \(total) bytes, over the cap of \(cap)")
        for slot in plan.pointers {
            precondition(plan.regions.indices.contains(slot.region) && plan.regions.indices.contains(slot.target),
                         "\(ioctl.name): a pointer slot names region \(slot.region) → \(slot.target)")
            precondition(slot.offset >= 0 && slot.offset + 8 <= plan.regions[slot.region].length,
                         "\(ioctl.name): a pointer slot at \(slot.offset) of a \(plan.regions[slot.region].length)-byte region")
        }
        for slot in plan.descriptors {
            precondition(plan.regions.indices.contains(slot.region), "\(ioctl.name): a descriptor slot names region \(slot.region)")
            precondition(slot.width == 4 || slot.width == 8, "\(ioctl.name): a descriptor of \(slot.width) bytes")
            precondition(slot.offset >= 0 && slot.offset + slot.width <= plan.regions[slot.region].length,
                         "\(ioctl.name): a descriptor slot at \(slot.offset) of a \(plan.regions[slot.region].length)-byte region")
        }
        if case .region(let i) = plan.argument {
            precondition(plan.regions.indices.contains(i), "\(ioctl.name): the argument is region \(i) of \(plan.regions.count)")
        }
    }

    /// The driver's side: fills what it may write with input bytes, then sizes the copy back.
    private func answer(_ call: PlannedCall, flags: Flags, seed: UInt8, variables: (any PlanVariables)?, from body: [UInt8]) {
        var next = Int(seed)
        var answer = call.gathered
        for (i, region) in call.plan.regions.enumerated() where region.direction.writes {
            guard !body.isEmpty else { break }
            for j in 0..<min(answer[i].count, 4096) {
                answer[i][j] = body[next % body.count]
                next &+= 1
            }
        }
        let result: Int64 = flags.contains(.driverFails) ? -1 : Int64(seed)
        let lengths = call.copyOutLengths(answer: answer, result: result, variables: variables)
        precondition(lengths.count == call.plan.regions.count, "\(call.ioctl.name): \(lengths.count) copy-back lengths")
        for (i, length) in lengths.enumerated() {
            let region = call.plan.regions[i]
            precondition(length >= 0 && length <= region.length,
                         "\(call.ioctl.name): copies back \(length) bytes of a \(region.length)-byte region")
            precondition(region.direction.writes || length == 0, "\(call.ioctl.name): copies back into an in-only region")
        }
        // What the file remembers from the answer (spec `remember`): only states its class declares.
        let states = call.ioctl.specClass?.states.count ?? 0
        for change in call.stateChanges(answer: answer, result: result) {
            precondition(change.index >= 0 && change.index < states, "\(call.ioctl.name): remembers state \(change.index) of \(states)")
        }
        let view = CallView(call, bytes: answer)
        for offset in [-1, 0, 4, Int.max - 2] { _ = view.load(UInt32.self, at: offset) }
    }

    /// pd_region records (address, length, reserved, bytes, padding to 8) as long as the input holds them.
    static func parseRegions(_ body: [UInt8]) -> [(UInt64, [UInt8])] {
        var out: [(UInt64, [UInt8])] = []
        var at = 0
        while body.count - at >= 16 {
            let address = (0..<8).reduce(UInt64(0)) { $0 | UInt64(body[at + $1]) << (8 * UInt64($1)) }
            let length = (0..<4).reduce(0) { $0 | Int(body[at + 8 + $1]) << (8 * $1) }
            at += 16
            let n = min(length, body.count - at)
            out.append((address, Array(body[at..<(at + n)])))
            at = min(body.count, (at + n + 7) / 8 * 8)
        }
        return out
    }
}

/// The guest bytes of one call, as the backend holds them: what was sent, zeros elsewhere (noted, for the
/// next round). A read the planner makes must fit the call's caps: a larger one is a planner bug.
final class FuzzMemory: GuestMemory {
    private(set) var regions: [(address: UInt64, bytes: [UInt8])]
    private(set) var missing: [(address: UInt64, length: Int)] = []

    init(_ regions: [(UInt64, [UInt8])]) { self.regions = regions.map { (address: $0.0, bytes: $0.1) } }

    func read(address: UInt64, count: Int) throws -> [UInt8] {
        precondition(count >= 0, "the planner read \(count) bytes")
        precondition(count <= PlanLimits().bytesPerCall, "the planner read \(count) bytes, over any call's cap")
        // The engine's memories (a frame's regions, process_vm_readv) take the range as given.
        let (end, overflow) = address.addingReportingOverflow(UInt64(count))
        precondition(count == 0 || (!overflow && end <= 0x0000_8000_0000_0000),
                     "the planner read \(count) bytes at 0x\(String(address, radix: 16)), outside user space")
        for r in regions where address >= r.address && address - r.address <= UInt64(r.bytes.count)
            && UInt64(count) <= UInt64(r.bytes.count) - (address - r.address) {
            let start = Int(address - r.address)
            return Array(r.bytes[start..<(start + count)])
        }
        if !missing.contains(where: { $0.address == address && $0.length >= count }) { missing.append((address, count)) }
        return [UInt8](repeating: 0, count: count)
    }

    /// The frontend answers a PD_NEED: every asked region, its first bytes from the input, then zeros.
    func answerMissing(from body: [UInt8]) {
        var next = 0
        for m in missing {
            var bytes = [UInt8](repeating: 0, count: m.length)
            if !body.isEmpty {
                for j in 0..<min(m.length, 4096) {
                    bytes[j] = body[next % body.count]
                    next &+= 1
                }
            }
            regions.append((m.address, bytes))
        }
        missing = []
    }
}

/// A plug-in that knows every name: the values come from the input.
struct FuzzVariables: PlanVariables {
    let seed: UInt8
    let bytes: [UInt8]

    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        if seed & 0x80 != 0 && name.utf8.count % 2 == 1 { return nil }
        if seed & 0x40 != 0 { throw PlanError.rejected(errno: .fileDescriptorInBadState, message: "$\(name): not now") }
        guard bytes.count >= 8 else { return Int64(seed) }
        var at = (Int(seed) &+ name.utf8.count &+ arguments.count) % (bytes.count - 7)
        if let a = arguments.first { at = (at &+ Int(truncatingIfNeeded: a & 0xff)) % (bytes.count - 7) }
        let v = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
        // Mostly small values, as real plug-ins give; sometimes anything.
        return seed & 0x20 != 0 ? Int64(bitPattern: v) : Int64(v & 0xffff)
    }
}
