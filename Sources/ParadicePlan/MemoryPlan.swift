#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec
import ParadiceSystem

/// The guest memory one ioctl call may touch: regions to gather before the call (in), regions to
/// scatter back after it (out), and where pointers and file descriptors sit inside them.
/// It stays in the backend: what travels is the regions it asks for and writes back (PD_NEED, PD_REPLY;
/// docs/protocol.md), so that a frontend needs no spec.
public struct MemoryPlan: Sendable, Equatable {
    public enum Argument: Sendable, Equatable {
        /// The driver gets 0.
        case none
        /// An integer passed unchanged.
        case value(UInt64)
        /// One of the guest's descriptors, passed by value.
        case descriptor(Int32)
        /// A pointer to the first region.
        case region(Int)
        /// A NULL pointer where the ioctl takes one: the driver decides (usually EFAULT).
        case null
    }

    public struct Region: Sendable, Equatable {
        public var address: UInt64
        public var length: Int
        public var direction: Direction
        /// An out region whose copy back may be shorter than the region (a capacity array): its guest
        /// bytes are gathered too, so that what the driver leaves untouched goes back unchanged.
        public var preserve: Bool

        public init(address: UInt64, length: Int, direction: Direction, preserve: Bool = false) {
            self.address = address
            self.length = length
            self.direction = direction
            self.preserve = preserve
        }

        /// The frontend sends these bytes with the request.
        public var gathered: Bool { direction.reads || preserve }
    }

    /// A pointer at `offset` in region `region` that must point at region `target` in the driver's copy.
    public struct PointerSlot: Sendable, Equatable {
        public var region: Int
        public var offset: Int
        public var target: Int
        /// The driver keeps using the target after the call (spec `kept`): it must point at memory that
        /// outlives the call, not at a copy made for it.
        public var kept: Bool

        public init(region: Int, offset: Int, target: Int, kept: Bool = false) {
            self.region = region
            self.offset = offset
            self.target = target
            self.kept = kept
        }
    }

    /// A file descriptor number at `offset` in region `region`.
    public struct DescriptorSlot: Sendable, Equatable {
        public var region: Int
        public var offset: Int
        public var width: Int
        public var direction: Direction

        public init(region: Int, offset: Int, width: Int, direction: Direction) {
            self.region = region
            self.offset = offset
            self.width = width
            self.direction = direction
        }
    }

    public var command: UInt32
    public var ioctl: String
    public var argument: Argument
    public var regions: [Region] = []
    public var pointers: [PointerSlot] = []
    public var descriptors: [DescriptorSlot] = []
    public var returnsDescriptor = false
    public var blocking = false

    public var inputBytes: Int { regions.filter { $0.direction.reads }.reduce(0) { $0 + $1.length } }
    public var outputBytes: Int { regions.filter { $0.direction.writes }.reduce(0) { $0 + $1.length } }
}

/// Why a plan could not be made. Each case maps to the errno a guest sees.
public enum PlanError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Guest memory that the plan needs is not readable: EFAULT.
    case fault(address: UInt64, length: Int)
    /// The planner needs guest bytes it has not been given yet (the engine fetches them and retries).
    case missing(address: UInt64, length: Int)
    /// The spec has no such command for this class: ENOTTY.
    case unknownCommand(UInt32)
    /// The argument breaks a cap or a value check, or a plug-in refuses it.
    case rejected(errno: Errno, message: String)

    /// The errno the guest's call fails with.
    public var errno: Errno {
        switch self {
        case .fault, .missing: return .badAddress
        case .unknownCommand: return .inappropriateIOCTLForDevice
        case .rejected(let e, _): return e
        }
    }

    public var description: String {
        switch self {
        case .fault(let a, let l): return "guest memory 0x\(String(a, radix: 16)) (+\(l)) is not readable"
        case .missing(let a, let l): return "needs guest memory 0x\(String(a, radix: 16)) (+\(l))"
        case .unknownCommand(let c): return "no spec for ioctl 0x\(String(c, radix: 16))"
        case .rejected(_, let m): return m
        }
    }
}

/// Reads guest memory while a plan is made (the frontend's own memory, or a backend's snapshot of it).
public protocol GuestMemory {
    func read(address: UInt64, count: Int) throws -> [UInt8]
}

/// Values that a class plug-in keeps per open file and specs read as `$name` or `$name(args)`.
public protocol PlanVariables {
    /// The value, or nil when the plug-in does not know the name. A plug-in may throw
    /// `PlanError.rejected` with the errno its driver would give (as a spec `state` does while unset).
    func value(of name: String, arguments: [Int64]) throws -> Int64?
}

/// Caps that apply where a spec says nothing.
public struct PlanLimits: Sendable {
    public var elementsPerPointer = 4096
    public var bytesPerPointer = 16 << 20
    public var bytesPerCall = 64 << 20
    public var regionsPerCall = 1024
    public var listNodes = 16

    public init() {}
}
