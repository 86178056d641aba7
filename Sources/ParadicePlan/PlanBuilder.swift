#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec
import ParadiceSystem

/// Whether `length` bytes at `address` lie in a process's user space (x86-64, aarch64: below 2^47): a
/// guest address past it is EFAULT, as a local driver's copy_from_user would answer.
func isUserMemory(address: UInt64, length: Int) -> Bool {
    guard length > 0 else { return true }
    let (end, overflow) = address.addingReportingOverflow(UInt64(length))
    return !overflow && end <= 0x0000_8000_0000_0000
}

/// Walks an argument through its spec types, adding a region for every pointer it follows.
/// What it finds (regions, their gathered bytes, slots, refusals, copy-back rules) it keeps until the walk
/// ends in a `PlannedCall`.
final class PlanBuilder<Memory: GuestMemory> {
    let specs: SpecSet
    let ioctl: Ioctl
    let parameters: [String: Int64]
    let memory: Memory
    let variables: (any PlanVariables)?
    let limits: PlanLimits
    let maxBytes: Int
    var plan: MemoryPlan
    /// One per region of `plan`: the guest's bytes, or zeros where the driver only writes.
    private var buffers: [[UInt8]] = []
    private var refusals: [String] = []
    private var keptReasons: [Int: String] = [:]
    private var copyOutRules: [Int: PlannedCall.CopyOutRule] = [:]
    private var totalBytes = 0
    /// Set while visiting a field the spec marks `kept`: the pointer found there is a kept one.
    private var keptReason: String?

    init(plan: MemoryPlan, specs: SpecSet, ioctl: Ioctl, parameters: [String: Int64], memory: Memory,
         variables: (any PlanVariables)?, limits: PlanLimits, maxBytes: Int) {
        self.plan = plan
        self.parameters = parameters
        self.specs = specs
        self.ioctl = ioctl
        self.memory = memory
        self.variables = variables
        self.limits = limits
        self.maxBytes = maxBytes
    }

    var planned: PlannedCall {
        PlannedCall(plan: plan, ioctl: ioctl, gathered: buffers, refusals: refusals, keptReasons: keptReasons,
                    copyOutRules: copyOutRules, specs: specs, parameters: parameters, variables: variables)
    }

    private func reject(_ message: String) -> PlanError { .rejected(errno: .invalidArgument, message: message) }

    private func evaluate(_ expr: Expr, _ frame: Frame) throws -> Int64 {
        do {
            let scope = FrameScope(frame: frame, specs: specs, buffers: buffers, result: nil, variables: variables, memory: memory)
            return try specs.evaluate(expr, in: scope)
        } catch let e as EvaluationError {
            throw PlanError.rejected(errno: e.errno.map { Errno($0) } ?? .invalidArgument, message: e.description)
        }
    }

    private func addRegion(address: UInt64, length: Int, direction: Direction, preserve: Bool = false, path: String) throws -> Int {
        guard plan.regions.count < limits.regionsPerCall else {
            throw reject("\(ioctl.name): more than \(limits.regionsPerCall) regions at \(path)")
        }
        guard isUserMemory(address: address, length: length) else { throw PlanError.fault(address: address, length: length) }
        totalBytes += length
        guard totalBytes <= maxBytes else {
            throw reject("\(ioctl.name): \(path) brings the call to \(totalBytes) bytes, over its cap of \(maxBytes)")
        }
        let region = MemoryPlan.Region(address: address, length: length, direction: direction, preserve: preserve && !direction.reads)
        let bytes = region.gathered && length > 0
            ? try memory.read(address: address, count: length)
            : [UInt8](repeating: 0, count: length)
        plan.regions.append(region)
        buffers.append(bytes)
        return plan.regions.count - 1
    }

    /// Follows a pointer value. Returns the new region, or nil for NULL.
    func follow(_ p: PointerType, address: UInt64, frame: Frame, path: String) throws -> Int? {
        guard address != 0 else { return nil }
        let elementSize = p.pointee.size
        var count = 1
        if let length = p.length {
            let n = try evaluate(length.count, frame)
            // A byte cap alone bounds the count too: maxbytes 32K of u8 allows 32768 elements.
            let cap = p.maxCount ?? p.maxBytes.map { $0 / max(1, elementSize) } ?? limits.elementsPerPointer
            guard n >= 0 else { throw reject("\(path): negative element count \(n)") }
            guard n <= Int64(cap) else { throw reject("\(path): \(n) elements, over the cap of \(cap)") }
            count = Int(n)
        }
        if case .record(let r) = p.pointee {
            var depth = 0
            var f: Frame? = frame
            while let current = f { if current.record === r { depth += 1 }; f = current.parent }
            let cap = p.maxCount ?? limits.listNodes
            if depth >= cap { throw reject("\(path): a list of \(r.displayName) longer than \(cap) nodes") }
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
        let byteCap = p.maxBytes ?? limits.bytesPerPointer
        guard !overflow, bytes <= byteCap else { throw reject("\(path): \(count) × \(elementSize) bytes, over the cap of \(byteCap)") }

        let region: Int
        if p.length == nil, case .record(let r) = p.pointee, let flex = r.flexibleField {
            region = try addFlexible(r, flex, address: address, direction: p.direction, frame: frame, path: path)
        } else {
            region = try addRegion(address: address, length: bytes, direction: p.direction,
                                   preserve: p.length?.copyOut != nil, path: path)
            if p.direction.writes, let length = p.length, let after = length.copyOut {
                copyOutRules[region] = PlannedCall.CopyOutRule(header: 0, elementSize: elementSize, countBefore: count,
                                                                     countAfter: after, frame: frame)
            }
            if p.pointee.needsVisit && p.direction.reads || p.pointee.containsReferences {
                for i in 0..<count { try visit(p.pointee, region: region, offset: i * elementSize, frame: frame, path: "\(path)[\(i)]") }
            }
        }
        return region
    }

    /// A struct ending in a flexible array: read the fixed part, size the tail from it, extend.
    private func addFlexible(_ r: Record, _ flex: Field, address: UInt64, direction: Direction, frame: Frame, path: String) throws -> Int {
        let header = try addRegion(address: address, length: r.size, direction: direction, path: path)
        let recordFrame = Frame(record: r, region: header, offset: 0, parent: frame)
        let length = flex.flexible!
        let n = try direction.reads ? evaluate(length.count, recordFrame) : 0
        let cap = flex.maxCount ?? limits.elementsPerPointer
        guard n >= 0 else { throw reject("\(path).\(flex.name): negative element count \(n)") }
        guard n <= Int64(cap) else { throw reject("\(path).\(flex.name): \(n) elements, over the cap of \(cap)") }
        let total = max(r.size, flex.offset + Int(n) * flex.type.size)
        guard total <= limits.bytesPerPointer else { throw reject("\(path): \(total) bytes, over the cap of \(limits.bytesPerPointer)") }
        if total > r.size {
            guard isUserMemory(address: address, length: total) else { throw PlanError.fault(address: address, length: total) }
            totalBytes += total - r.size
            guard totalBytes <= maxBytes else { throw reject("\(ioctl.name): \(path) brings the call over its cap of \(maxBytes) bytes") }
            let more = direction.reads
                ? try memory.read(address: address + UInt64(r.size), count: total - r.size)
                : [UInt8](repeating: 0, count: total - r.size)
            buffers[header] += more
            plan.regions[header].length = total
        }
        if direction.writes, let after = length.copyOut {
            copyOutRules[header] = PlannedCall.CopyOutRule(header: flex.offset, elementSize: flex.type.size, countBefore: Int(n),
                                                                 countAfter: after, frame: recordFrame)
        }
        try visitFields(r, frame: recordFrame, path: path, flexibleCount: Int(n))
        return header
    }

    func visit(_ type: SpecType, region: Int, offset: Int, frame: Frame, path: String) throws {
        switch type {
        case .integer, .string:
            return
        case .array(let element, let n):
            guard element.needsVisit else { return }
            for i in 0..<n { try visit(element, region: region, offset: offset + i * element.size, frame: frame, path: "\(path)[\(i)]") }
        case .pointer(let p):
            let slot = plan.regions[region]
            guard slot.direction.reads else { return }   // a pointer only the driver writes is not followed
            let address = UInt64(bitPattern: readValue(type, buffers[region], offset))
            let kept = keptReason
            keptReason = nil   // not the pointers inside what this one points at
            if let target = try follow(p, address: address, frame: frame, path: path) {
                if let reason = kept { keptReasons[plan.pointers.count] = "\(path): \(reason)" }
                plan.pointers.append(MemoryPlan.PointerSlot(region: region, offset: offset, target: target, kept: kept != nil))
            }
        case .descriptor(let direction, let width):
            plan.descriptors.append(MemoryPlan.DescriptorSlot(region: region, offset: offset, width: width, direction: direction))
        case .record(let r):
            guard r.needsVisit else { return }
            let inner = Frame(record: r, region: region, offset: offset, parent: frame)
            try visitFields(r, frame: inner, path: path, flexibleCount: 0)
        }
    }

    private func visitFields(_ r: Record, frame: Frame, path: String, flexibleCount: Int) throws {
        let reads = plan.regions[frame.region].direction.reads
        if r.isUnion {
            // Only the live member of a discriminated union is looked into; a plain union is bytes.
            guard r.isDiscriminated, reads else { return }
            for f in r.fields {
                guard let condition = f.when else { continue }
                if try evaluate(condition, frame) != 0 {
                    if let reason = f.refusal { refusals.append("\(path).\(f.name): \(reason)") }
                    keptReason = f.kept
                    defer { keptReason = nil }
                    try visit(f.type, region: frame.region, offset: frame.offset + f.offset, frame: frame, path: "\(path).\(f.name)")
                    return
                }
            }
            return
        }
        for f in r.fields {
            let at = frame.offset + f.offset
            let fieldPath = f.isAnonymous ? path : "\(path).\(f.name)"
            if let condition = f.when, try evaluate(condition, frame) == 0 { continue }
            if let reason = f.refusal, reads { refusals.append("\(fieldPath): \(reason)") }
            if let check = f.check, reads {
                let value = readValue(f.type, buffers[frame.region], at)
                guard check.accepts(value) else {
                    throw reject("\(fieldPath) = \(value) is not \(check.isFlags ? "within the flags of" : "a member of") \(check.name)")
                }
            }
            if f.flexible != nil {
                guard f.type.needsVisit || f.type.containsReferences else { continue }
                for i in 0..<flexibleCount {
                    try visit(f.type, region: frame.region, offset: at + i * f.type.size, frame: frame, path: "\(fieldPath)[\(i)]")
                }
                continue
            }
            keptReason = f.kept
            defer { keptReason = nil }
            try visit(f.type, region: frame.region, offset: at, frame: frame, path: fieldPath)
        }
    }
}
