#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec
import ParadiceSystem

/// Where an expression is evaluated: a struct instance inside a region, and the structs around it.
final class Frame: Sendable {
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

/// What expressions see: the fields of the frame's struct in the call's buffers (the guest's bytes while
/// planning, the driver's answer when sizing the copy back), parameters, the result, plug-in variables.
struct FrameScope: EvaluationScope {
    let frame: Frame
    let specs: SpecSet
    let buffers: [[UInt8]]
    let result: Int64?
    let variables: (any PlanVariables)?
    /// Guest memory that `sum()` reads; nil after the call.
    let memory: (any GuestMemory)?

    func value(of path: [String], at location: SourceLocation) throws -> Int64? {
        if let (owner, field, offset) = frame.resolve(path) {
            guard let buffer = buffers[safe: owner.region] else { return 0 }
            return readValue(field.type, buffer, offset)
        }
        if path.count == 1, let v = frame.root.parameters[path[0]] { return v }
        if path == ["result"] {
            guard let result else { throw EvaluationError(location, "'result' is known only after the call") }
            return result
        }
        return nil
    }

    func variable(_ name: String, arguments: [Int64], at location: SourceLocation) throws -> Int64 {
        guard let variables else {
            throw PlanError.rejected(errno: .invalidArgument, message: "\(location): $\(name) needs the class plug-in, and none is loaded")
        }
        guard let v = try variables.value(of: name, arguments: arguments) else {
            throw PlanError.rejected(errno: .invalidArgument, message: "\(location): the plug-in has no value for $\(name)")
        }
        return v
    }

    /// An element of a fixed array field; the index was checked at compile time where it is constant, and
    /// is checked again here against the array's length.
    func element(of path: [String], index: Int64, then rest: [String], at location: SourceLocation) throws -> Int64? {
        guard let (owner, field, offset) = frame.resolve(path), case .array(let element, let count) = field.type else { return nil }
        guard index >= 0, index < Int64(count) else { throw EvaluationError(location, "index \(index) outside \(field.name)") }
        var at = offset + Int(index) * element.size
        var type = element
        for component in rest {
            guard case .record(let inner) = type, let (next, o) = inner.field(named: component) else { return nil }
            type = next.type
            at += o
        }
        guard let buffer = buffers[safe: owner.region] else { return 0 }
        return readValue(type, buffer, at)
    }

    func sum(of path: [String], at location: SourceLocation) throws -> Int64 {
        guard let memory, let (owner, field, offset) = frame.resolve(path),
              case .pointer(let p) = field.type, let length = p.length, case .integer(let element) = p.pointee,
              let buffer = buffers[safe: owner.region]
        else {
            throw EvaluationError(location, "sum() takes a pointer field to an array of integers")
        }
        let address = UInt64(bitPattern: readValue(.integer(IntegerType(size: 8, signed: false)), buffer, offset))
        let inner = FrameScope(frame: owner, specs: specs, buffers: buffers, result: result, variables: variables, memory: memory)
        let count = try specs.evaluate(length.count, in: inner)
        guard address != 0, count > 0 else { return 0 }
        guard count <= Int64(p.maxCount ?? 4096) else {
            throw PlanError.rejected(errno: .invalidArgument, message: "\(location): \(field.name) holds \(count) elements, over its cap")
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
