import CParadice
#if canImport(Glibc)
import Glibc
#endif

/// Guest bytes the backend has been sent: planning asks for anything else.
public struct SnapshotMemory: GuestMemory {
    public var regions: [(address: UInt64, bytes: [UInt8])]

    public init(_ regions: [(address: UInt64, bytes: [UInt8])] = []) { self.regions = regions }

    public func read(address: UInt64, count: Int) throws -> [UInt8] {
        for r in regions where address >= r.address {
            let start = Int(address - r.address)
            if start + count <= r.bytes.count { return Array(r.bytes[start..<(start + count)]) }
        }
        throw PlanError.missing(address: address, length: count)
    }
}

/// This process's own memory, read with process_vm_readv so that a bad guest pointer is EFAULT,
/// never a crash.
public struct LocalMemory: GuestMemory {
    public init() {}

    public func read(address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { buffer in
            paradice_read_process(getpid(), buffer.baseAddress, UInt(address), count)
        }
        guard n == count else { throw PlanError.fault(address: address, length: count) }
        return bytes
    }
}
