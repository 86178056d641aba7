import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// The values an open file remembers between calls, as its class's spec declares them (`state`), set and
/// unset by the ioctls' `remember` and `forget`, and those its path fixes at open (`path`). Bounded: one
/// slot per declared name. The sessions of forked children share the file, and so its states, from
/// several threads.
final class FileStates: Sendable {
    let declared: [StateVariable]
    private let values: LockedValue<[Int64?]>
    /// The class's path variables and their values for this file.
    let fixed: [(name: String, value: Int64)]

    init(_ specClass: SpecClass?, path: String) {
        declared = specClass?.states ?? []
        values = LockedValue([Int64?](repeating: nil, count: declared.count))
        fixed = specClass.map { c in Array(zip(c.pathVariables.map(\.name), c.pathVariableValues(for: path))) } ?? []
    }

    /// Whether the file has any spec value to answer.
    var isEmpty: Bool { declared.isEmpty && fixed.isEmpty }

    /// The states as they are now, taken under the lock once: a plan reads them all from one HW_PARAMS,
    /// never half from the one before it.
    func snapshot() -> [Int64?] { values.withLock { $0 } }

    /// The value of state `name` (in `snapshot`, else as it is now): nil when the class declares no such
    /// state; throws the state's errno while it is unset (the driver's answer to a call made too early).
    func value(of name: String, in snapshot: [Int64?]? = nil) throws -> Int64? {
        if let value = fixed.first(where: { $0.name == name })?.value { return value }
        guard let index = declared.firstIndex(where: { $0.name == name }) else { return nil }
        let current = snapshot ?? values.withLock { $0 }
        guard index < current.count, let value = current[index] else {
            throw PlanError.rejected(errno: Errno(declared[index].unsetErrno), message: "$\(name) is unset on this file")
        }
        return value
    }

    func apply(_ changes: [(index: Int, value: Int64?)]) {
        guard !changes.isEmpty else { return }
        values.withLock { values in
            for change in changes where values.indices.contains(change.index) { values[change.index] = change.value }
        }
    }
}

/// What a file's plans read as `$name`: its spec states first, then its plug-in's variables.
struct FileVariables: PlanVariables {
    let file: OpenFile
    let states: [Int64?]

    init(file: OpenFile) {
        self.file = file
        states = file.states.snapshot()
    }

    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        if arguments.isEmpty, let value = try file.states.value(of: name, in: states) { return value }
        return try file.state?.value(of: name, arguments: arguments)
    }
}

extension OpenFile {
    /// The variables its plans read; nil when neither a spec state nor a plug-in could answer one.
    var variables: (any PlanVariables)? {
        states.isEmpty && state == nil ? nil : FileVariables(file: self)
    }
}
