import ParadicePlan
import ParadiceSpec
import Testing

/// The repository's Specs folder, found from this file's path.
let specFolder: String = {
    var parts = #filePath.split(separator: "/").dropLast(3)
    return "/" + parts.joined(separator: "/") + "/Specs"
}()

/// Every spec of the repository, compiled once.
let repositorySpecs: SpecSet = {
    do {
        return try SpecSet.load(directory: specFolder)
    } catch {
        fatalError("the repository specs do not compile:\n\(error)")
    }
}()

/// Memory owned by a test, laid out by spec field names, at real addresses of this process.
final class Arg {
    let record: Record?
    let pointer: UnsafeMutableRawPointer
    let size: Int

    init(_ typeName: String, extra: Int = 0, specs: SpecSet = repositorySpecs) {
        guard let r = specs.record(named: typeName) else { fatalError("no struct \(typeName)") }
        record = r
        size = r.size + extra
        pointer = .allocate(byteCount: max(size, 1), alignment: 16)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(size, 1))
    }

    init(bytes: Int) {
        record = nil
        size = bytes
        pointer = .allocate(byteCount: max(bytes, 1), alignment: 16)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 1))
    }

    deinit { pointer.deallocate() }

    var address: UInt64 { UInt64(UInt(bitPattern: pointer)) }

    func offset(_ path: String) -> (Int, Int) {
        var record = self.record!
        var offset = 0
        var size = 0
        for component in path.split(separator: ".") {
            guard let (field, o) = record.field(named: String(component)) else { fatalError("no field \(path)") }
            offset += o
            size = field.type.size
            if case .record(let inner) = field.type { record = inner }
        }
        return (offset, size)
    }

    /// Sets a field (by dotted path) to an integer, in its own width.
    func set(_ path: String, _ value: Int64) {
        let (offset, size) = offset(path)
        set(at: offset, size: size, value)
    }

    func set(_ path: String, _ other: Arg) { set(path, Int64(bitPattern: other.address)) }

    func set(at offset: Int, size: Int, _ value: Int64) {
        for i in 0..<size { pointer.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * Int64(i))), toByteOffset: offset + i, as: UInt8.self) }
    }
}

struct NoVariables: PlanVariables {
    func value(of name: String, arguments: [Int64]) throws -> Int64? { nil }
}

struct FixedVariables: PlanVariables {
    var values: [String: Int64]
    var functions: [String: ([Int64]) -> Int64] = [:]
    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        if let f = functions[name] { return f(arguments) }
        return values[name]
    }
}

func command(_ name: String, _ parameters: [String: Int64] = [:]) -> UInt32 {
    guard let ioctl = repositorySpecs.ioctl(named: name) else { fatalError("no ioctl \(name)") }
    return try! ioctl.command(in: repositorySpecs, parameters: parameters)
}

func plan(_ className: String, _ ioctl: String, _ arg: UInt64, parameters: [String: Int64] = [:],
          variables: (any PlanVariables)? = nil, memory: some GuestMemory = LocalMemory()) throws -> PlannedCall {
    try Planner(specs: repositorySpecs).plan(command: command(ioctl, parameters), argument: arg, className: className,
                                             memory: memory, variables: variables)
}

func region(_ call: PlannedCall, at address: UInt64) -> MemoryPlan.Region? {
    call.plan.regions.first { $0.address == address }
}
