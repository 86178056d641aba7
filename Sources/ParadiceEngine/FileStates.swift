import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// The values an open file remembers between calls, as its class's spec declares them (`state`), set and
/// unset by the ioctls' `remember` and `forget`. Bounded: one slot per declared state. The sessions of
/// forked children share the file, and so its states, from several threads.
final class FileStates: Sendable {
    let declared: [StateVariable]
    private let values: LockedValue<[Int64?]>

    init(_ declared: [StateVariable]) {
        self.declared = declared
        values = LockedValue([Int64?](repeating: nil, count: declared.count))
    }

    /// The value of state `name`: nil when the class declares no such state; throws the state's errno
    /// while it is unset (the driver's answer to a call made before the one that sets it).
    func value(of name: String) throws -> Int64? {
        guard let index = declared.firstIndex(where: { $0.name == name }) else { return nil }
        guard let value = values.withLock({ $0[index] }) else {
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

    func value(of name: String, arguments: [Int64]) throws -> Int64? {
        if arguments.isEmpty, let value = try file.states.value(of: name) { return value }
        return try file.state?.value(of: name, arguments: arguments)
    }
}

extension OpenFile {
    /// The variables its plans read; nil when neither a spec state nor a plug-in could answer one.
    var variables: (any PlanVariables)? {
        states.declared.isEmpty && state == nil ? nil : FileVariables(file: self)
    }
}
