/// Field offsets, struct sizes, constants and ioctl numbers that plug-in code takes from the verified
/// specs, resolved once when the plug-in is loaded. A lookup that fails (a renamed field or constant, a
/// field of another width than the one asked for) is noted and a placeholder returned; `check()` then
/// throws every one of them, so that a spec change stops the backend at its start instead of silently
/// disabling a plug-in.
public final class SpecLayout {
    public let specs: SpecSet
    public private(set) var problems: [String] = []

    public init(_ specs: SpecSet) { self.specs = specs }

    /// An integer field of width `T` (or an array of them, or a pointer or descriptor of that width), by a
    /// dotted path through nested structs and unions (`fmt.win.w.width`).
    public func field<T: FixedWidthInteger>(_ record: String, _ path: String, as: T.Type = T.self) -> SpecField<T> {
        guard let (type, offset) = find(record, path) else { return SpecField(offset: 0, count: 1) }
        let (element, count): (SpecType, Int)
        if case .array(let e, let n) = type { (element, count) = (e, n) } else { (element, count) = (type, 1) }
        var integer = false
        switch element {
        case .integer, .pointer, .descriptor: integer = true
        default: break
        }
        guard integer, element.size == MemoryLayout<T>.size else {
            problems.append("\(record).\(path) is \(type), not \(MemoryLayout<T>.size)-byte integers")
            return SpecField(offset: 0, count: 1)
        }
        return SpecField(offset: offset, count: count)
    }

    /// The offset of any field (a struct or an array of structs), by a dotted path.
    public func offset(_ record: String, _ path: String) -> Int { find(record, path)?.offset ?? 0 }

    /// A struct's size.
    public func size(of record: String) -> Int {
        guard let r = specs.record(named: record) else { problems.append("no struct \(record)"); return 0 }
        return r.size
    }

    public func constant(_ name: String) -> Int64 {
        guard let value = try? specs.constantValue(name) else { problems.append("no constant \(name)"); return 0 }
        return value
    }

    /// The number of an ioctl without parameters.
    public func command(_ name: String) -> UInt32 {
        guard let ioctl = specs.ioctl(named: name), let number = try? ioctl.command(in: specs, parameters: [:]) else {
            problems.append("no ioctl \(name)")
            return 0
        }
        return number
    }

    /// The argument of an ioctl that points at one integer of width `T` (DRM's RMFB: an `unsigned int`).
    public func argument<T: FixedWidthInteger>(of name: String, as: T.Type = T.self) -> SpecField<T> {
        guard let ioctl = specs.ioctl(named: name), case .pointer(let p) = ioctl.argument, p.length == nil,
              case .integer(let i) = p.pointee, i.size == MemoryLayout<T>.size else {
            problems.append("\(name) takes no pointer to one \(MemoryLayout<T>.size)-byte integer")
            return SpecField(offset: 0, count: 1)
        }
        return SpecField(offset: 0, count: 1)
    }

    /// Throws what could not be resolved, all at once.
    public func check() throws(SpecLayoutError) {
        guard problems.isEmpty else { throw SpecLayoutError(problems: problems) }
    }

    private func find(_ recordName: String, _ path: String) -> (type: SpecType, offset: Int)? {
        var record = specs.record(named: recordName)
        var found: (type: SpecType, offset: Int)?
        var at = 0
        for part in path.split(separator: ".") {
            guard let (field, offset) = record?.field(named: String(part)) else {
                problems.append("no field \(recordName).\(path)")
                return nil
            }
            at += offset
            found = (field.type, at)
            if case .record(let inner) = field.type { record = inner } else { record = nil }
        }
        return found
    }
}

/// An integer field (or array of them) of a spec struct, of the width a plug-in reads it with.
public struct SpecField<T: FixedWidthInteger>: Sendable {
    public let offset: Int
    /// Elements: 1, or the length of a fixed array.
    public let count: Int

    /// The offset of element `index`.
    public func offset(ofElement index: Int) -> Int { offset + index * MemoryLayout<T>.size }

    /// The value in `bytes` (a struct's), or nil outside them.
    public func load(from bytes: UnsafeRawBufferPointer, index: Int = 0) -> T? {
        let at = offset(ofElement: index)
        guard at >= 0, at <= bytes.count - MemoryLayout<T>.size else { return nil }
        return bytes.loadUnaligned(fromByteOffset: at, as: T.self)
    }

    /// Stores `value` in `bytes` when it lies inside them.
    public func store(_ value: T, into bytes: UnsafeMutableRawBufferPointer, index: Int = 0) {
        let at = offset(ofElement: index)
        guard at >= 0, at <= bytes.count - MemoryLayout<T>.size else { return }
        bytes.storeBytes(of: value, toByteOffset: at, as: T.self)
    }
}

public struct SpecLayoutError: Error, Sendable, CustomStringConvertible {
    public let problems: [String]
    public var description: String { "the specs lack what a plug-in reads: " + problems.joined(separator: "; ") }
}
