import CParadice
import ParadiceSystem

/// The regions an ioctl's reply writes into guest memory, as they travel: each a pd_region, its bytes,
/// padding to 8.
public struct WrittenRegions {
    public private(set) var count: UInt32 = 0
    public private(set) var bytes: [UInt8] = []

    public init(reservingCapacity capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func append(address: UInt64, _ data: some Collection<UInt8>) {
        var header = pd_region(address: address, length: UInt32(data.count), reserved: 0)
        withUnsafeBytes(of: &header) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: data)
        while bytes.count % 8 != 0 { bytes.append(0) }
        count += 1
    }

    /// The same for bytes in memory (the engine's call buffers): compiled for them here, where the generic
    /// one, called from another module, appends byte by byte.
    public mutating func append(address: UInt64, _ data: UnsafeRawBufferPointer) {
        var header = pd_region(address: address, length: UInt32(data.count), reserved: 0)
        withUnsafeBytes(of: &header) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: data)
        let padding = (8 - bytes.count % 8) % 8
        if padding > 0 { bytes.append(contentsOf: repeatElement(0, count: padding)) }
        count += 1
    }

    public mutating func append(address: UInt64, _ data: ArraySlice<UInt8>) {
        data.withUnsafeBytes { append(address: address, $0) }
    }
}

extension Reply {
    /// PD_NEED: the regions the call still needs, the out-only ones named (PD_REGION_OUT: no bytes are to
    /// come), the descriptor slots to fill and the mirror ranges to send.
    public static func need(_ request: UInt32, regions: [(address: UInt64, length: Int)], outOnly: [(address: UInt64, length: Int)],
                            slots: [pd_slot], argumentFD: Bool, mappings: [pd_mapping_range]) -> [UInt8] {
        var w = BodyWriter(capacity: MemoryLayout<pd_need>.size + 16 * (regions.count + outOnly.count + slots.count + mappings.count))
        w.append(pd_need(region_count: UInt32(regions.count + outOnly.count), slot_count: UInt32(slots.count),
                         flags: argumentFD ? PD_NEED_ARGUMENT_FD : 0, mapping_count: UInt32(mappings.count)))
        for r in regions { w.append(pd_region(address: r.address, length: UInt32(r.length), reserved: 0)) }
        for r in outOnly { w.append(pd_region(address: r.address, length: UInt32(r.length), reserved: PD_REGION_OUT)) }
        for s in slots { w.append(s) }
        for m in mappings { w.append(m) }
        return w.frame(op: PD_NEED.code, request: request)
    }

    /// An ioctl's PD_REPLY: the result (or -1 and the errno), pd_ioctl_done, the regions written back, the
    /// slots holding new handles, then mirror contents the guest must see.
    public static func ioctl(_ request: UInt32, _ outcome: Result<Int64, Errno>, flags: UInt32, written: WrittenRegions,
                             slots: [pd_slot], mirrors: [(mapping: UInt32, offset: UInt64, bytes: UnsafeRawBufferPointer)]) -> [UInt8] {
        var w = BodyWriter(capacity: 32 + written.bytes.count + 16 * slots.count + mirrors.reduce(0) { $0 + $1.bytes.count + 24 })
        switch outcome {
        case .success(let result): w.append(pd_reply(result: result, error: 0, reserved: 0))
        case .failure(let error): w.append(pd_reply(result: -1, error: error.rawValue, reserved: 0))
        }
        w.append(pd_ioctl_done(region_count: written.count, slot_count: UInt32(slots.count), flags: flags,
                               mapping_count: UInt32(mirrors.count)))
        w.append(bytes: written.bytes)
        for s in slots { w.append(s) }
        for m in mirrors {
            w.append(pd_mapping_range(mapping: m.mapping, length: UInt32(m.bytes.count), offset: m.offset))
            w.append(m.bytes)
            w.pad()
        }
        return w.frame(op: PD_REPLY.code, request: request)
    }
}
