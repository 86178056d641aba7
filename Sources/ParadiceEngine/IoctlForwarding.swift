#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadicePlan
import ParadiceSpec
import ParadiceSystem
import ParadiceWire

/// Guest bytes the frontend sent with an ioctl. Whatever else planning reads is noted, and read as
/// zeros, so that one round trip asks for every region of the next level at once.
final class CollectingMemory: GuestMemory {
    let regions: [(address: UInt64, bytes: ArraySlice<UInt8>)]
    private(set) var missing: [(address: UInt64, length: Int)] = []

    init(_ regions: [(address: UInt64, bytes: ArraySlice<UInt8>)]) { self.regions = regions }

    func read(address: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw PlanError.fault(address: address, length: count) }
        // Compared without a sum: guest addresses near 2^64 would overflow one (and trap).
        for r in regions where address >= r.address && address - r.address <= UInt64(r.bytes.count)
            && UInt64(count) <= UInt64(r.bytes.count) - (address - r.address) {
            let start = r.bytes.startIndex + Int(address - r.address)
            return Array(r.bytes[start..<(start + count)])
        }
        if !missing.contains(where: { $0.address == address && $0.length >= count }) { missing.append((address, count)) }
        return [UInt8](repeating: 0, count: count)
    }
}

extension Session {
    /// PD_IOCTL: plan from the spec, ask for missing guest memory, rebuild the argument, call the driver,
    /// return only the declared out-regions.
    func ioctl(_ frame: Frame) throws {
        let request = try IoctlRequest(frame, maxRegions: 4 * backend.planner.limits.regionsPerCall)
        let gathered = request.gathered, named = request.named   // sent, and named out only
        let mirrored = request.mirrored ?? []
        guard let file = file(frame.handle) else { return fail(frame.request, .badFileDescriptor) }
        guard let specClass = file.specClass else {
            logger.notice("ioctl on a file no spec class serves", metadata: ["path": "\(file.path)", "command": "\(hex(request.command))"])
            return fail(frame.request, .inappropriateIOCTLForDevice)
        }
        // By the spec's name; one no spec names fails below as it would without a policy (ENOTTY). The name
        // is looked up only under a policy: without one the call's path stays as it was.
        if backend.policy != nil, let name = backend.specs.match(command: request.command, in: specClass)?.ioctl.name,
           let refused = refusal("ioctl", path: file.path, writes: false, ioctl: name) {
            return fail(frame.request, refused)
        }
        let memory = CollectingMemory(gathered)
        let call: PlannedCall
        do {
            call = try backend.planner.plan(command: request.command, argument: request.argument, specClass: specClass,
                                            memory: memory, variables: file.variables)
        } catch let error as PlanError {
            if !memory.missing.isEmpty { return need(frame.request, memory.missing, slots: [], argumentFD: false) }
            switch error {
            case .unknownCommand:
                logger.notice("unknown ioctl", metadata: ["class": "\(specClass.name)", "command": "\(hex(request.command))"])
            default:
                logger.notice("ioctl refused", metadata: ["class": "\(specClass.name)", "command": "\(hex(request.command))", "reason": "\(error)"])
            }
            return fail(frame.request, error.errno)
        }
        if !memory.missing.isEmpty { return need(frame.request, memory.missing, slots: [], argumentFD: false) }
        if let reason = call.refusals.first {
            logger.notice("ioctl refused", metadata: ["class": "\(specClass.name)", "command": "\(hex(request.command))", "reason": "\(reason)"])
            return fail(frame.request, .invalidArgument)
        }

        // The frontend writes back only regions its request carried (docs/protocol.md, "Trust"): one the call
        // may write that it neither sent nor named, it is asked to name.
        let unnamed = call.plan.regions.filter { region in
            region.direction.writes && region.length > 0 && !covered(region.address, region.length, gathered, named)
        }
        if !unnamed.isEmpty {
            return need(frame.request, [], slots: [], argumentFD: false, out: unnamed.map { ($0.address, $0.length) })
        }

        // What the device must see of the guest's mirrors before this call, as the spec or the plug-in says.
        let pulls = mappingRanges(of: file, call.syncToDevice + (file.state?.mappedToDevice(before: call.before) ?? []))
        // A frontend that answers with its mirrors sends only what changed since the device last had it.
        if !pulls.isEmpty && request.mirrored == nil {
            return need(frame.request, gathered.map { ($0.address, $0.bytes.count) }, slots: [], argumentFD: false,
                        mappings: pulls.map { pd_mapping_range(mapping: $0.id, length: UInt32($0.length), offset: UInt64($0.offset)) })
        }

        let inSlots = call.plan.descriptors.filter { $0.direction.reads }
        var argumentFD = false
        if case .descriptor = call.plan.argument { argumentFD = true }
        var slots: [pd_slot] {
            inSlots.map { pd_slot(address: call.plan.regions[$0.region].address + UInt64($0.offset), width: UInt32($0.width), direction: 1) }
        }
        // Descriptors the frontend translated ahead count only when they are exactly the plan's: a guess from an
        // earlier call that missed one (or translated a field that holds no descriptor this time) is asked again.
        let ahead = request.slotsAhead.map {
            $0 == IoctlRequest.SlotsAhead(slots: slots.map { ($0.address, Int($0.width)) }, argument: argumentFD)
        }
        if ahead == false || ((!inSlots.isEmpty || argumentFD) && !request.translated && ahead != true) {
            // The frontend rewrites its descriptor numbers as handles (its own numbers again, for a guess), then sends again.
            return need(frame.request, gathered.map { ($0.address, $0.bytes.count) }, slots: slots, argumentFD: argumentFD)
        }
        // A device object of another guest's is, for this one, an object that does not exist.
        if let refused = file.state?.refusal(before: call.before) {
            logger.notice("ioctl refused: an object this guest may not reach", metadata: ["ioctl": "\(call.plan.ioctl)", "errno": "\(refused.rawValue)"])
            return fail(frame.request, refused)
        }
        if let answer = file.state?.answer(instead: call.before) {
            logger.debug("ioctl answered by the plug-in", metadata: ["ioctl": "\(call.plan.ioctl)", "answer": "\(answer)"])
            return send(Reply.ioctl(frame.request, answer, flags: 0, written: WrittenRegions(), slots: [], mirrors: []))
        }
        let id = frame.request, handle = frame.handle
        if call.plan.blocking {
            offload(id) { [self, mirrored] window in run(call, mirrored: mirrored, on: file, handle: handle, request: id, window: window) }
        } else {
            // On this thread, with no closure to allocate and fill.
            run(call, mirrored: mirrored, on: file, handle: handle, request: id, window: .inline)
        }
    }

    /// The call once it may go: the mirrors' bytes into the device's mappings, the driver call and its reply.
    private func run(_ call: PlannedCall, mirrored: [MirrorBytes], on file: OpenFile, handle: UInt32, request: UInt32, window: DriverWindow) {
        for m in mirrored {
            // Only inside a mapping this guest holds on this file.
            guard let target = lock.withLock({ mappings[m.mapping] }), target.file === file,
                  m.bytes.count <= target.length, m.offset <= UInt64(target.length - m.bytes.count) else { continue }
            m.bytes.withUnsafeBytes { (target.address + Int(m.offset)).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        execute(call, on: file, request: request, window: window)
        watcher.rearm(handle)
    }

    /// Whether [address, address + length) lies inside the union of the regions sent and named, read in
    /// place (no joined list per call).
    private func covered(_ address: UInt64, _ length: Int, _ sent: [(address: UInt64, bytes: ArraySlice<UInt8>)],
                         _ named: [(address: UInt64, length: Int)]) -> Bool {
        func span(holding at: UInt64) -> (address: UInt64, length: Int)? {
            if let s = sent.first(where: { at >= $0.address && at - $0.address < UInt64($0.bytes.count) }) { return (s.address, s.bytes.count) }
            return named.first(where: { at >= $0.address && at - $0.address < UInt64($0.length) })
        }
        var at = address
        let (end, wraps) = address.addingReportingOverflow(UInt64(length))
        if wraps { return false }
        while at < end {
            guard let span = span(holding: at) else { return false }
            let (next, top) = span.address.addingReportingOverflow(UInt64(span.length))
            if top { return true }
            at = next
        }
        return true
    }

    private func need(_ request: UInt32, _ regions: [(address: UInt64, length: Int)], slots: [pd_slot], argumentFD: Bool,
                      mappings: [pd_mapping_range] = [], out: [(address: UInt64, length: Int)] = []) {
        send(Reply.need(request, regions: regions, outOnly: out, slots: slots, argumentFD: argumentFD, mappings: mappings))
    }

    private func execute(_ call: PlannedCall, on file: OpenFile, request: UInt32, window: DriverWindow) {
        let plan = call.plan
        if plan.regions.count <= 1 && plan.pointers.isEmpty && plan.descriptors.isEmpty && !call.hasCopyOutRules
            && !plan.returnsDescriptor
        {
            return executeBlock(call, on: file, request: request, window: window)
        }
        // Memory the driver keeps using after the call (spec `kept`) is a buffer the plug-in lends, never a
        // copy that dies with the call.
        var lent: [Int: UnsafeMutableRawBufferPointer] = [:]   // target region → lent buffer
        for (index, slot) in plan.pointers.enumerated() where slot.kept {
            let region = plan.regions[slot.target]
            guard let buffer = file.state?.lend(guestAddress: region.address, length: region.length, for: call.before),
                  buffer.count >= region.length else {
                logger.notice("ioctl refused", metadata: ["ioctl": "\(plan.ioctl)", "reason": "\(call.keptReasons[index] ?? "kept memory")"])
                return fail(request, .invalidArgument)
            }
            if region.direction.reads {
                call.gathered[slot.target].withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
            lent[slot.target] = buffer
        }
        // A lent region needs no copy of its own: the driver works in the lent buffer.
        let buffers = plan.regions.indices.map {
            UnsafeMutableRawPointer.allocate(byteCount: lent[$0] == nil ? max(plan.regions[$0].length, 1) : 1, alignment: 16)
        }
        defer { buffers.forEach { $0.deallocate() } }
        for (i, bytes) in call.gathered.enumerated() where lent[i] == nil {
            bytes.withUnsafeBytes { buffers[i].copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        // Embedded pointers point at the backend's copies; descriptors become the backend's.
        for slot in plan.pointers {
            let target = lent[slot.target]?.baseAddress ?? buffers[slot.target]
            buffers[slot.region].storeBytes(of: UInt64(UInt(bitPattern: target)), toByteOffset: slot.offset, as: UInt64.self)
        }
        var inputFiles: [Int: OpenFile] = [:]   // slot index → file, kept alive for the call
        var passed: [Int: Int64] = [:]          // slot index → the number the driver was given
        for (index, slot) in plan.descriptors.enumerated() where slot.direction.reads {
            let value = readSigned(buffers[slot.region], slot.offset, slot.width)
            passed[index] = value
            guard value >= 0 else { continue }   // -1 and friends mean "no descriptor"
            guard let input = self.file(UInt32(truncatingIfNeeded: value)) else {
                // Not a descriptor of this guest: the driver sees an invalid one and answers as it would.
                logger.debug("descriptor unknown", metadata: ["handle": "\(value)"])
                writeInteger(buffers[slot.region], slot.offset, slot.width, -1)
                passed[index] = -1
                continue
            }
            inputFiles[index] = input
            passed[index] = Int64(input.fd)
            writeInteger(buffers[slot.region], slot.offset, slot.width, Int64(input.fd))
        }
        var argument: UInt = 0
        var argumentFile: OpenFile?
        switch plan.argument {
        case .none, .null: argument = 0
        case .value(let v): argument = UInt(v)
        case .region(let i): argument = UInt(bitPattern: buffers[i])
        case .descriptor(let h):
            if let f = self.file(UInt32(bitPattern: h)) {
                argumentFile = f
                argument = UInt(bitPattern: Int(f.fd))
            } else {
                argument = UInt(bitPattern: -1)   // the driver answers for a descriptor this guest does not have
            }
        }

        let outcome = callDriver(file, plan, argument, window)
        let r = outcome.driverResult
        withExtendedLifetime(argumentFile) {}
        withExtendedLifetime(inputFiles) {}

        // The driver's answer, which the copy-back rules and the plug-in read. (A lent region keeps the guest's
        // bytes: the driver fills it later.)
        var answer = call.gathered
        for (i, region) in plan.regions.enumerated() where region.direction.writes && lent[i] == nil {
            answer[i] = Array(UnsafeRawBufferPointer(start: buffers[i], count: region.length))
        }
        let (view, edits) = completed(call, answer: answer, on: file, result: Int64(r))
        var lengths = call.copyOutLengths(answer: answer, result: Int64(r), variables: file.variables)
        for target in lent.keys { lengths[target] = 0 }   // the driver fills it later; the plug-in says when
        if r < 0 {
            // A failed call returns what the guest sent and the driver may have updated (an error index),
            // never an out-only buffer the driver did not fill.
            for (i, region) in plan.regions.enumerated() where !(region.direction.reads && region.direction.writes) { lengths[i] = 0 }
        }
        var newSlots: [pd_slot] = []
        var createdHandles: [UInt32] = []
        var overFileLimit = false
        var written = WrittenRegions(reservingCapacity: lengths.reduce(0, +) + 24 * lengths.count)
        for (i, region) in plan.regions.enumerated() where region.direction.writes && lengths[i] > 0 {
            // The guest sees its own pointers and descriptor numbers where it wrote them.
            var bytes = answer[i]
            let original = call.gathered[i]
            bytes.withUnsafeMutableBytes { edits.apply(toRegion: i, at: $0.baseAddress!, count: $0.count) }
            for slot in plan.pointers where slot.region == i && slot.offset + 8 <= bytes.count {
                // A driver that cleared the pointer (vivid's overlay bitmap) says so; otherwise the guest
                // sees its own pointer, never the backend's copy.
                let after = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: slot.offset, as: UInt64.self) }
                if after == 0 { continue }
                bytes.replaceSubrange(slot.offset..<(slot.offset + 8), with: original[slot.offset..<(slot.offset + 8)])
            }
            for (index, slot) in plan.descriptors.enumerated() where slot.region == i && slot.offset + slot.width <= lengths[i] {
                let value = bytes.withUnsafeBytes { readSigned(UnsafeMutableRawPointer(mutating: $0.baseAddress!), slot.offset, slot.width) }
                if let given = passed[index], value == given {
                    // The driver left what it was given: the guest sees its own number. (One it changed,
                    // such as a request fd DQBUF clears, the guest sees as the driver wrote it.)
                    bytes.replaceSubrange(slot.offset..<(slot.offset + slot.width), with: original[slot.offset..<(slot.offset + slot.width)])
                } else if slot.direction.writes && r >= 0 && value >= 0 {
                    // Its ioctls are the same class's (a media request's, a PRIME buffer's).
                    let created = OpenFile(fd: Int32(truncatingIfNeeded: value), path: "\(file.path) (fd from \(plan.ioctl))",
                                           specClass: file.specClass, state: nil, nonBlocking: false)
                    // Past the session's file limit the descriptor closes with `created`, and the call fails.
                    guard let handle = register(created) else { overFileLimit = true; continue }
                    createdHandles.append(handle)
                    bytes.withUnsafeMutableBytes { writeInteger($0.baseAddress!, slot.offset, slot.width, Int64(handle)) }
                    newSlots.append(pd_slot(address: region.address + UInt64(slot.offset), width: UInt32(slot.width), direction: 2))
                }
            }
            written.append(address: region.address, bytes[0..<lengths[i]])
        }
        var result = Int64(r)
        var flags: UInt32 = 0
        let resultUnwrapped = plan.returnsDescriptor && r >= 0 && overFileLimit   // no OpenFile owns it yet
        if plan.returnsDescriptor && r >= 0 && !overFileLimit {
            let created = OpenFile(fd: Int32(r), path: "\(file.path) (fd from \(plan.ioctl))", specClass: file.specClass,
                                   state: backend.pluginState(for: file.specClass, path: file.path, descriptor: Int32(r), guest: guest, sharing: .shared),
                                   nonBlocking: false)
            if let handle = register(created) {
                result = Int64(handle)
                flags |= PD_DONE_RESULT_HANDLE
            } else {
                overFileLimit = true
            }
        }
        if overFileLimit {
            // As a kernel whose descriptor table is full: the call fails with EMFILE and leaves no descriptor.
            for h in createdHandles { _ = handles.release(h, for: id) }
            if resultUnwrapped { try? Syscall.close(Int32(r)) }
            return fail(request, .tooManyOpenFiles)
        }
        replyIoctl(request, call: view, edits: edits, driverResult: Int64(r), file: file, result: result, error: outcome.error, flags: flags,
                   written: &written, newSlots: newSlots)
    }

    /// The plug-in's turn once the driver has answered: what it learns, and what it changes in the reply.
    /// `answer` holds the driver's bytes for the regions it may write, the guest's for the others.
    fileprivate func completed(_ call: PlannedCall, answer: [[UInt8]], on file: OpenFile, result: Int64) -> (CallView, CallEdits) {
        let view = CallView(call, bytes: answer)
        file.states.apply(call.stateChanges(answer: answer, result: result))
        guard let state = file.state else { return (view, CallEdits()) }
        state.ioctlCompleted(view, result: result)
        return (view, state.edits(after: view, result: result))
    }

    /// An ioctl's reply: the regions written back, then what the plug-in adds (guest memory it says the
    /// call filled, mirror contents the guest must see).
    /// `result` is the guest's: the driver's, or the handle that stands for the descriptor it returned.
    fileprivate func replyIoctl(_ request: UInt32, call: CallView, edits: CallEdits, driverResult: Int64, file: OpenFile,
                                result: Int64, error: Errno?, flags: UInt32, written: inout WrittenRegions, newSlots: [pd_slot]) {
        let r = error == nil ? driverResult : -1
        for write in edits.guestWrites where write.bytes.count > 0 { written.append(address: write.address, write.bytes) }
        let toGuest = call.call.syncToGuest(result: r, variables: file.variables) + (file.state?.mappedToGuest(after: call, result: r) ?? [])
        // `pushes` holds each mapping (and so its memory) until the reply is encoded.
        let pushes = mappingRanges(of: file, toGuest)
        let frame = withExtendedLifetime(pushes) {
            Reply.ioctl(request, error.map { .failure($0) } ?? .success(result), flags: flags, written: written, slots: newSlots,
                        mirrors: pushes.map { (mapping: $0.id, offset: UInt64($0.offset),
                                               bytes: UnsafeRawBufferPointer(start: $0.mapping.address + $0.offset, count: $0.length)) })
        }
        send(frame)
    }
}

extension Session {
    /// The common case — no argument, a value, or one block with nothing inside to rewrite — on a stack buffer.
    fileprivate func executeBlock(_ call: PlannedCall, on file: OpenFile, request: UInt32, window: DriverWindow) {
        let plan = call.plan
        let region = plan.regions.first
        let length = region?.length ?? 0
        withUnsafeTemporaryAllocation(byteCount: max(length, 1), alignment: 16) { buffer in
            if let region, region.gathered {
                call.gathered[0].withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: length) }
            } else {
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
            }
            var argument: UInt = 0
            switch plan.argument {
            case .region: argument = UInt(bitPattern: buffer.baseAddress)
            case .value(let v): argument = UInt(v)
            default: argument = 0
            }
            let outcome = callDriver(file, plan, argument, window)
            let r = outcome.driverResult
            // Written back: the block on success; on failure only what the guest sent both ways.
            let back = region.map { $0.direction.writes && (r >= 0 || $0.direction.reads) } ?? false
            // The driver's answer, copied only for a plug-in or the spec's `remember` to read.
            let answer = (file.state != nil || !call.ioctl.remembers.isEmpty) && region?.direction.writes == true
                ? [Array(UnsafeRawBufferPointer(start: buffer.baseAddress, count: length))] : call.gathered
            let (view, edits) = completed(call, answer: answer, on: file, result: Int64(r))
            // What the plug-in shows the guest instead (V4L2's user pointers).
            edits.apply(toRegion: 0, at: buffer.baseAddress!, count: length)
            var written = WrittenRegions(reservingCapacity: back ? MemoryLayout<pd_region>.size + length + 8 : 0)
            if back, let region { written.append(address: region.address, UnsafeRawBufferPointer(start: buffer.baseAddress, count: length)) }
            replyIoctl(request, call: view, edits: edits, driverResult: Int64(r), file: file, result: Int64(r), error: outcome.error, flags: 0,
                       written: &written, newSlots: [])
        }
    }
}

extension Session {
    /// The ioctl itself, in the call's window (where PD_INTERRUPT reaches it): never repeated on EINTR, as
    /// every call on a guest's file (ParadiceSystem's Syscalls.swift says why). A failure is logged at debug
    /// level; the guest gets its errno.
    fileprivate func callDriver(_ file: OpenFile, _ plan: MemoryPlan, _ argument: UInt, _ window: DriverWindow) -> Result<Int32, Errno> {
        let outcome = window.run { attempt { () throws(Errno) in try Syscall.ioctl(file.fd, UInt(plan.command), value: argument) } }
        if case .failure(let error) = outcome {
            logger.debug("ioctl failed", metadata: ["ioctl": "\(plan.ioctl)", "errno": "\(error.rawValue)"])
        }
        return outcome
    }
}

extension Result<Int32, Errno> {
    /// What the driver returned: its result, or -1 when it failed (as the C call gives it).
    fileprivate var driverResult: Int32 { (try? get()) ?? -1 }
    fileprivate var error: Errno? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }

func readSigned(_ base: UnsafeMutableRawPointer, _ offset: Int, _ width: Int) -> Int64 {
    width == 8 ? base.loadUnaligned(fromByteOffset: offset, as: Int64.self) : Int64(base.loadUnaligned(fromByteOffset: offset, as: Int32.self))
}

func writeInteger(_ base: UnsafeMutableRawPointer, _ offset: Int, _ width: Int, _ value: Int64) {
    if width == 8 { base.storeBytes(of: value, toByteOffset: offset, as: Int64.self) }
    else { base.storeBytes(of: Int32(truncatingIfNeeded: value), toByteOffset: offset, as: Int32.self) }
}
