/// The resolved, laid-out form of a spec set: what plans and the verifier work from. Read-only outside
/// this module: the compiler fills it in while it resolves and lays out, then nothing changes it.

public struct IntegerType: Sendable, Hashable {
    public internal(set) var size: Int
    public internal(set) var signed: Bool

    public init(size: Int, signed: Bool) {
        self.size = size
        self.signed = signed
    }
}

/// A type with its layout known.
public indirect enum SpecType: Sendable {
    case integer(IntegerType)
    case string(count: Int)                      // char[N]
    case array(SpecType, count: Int)             // fixed array
    case pointer(PointerType)
    case descriptor(Direction, width: Int)
    case record(Record)

    public var size: Int {
        switch self {
        case .integer(let i): return i.size
        case .string(let n): return n
        case .array(let t, let n): return t.size * n
        case .pointer: return 8
        case .descriptor(_, let w): return w
        case .record(let r): return r.size
        }
    }

    public var alignment: Int {
        switch self {
        case .integer(let i): return i.size
        case .string: return 1
        case .array(let t, _): return t.alignment
        case .pointer: return 8
        case .descriptor(_, let w): return w
        case .record(let r): return r.alignment
        }
    }

    /// Whether a plan has to look inside values of this type (pointers, fds, checks, flexible tails).
    public var needsVisit: Bool {
        switch self {
        case .integer, .string: return false
        case .array(let t, _): return t.needsVisit
        case .pointer, .descriptor: return true
        case .record(let r): return r.needsVisit
        }
    }

    public var containsReferences: Bool {
        switch self {
        case .integer, .string: return false
        case .array(let t, _): return t.containsReferences
        case .pointer, .descriptor: return true
        case .record(let r): return r.containsReferences
        }
    }
}

extension SpecType: CustomStringConvertible {
    public var description: String {
        switch self {
        case .integer(let i): return "\(i.signed ? "s" : "u")\(i.size * 8)"
        case .string(let n): return "char[\(n)]"
        case .array(let t, let n): return "\(t)[\(n)]"
        case .pointer(let p): return p.description
        case .descriptor(let d, let w): return "\(w == 8 ? "fd64" : "fd")<\(d.rawValue)>"
        case .record(let r): return r.displayName
        }
    }
}

/// How many elements a variable array holds.
public struct ArrayLength: Sendable, CustomStringConvertible {
    /// Elements the driver may access, evaluated before the call.
    public internal(set) var count: Expr
    /// When set: after the call, copy back min(count before, this after) elements.
    public internal(set) var copyOut: Expr?

    public init(count: Expr, copyOut: Expr?) {
        self.count = count
        self.copyOut = copyOut
    }

    public var description: String {
        guard let copyOut else { return count.description }
        if copyOut.description == count.description { return "capacity \(count)" }
        return "\(count) -> \(copyOut)"
    }
}

public final class PointerType: @unchecked Sendable, CustomStringConvertible {
    public let direction: Direction
    /// `ptr64`: carried in a u64 field rather than a C pointer. Both are 8 bytes on LP64.
    public let wide: Bool
    public internal(set) var pointee: SpecType = .integer(IntegerType(size: 1, signed: false))
    /// nil: one element. Otherwise an array of this length.
    public internal(set) var length: ArrayLength?
    public internal(set) var maxCount: Int?
    public internal(set) var maxBytes: Int?
    public let location: SourceLocation

    init(direction: Direction, wide: Bool, location: SourceLocation) {
        self.direction = direction
        self.wide = wide
        self.location = location
    }

    /// One fixed-size block with nothing inside to follow or check: the common case, planned without a walk.
    /// Computed at each call (a few stored flags): a lazy var would be written on first use by whichever
    /// session thread plans first, while others read it.
    public var isPlain: Bool { length == nil && !pointee.needsVisit && !pointee.containsReferences }

    public var description: String {
        let target = length.map { "\(pointee)[\($0)]" } ?? pointee.description
        return "\(wide ? "ptr64" : "ptr")<\(direction.rawValue), \(target)>"
    }
}

public final class EnumSet: @unchecked Sendable {
    public let name: String
    public let isFlags: Bool
    public internal(set) var members: [(name: String, value: Int64)] = []
    public let location: SourceLocation

    init(name: String, isFlags: Bool, location: SourceLocation) {
        self.name = name
        self.isFlags = isFlags
        self.location = location
    }

    public var allBits: Int64 { members.reduce(0) { $0 | $1.value } }

    public func accepts(_ value: Int64) -> Bool {
        isFlags ? (value & ~allBits) == 0 : members.contains { $0.value == value }
    }

    public func name(of value: Int64) -> String? { members.first { $0.value == value }?.name }
}

public struct Field: Sendable {
    public internal(set) var name: String
    public internal(set) var type: SpecType
    public internal(set) var offset: Int
    public internal(set) var location: SourceLocation
    /// C member designator relative to the enclosing named C type ("" for an anonymous member).
    public internal(set) var cDesignator: String?
    public internal(set) var check: EnumSet?
    public internal(set) var when: Expr?
    /// Set for a flexible array member: `type` is the element type.
    public internal(set) var flexible: ArrayLength?
    public internal(set) var maxCount: Int?
    /// When this field is live, the call is refused: its value cannot travel as bytes.
    public internal(set) var refusal: String?
    /// A pointer whose memory the driver keeps using after the call returns: the call runs only with a
    /// buffer a plug-in lends for it (one that outlives the call), and is refused for this reason otherwise.
    public internal(set) var kept: String?

    public var isAnonymous: Bool { name == "_" }
    public var isSpecOnly: Bool { name.hasPrefix("_") && name != "_" }
}

public final class Record: @unchecked Sendable {
    public let name: String?
    public let isUnion: Bool
    public internal(set) var cName: String?
    public internal(set) var packed = false
    public internal(set) var explicitAlignment: Int?
    public internal(set) var fields: [Field] = []
    public internal(set) var size = 0
    public internal(set) var alignment = 1
    public let location: SourceLocation
    public internal(set) var needsVisit = false
    public internal(set) var containsReferences = false
    /// The union's members choose the live one with `when`.
    public internal(set) var isDiscriminated = false

    enum LayoutState { case pending, inProgress, done }
    var layoutState = LayoutState.pending
    var syntax: RecordSyntax?

    init(name: String?, isUnion: Bool, location: SourceLocation) {
        self.name = name
        self.isUnion = isUnion
        self.location = location
    }

    public var displayName: String { name ?? (isUnion ? "union {…}" : "struct {…}") }
    public var cTypeName: String? { cName ?? name.map { "\(isUnion ? "union" : "struct") \($0)" } }
    public var flexibleField: Field? { fields.last.flatMap { $0.flexible != nil ? $0 : nil } }

    /// A field by name, looking through anonymous members.
    public func field(named name: String) -> (field: Field, offset: Int)? {
        for f in fields {
            if f.name == name { return (f, f.offset) }
            if f.isAnonymous, case .record(let inner) = f.type, let found = inner.field(named: name) {
                return (found.field, f.offset + found.offset)
            }
        }
        return nil
    }
}

public struct IoctlParameter: Sendable {
    public internal(set) var name: String
    public internal(set) var range: ClosedRange<Int64>?
    public internal(set) var location: SourceLocation
}

public enum IoctlArgument: Sendable, CustomStringConvertible {
    case none
    case value
    case descriptor
    case pointer(PointerType)

    public var description: String {
        switch self {
        case .none: return "none"
        case .value: return "value"
        case .descriptor: return "fd"
        case .pointer(let p): return p.description
        }
    }
}

/// The Linux generic ioctl number layout (x86-64, aarch64): nr 0-7, type 8-15, size 16-29, dir 30-31.
public enum IoctlNumber {
    public static let none: UInt32 = 0
    public static let write: UInt32 = 1
    public static let read: UInt32 = 2
    public static let sizeMask: UInt32 = (1 << 14) - 1

    public static func make(dir: UInt32, type: UInt32, nr: UInt32, size: UInt32) -> UInt32 {
        (dir << 30) | ((size & sizeMask) << 16) | ((type & 0xff) << 8) | (nr & 0xff)
    }

    public static func dir(_ c: UInt32) -> UInt32 { c >> 30 }
    public static func type(_ c: UInt32) -> UInt32 { (c >> 8) & 0xff }
    public static func nr(_ c: UInt32) -> UInt32 { c & 0xff }
    public static func size(_ c: UInt32) -> UInt32 { (c >> 16) & sizeMask }
}

public final class Ioctl: @unchecked Sendable {
    public enum Encoding: Sendable {
        case generic(dir: UInt32, type: Expr, nr: Expr, size: Expr)
        case raw(Expr)
    }

    public let name: String
    public let location: SourceLocation
    public internal(set) var parameters: [IoctlParameter] = []
    public internal(set) var encoding: Encoding
    public internal(set) var argument: IoctlArgument = .none
    public internal(set) var blocking = false
    public internal(set) var returnsDescriptor = false
    public internal(set) var maxBytes: Int?
    public internal(set) var cExpression: String?
    public internal(set) var verify = true
    /// Declared, but never forwarded: the reason, for the guest's log and the backend's.
    public internal(set) var refusal: String?
    public internal(set) weak var specClass: SpecClass?
    /// Device mmap ranges of the file that the call reads or writes besides its argument (spec `sync`).
    public internal(set) var syncs: [SyncPoint] = []
    /// States of the open file set after a successful call (spec `remember`); a failed call unsets them.
    public internal(set) var remembers: [StateChange] = []
    /// States unset after a successful call (spec `forget`): indices into the class's `states`.
    public internal(set) var forgets: [Int] = []
    public let file: String

    init(name: String, location: SourceLocation, encoding: Encoding, file: String) {
        self.name = name
        self.location = location
        self.encoding = encoding
        self.file = file
    }

    public var isFamily: Bool { !parameters.isEmpty }
}

/// A range of the file's device mmap offsets that a call reads (`in`: a guest's mirror reaches the device
/// before it), writes (`out`: the device's contents reach the mirror after it), or both: KVM_RUN's
/// kvm_run page, ALSA's data buffer at SYNC_PTR. The condition sees plug-in variables and, after the
/// call, `result`.
public struct SyncPoint: Sendable {
    public let direction: Direction
    public let range: Range<UInt64>
    public let condition: Expr?
    public let location: SourceLocation
}

/// Mappings a class's files refuse, as the driver refuses them (spec `mmap refuse COND errno NAME`): a page
/// the driver updates by itself, which a guest's mirror would show stale. The condition reads `offset` and
/// `length` of the mapping and constants.
public struct MmapRefusal: Sendable {
    public let condition: Expr
    public let errno: Int32
    public let location: SourceLocation
}

/// A value an open file of a class keeps between calls (spec `state NAME unset errno ERRNO`), read as
/// `$NAME`: ALSA's frame size from HW_PARAMS. While unset, a plan that reads it is refused with `unsetErrno`.
public struct StateVariable: Sendable {
    public let name: String
    public let unsetErrno: Int32
    public let location: SourceLocation
}

/// `path NAME GLOB…`: `$NAME` is 1 on an open file of the class whose path matches one of the globs, 0
/// on the others (ALSA's `$capture`: a capture PCM's node name ends in "c").
public struct PathVariable: Sendable {
    public let name: String
    public let globs: [String]
    public let location: SourceLocation
}

/// `remember NAME = VALUE [when CONDITION]`: state `index` of the class takes VALUE, evaluated over the
/// argument's struct after a successful call; unset when CONDITION does not hold.
public struct StateChange: Sendable {
    public let index: Int
    public let value: Expr
    public let condition: Expr?
    public let location: SourceLocation
}

public final class SpecClass: @unchecked Sendable {
    public let name: String
    public internal(set) var devices: [String]
    public internal(set) var plugin: String?
    public internal(set) var ioctls: [Ioctl] = []
    public internal(set) var records: [Record] = []
    /// Mappings of the class's files that are refused (spec `mmap refuse`), in declaration order.
    public internal(set) var mmapRefusals: [MmapRefusal] = []
    /// What each open file of the class remembers (spec `state`); ioctls name them by index.
    public internal(set) var states: [StateVariable] = []
    /// How a read may be split, so that the backend may read ahead for the guest (spec `read`): 1 for a
    /// byte stream (any split is the device's own), N for whole records of N bytes (a read of fewer is
    /// EINVAL), 0 when undeclared (no read-ahead).
    public internal(set) var readUnit: Int = 0
    /// Variables fixed at open by the file's path (spec `path`).
    public internal(set) var pathVariables: [PathVariable] = []
    public let file: String
    public let location: SourceLocation
    /// Command number → ioctl, for the ioctls without parameters.
    var exactCommands: [UInt32: Ioctl] = [:]
    var families: [Ioctl] = []

    init(name: String, devices: [String], plugin: String?, file: String, location: SourceLocation) {
        self.name = name
        self.devices = devices
        self.plugin = plugin
        self.file = file
        self.location = location
    }
}

/// What one spec file contributes, for listing and verification.
public final class SpecFile: @unchecked Sendable {
    public let path: String
    public internal(set) var headers: [String] = []
    public internal(set) var cflags: [String] = []
    public internal(set) var facts: String?
    public internal(set) var specClass: SpecClass?
    public internal(set) var records: [Record] = []
    public internal(set) var constants: [Constant] = []
    public internal(set) var ioctls: [Ioctl] = []

    init(path: String) { self.path = path }
}

public struct Constant: Sendable {
    public internal(set) var name: String
    public internal(set) var value: Int64
    public internal(set) var verify: Bool
    public internal(set) var location: SourceLocation
}
