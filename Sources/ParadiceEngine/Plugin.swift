import ParadicePlan
import ParadiceSpec
import ParadiceSystem

/// Per-class code for what a spec cannot say. The engine knows plug-ins only through this protocol:
/// it never names a device class.
public protocol DevicePlugin: AnyObject, Sendable {
    /// The name that specs (`plugin NAME`) and `--plugins` use.
    static var name: String { get }
    init()
    /// Throws when the specs lack a field, constant or ioctl the plug-in reads: the backend then does not
    /// start, where the plug-in would otherwise do nothing.
    func check(_ specs: SpecSet) throws
    /// State for one open file of the plug-in's class; nil when the plug-in keeps none.
    func state(for file: DeviceFile) -> (any DeviceFileState)?
    /// A file of a `foreground` export now belongs to the foreground guest (true) or to a background one
    /// (false): give it, or take from it, what the active VT's program has (input events, DRM master).
    /// Called once when the file opens and at every switch, background files first, so that what the
    /// foreground takes is free. Quick driver calls only: opens and switches wait for it.
    func foregroundChanged(_ file: DeviceFile, isForeground: Bool)
}

extension DevicePlugin {
    public func check(_ specs: SpecSet) throws {}
    public func foregroundChanged(_ file: DeviceFile, isForeground: Bool) {}
}

/// An open device file as a plug-in sees it: it may ask the driver things itself (through the
/// descriptor), and takes ioctl numbers and layouts from the verified specs rather than from constants.
public struct DeviceFile: Sendable {
    public let path: String
    public let descriptor: Int32
    public let specs: SpecSet
    /// What the plug-in keeps for the guest that opened the file, across its files (and its forked
    /// children's): what one guest may reach of the device and another may not.
    public let guest: GuestScope
    /// How guests share the file's export: a plug-in may keep, for a `foreground` export, what the guest
    /// asks of the driver apart from what the backend itself holds on the file.
    public let sharing: SharingMode

    public init(path: String, descriptor: Int32, specs: SpecSet, guest: GuestScope = GuestScope(), sharing: SharingMode = .shared) {
        self.path = path
        self.descriptor = descriptor
        self.specs = specs
        self.guest = guest
        self.sharing = sharing
    }
}

/// One guest's values, one per type, made at first use and shared by all of the guest's files. It lives
/// as long as a session of the guest or a plug-in state holding a value does: a guest that is gone
/// leaves nothing behind for the next one.
public final class GuestScope: @unchecked Sendable {
    private let values = LockedValue<[ObjectIdentifier: AnyObject]>([:])

    public init() {}

    /// The guest's value of type `T`, made by `make` the first time.
    public func value<T: AnyObject & Sendable>(_ type: T.Type = T.self, make: () -> T) -> T {
        values.withLock { values in
            if let value = values[ObjectIdentifier(T.self)] as? T { return value }
            let value = make()
            values[ObjectIdentifier(T.self)] = value
            return value
        }
    }
}

extension DeviceFile {
    /// Asks the driver itself: ioctl `number` on this file, with `bytes` as the memory its argument points
    /// at (the driver's answer is left there). Returns the driver's result; its errno is thrown.
    @discardableResult
    public func ioctl(_ number: UInt32, _ bytes: inout [UInt8]) throws(Errno) -> Int32 {
        let outcome = bytes.withUnsafeMutableBytes { raw in
            Result { () throws(Errno) in try Syscall.ioctl(descriptor, UInt(number), raw.baseAddress) }
        }
        return try outcome.get()
    }

    /// Ioctl `number` whose argument is a value, not a pointer (EVIOCGRAB's 1 or 0, DRM's SET_MASTER's none).
    @discardableResult
    public func ioctl(_ number: UInt32, value: Int) throws(Errno) -> Int32 {
        try Syscall.ioctl(descriptor, UInt(number), value: UInt(bitPattern: value))
    }
}

/// What a plug-in keeps per open file: the variables specs read, what it learns from calls, and the
/// sync points of mapped memory when the guest keeps a mirror (a backend on another machine).
/// It reads calls through a `CallView` (the guest's bytes before the call, the driver's answer after it)
/// and changes what the guest sees only through the `CallEdits` it returns.
public protocol DeviceFileState: AnyObject, PlanVariables {
    /// Called after each forwarded ioctl with the driver's result and the region contents after the call.
    func ioctlCompleted(_ call: CallView, result: Int64)
    /// What the guest sees of this call other than the driver's answer, asked after `ioctlCompleted`.
    func edits(after call: CallView, result: Int64) -> CallEdits
    /// Device mmap offsets whose guest copy must reach the device before this call (an output buffer
    /// being queued; KVM's kvm_run before KVM_RUN).
    func mappedToDevice(before call: CallView) -> [Range<UInt64>]
    /// Device mmap offsets whose contents the guest must see after this call (a captured frame after
    /// DQBUF).
    func mappedToGuest(after call: CallView, result: Int64) -> [Range<UInt64>]
    /// An errno for a mapping that a guest's mirror cannot serve (a page the driver updates by itself, which
    /// a mirror would show stale), so that the guest's program takes its fallback, or that the guest may not
    /// have (another guest's buffer); nil to map it. Asked for every mapping the backend makes for a guest;
    /// a descriptor handed to a same-host guest (`--share-mappings`) is mapped by the guest, unasked.
    func mayMap(offset: UInt64, length: UInt64) -> Errno?
    /// Device mmap offsets, within a mapping being made, that the guest's new mirror starts with (a buffer
    /// that already holds data, such as one imported from another file); the rest starts zeroed.
    func mappedToGuest(mapping range: Range<UInt64>) -> [Range<UInt64>]
    /// A buffer that outlives the call, for guest memory the driver keeps using after it returns (a
    /// pointer the spec marks `kept`: V4L2's USERPTR). The guest's bytes are copied in before the call;
    /// nil refuses the call (EINVAL).
    func lend(guestAddress: UInt64, length: Int, for call: CallView) -> UnsafeMutableRawBufferPointer?
    /// An errno that refuses the call before the driver sees it (an object of another guest's that this
    /// guest may not reach): the errno the driver gives when the object does not exist. nil forwards it.
    func refusal(before call: CallView) -> Errno?
    /// The plug-in's own answer to a call the driver must not see (a request on something the backend
    /// holds for the guest, such as a `foreground` file's grab), given as the driver would give it: the
    /// result, or the errno. Only for calls whose reply is the result alone: no region is written back.
    /// nil forwards it.
    func answer(instead call: CallView) -> Result<Int64, Errno>?
    /// Called once, before the backend closes the file's descriptor: the last moment the plug-in may still
    /// use it, and the one to forget what the file held.
    func willClose()
}

extension DeviceFileState {
    public func ioctlCompleted(_ call: CallView, result: Int64) {}
    public func edits(after call: CallView, result: Int64) -> CallEdits { CallEdits() }
    public func mappedToDevice(before call: CallView) -> [Range<UInt64>] { [] }
    public func mappedToGuest(after call: CallView, result: Int64) -> [Range<UInt64>] { [] }
    public func mayMap(offset: UInt64, length: UInt64) -> Errno? { nil }
    public func mappedToGuest(mapping range: Range<UInt64>) -> [Range<UInt64>] { [] }
    public func lend(guestAddress: UInt64, length: Int, for call: CallView) -> UnsafeMutableRawBufferPointer? { nil }
    public func refusal(before call: CallView) -> Errno? { nil }
    public func answer(instead call: CallView) -> Result<Int64, Errno>? { nil }
    public func willClose() {}
}

/// What a plug-in changes in a call's reply.
public struct CallEdits {
    /// 64-bit values the guest sees in place of the driver's, at an offset of a region (V4L2: the guest's
    /// own USERPTR address where the driver reports the lent buffer's). Applied before the engine restores
    /// the guest's own pointers and descriptor numbers.
    public var values: [(region: Int, offset: Int, value: UInt64)] = []
    /// Guest memory to write besides the call's regions (a frame the driver wrote into a lent buffer, at
    /// DQBUF). The bytes must stay valid until the reply is sent.
    public var guestWrites: [(address: UInt64, bytes: UnsafeRawBufferPointer)] = []

    public init(values: [(region: Int, offset: Int, value: UInt64)] = [],
                guestWrites: [(address: UInt64, bytes: UnsafeRawBufferPointer)] = []) {
        self.values = values
        self.guestWrites = guestWrites
    }

    public var isEmpty: Bool { values.isEmpty && guestWrites.isEmpty }

    /// Writes `values` that fall inside region `region`, whose bytes (`count` of them) are at `base`.
    func apply(toRegion region: Int, at base: UnsafeMutableRawPointer, count: Int) {
        for edit in values where edit.region == region && edit.offset >= 0 && edit.offset <= count - 8 {
            base.storeBytes(of: edit.value, toByteOffset: edit.offset, as: UInt64.self)
        }
    }
}

/// The ioctls a plug-in acts on, named by the cases of `Kind` (raw values are the specs' names) and found
/// in the specs once. At each call the plug-in then asks `kinds(call)`, one lookup by the ioctl's
/// identity, where comparing names would cost a string comparison per name, every call.
public struct IoctlKinds<Kind: RawRepresentable & CaseIterable & Sendable>: Sendable where Kind.RawValue == String {
    private let kinds: [ObjectIdentifier: Kind]

    public init(_ specs: SpecSet) {
        var kinds: [ObjectIdentifier: Kind] = [:]
        for ioctl in specs.ioctls {
            if let kind = Kind(rawValue: ioctl.name) { kinds[ObjectIdentifier(ioctl)] = kind }
        }
        self.kinds = kinds
    }

    public func callAsFunction(_ call: CallView) -> Kind? { kinds[ObjectIdentifier(call.call.ioctl)] }
}

/// What a plug-in derives from the specs (offsets, numbers, its ioctls), made once per spec set (at the
/// backend's start, by `check`) and kept: every file of the backend reads the same specs.
public final class SpecDerived<Value>: @unchecked Sendable {
    private let make: (SpecSet) throws -> Value
    private let lock = Lock()
    private var made: (specs: ObjectIdentifier, value: Result<Value, any Error>)?

    public init(_ make: @escaping (SpecSet) throws -> Value) { self.make = make }

    /// The value, or nil when the specs lack what it needs (which `check` reported at the start).
    public func callAsFunction(_ specs: SpecSet) -> Value? { try? result(specs).get() }

    public func check(_ specs: SpecSet) throws { _ = try result(specs).get() }

    private func result(_ specs: SpecSet) -> Result<Value, any Error> {
        lock.withLock {
            if let made, made.specs == ObjectIdentifier(specs) { return made.value }
            let value = Result { try make(specs) }
            made = (ObjectIdentifier(specs), value)
            return value
        }
    }
}
