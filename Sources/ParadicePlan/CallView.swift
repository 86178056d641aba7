import ParadiceSpec

/// A call as a plug-in reads it: its plan, and each region's bytes — the guest's before the call, the
/// driver's answer after it. Read-only: what a plug-in wants the guest to see instead, it returns as edits.
public struct CallView: Sendable {
    public let call: PlannedCall
    /// One buffer per region of `call.plan`.
    public let bytes: [[UInt8]]

    public init(_ call: PlannedCall, bytes: [[UInt8]]) {
        self.call = call
        self.bytes = bytes
    }

    public var plan: MemoryPlan { call.plan }

    /// An integer of a region's bytes, or nil outside them.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, region: Int = 0) -> T? {
        guard bytes.indices.contains(region), offset >= 0, offset <= bytes[region].count - MemoryLayout<T>.size else { return nil }
        return bytes[region].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }

    /// The region that the pointer at `offset` of region `region` was followed to, or nil when the plan did
    /// not follow one there (NULL, or a union member that is not the live one).
    public func target(ofPointerAt offset: Int, region: Int = 0) -> Int? {
        guard let slot = plan.pointers.first(where: { $0.region == region && $0.offset == offset }),
              bytes.indices.contains(slot.target) else { return nil }
        return slot.target
    }
}

extension CallView {
    /// A field of a region's struct (element `index` of an array field), or nil outside the region.
    public func load<T>(_ field: SpecField<T>, index: Int = 0, region: Int = 0) -> T? {
        load(T.self, at: field.offset(ofElement: index), region: region)
    }
}
