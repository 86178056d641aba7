import CParadice

/// PD_IOCTL as its frame says it: the command and argument, the guest regions the frontend sent (with
/// their bytes) or named (out only: the call may write them), and the mirrored mapping bytes an earlier
/// PD_NEED asked for. Every count and length is checked against the frame before anything is sized by it.
public struct IoctlRequest: Sendable {
    public var command: UInt32
    public var argument: UInt64
    /// Guest memory the frontend sent.
    public var gathered: [(address: UInt64, bytes: ArraySlice<UInt8>)]
    /// Guest memory the frontend lets the call write, without its bytes.
    public var named: [(address: UInt64, length: Int)]
    /// Mirror contents, with PD_IOCTL_MAPPINGS; nil without.
    public var mirrored: [MirrorBytes]?
    /// PD_IOCTL_TRANSLATED: descriptors in the regions and the argument are handles already.
    public var translated: Bool
    /// PD_IOCTL_SLOTS_AHEAD: where the frontend says it translated descriptors without being asked; nil without.
    public var slotsAhead: SlotsAhead?

    public struct SlotsAhead: Sendable, Equatable {
        public var slots: [(address: UInt64, width: Int)]
        public var argument: Bool

        public init(slots: [(address: UInt64, width: Int)], argument: Bool) {
            self.slots = slots
            self.argument = argument
        }

        public static func == (a: Self, b: Self) -> Bool {
            a.argument == b.argument && a.slots.elementsEqual(b.slots) { $0.address == $1.address && $0.width == $1.width }
        }
    }

    /// `maxRegions`: a frontend sends at most the regions the backend asked for, a few rounds of a plan's;
    /// many more is no frontend's request (and every planner read would scan them).
    public init(_ frame: Frame, maxRegions: Int) throws(ProtocolError) {
        var reader = BodyReader(frame.body)
        do {
            let request = try reader.read(pd_ioctl.self)
            try reader.expect(Int(request.region_count), of: pd_region.self)
            guard Int(request.region_count) <= maxRegions else {
                throw ProtocolError("\(request.region_count) regions, over \(maxRegions)")
            }
            command = request.command
            argument = request.argument
            gathered = []
            named = []
            gathered.reserveCapacity(Int(request.region_count))
            for _ in 0..<request.region_count {
                let region = try reader.read(pd_region.self)
                if region.reserved & PD_REGION_OUT != 0 { named.append((region.address, Int(region.length))); continue }
                gathered.append((region.address, try reader.readBytes(Int(region.length))))
                reader.skipPadding()
            }
        } catch let error as ProtocolError { throw error } catch { throw ProtocolError("\(error)") }
        mirrored = frame.flags & UInt16(PD_IOCTL_MAPPINGS) != 0 ? try mirrorBytes(&reader, optional: false) : nil
        translated = frame.flags & UInt16(PD_IOCTL_TRANSLATED) != 0
        slotsAhead = nil
        if frame.flags & UInt16(PD_IOCTL_SLOTS_AHEAD) != 0 {
            do {
                let count = try reader.read(pd_slot_count.self)
                try reader.expect(Int(count.count), of: pd_slot.self)
                guard Int(count.count) <= maxRegions else { throw ProtocolError("\(count.count) slots ahead, over \(maxRegions)") }
                var slots: [(address: UInt64, width: Int)] = []
                slots.reserveCapacity(Int(count.count))
                for _ in 0..<count.count {
                    let slot = try reader.read(pd_slot.self)
                    slots.append((slot.address, Int(slot.width)))
                }
                slotsAhead = SlotsAhead(slots: slots, argument: count.flags & PD_NEED_ARGUMENT_FD != 0)
            } catch let error as ProtocolError { throw error } catch { throw ProtocolError("\(error)") }
        }
    }
}
