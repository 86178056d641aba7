import ParadiceEngine
import ParadicePlan

/// KVM: a vcpu's state travels in its mmap'd kvm_run page, not in KVM_RUN's argument. Around KVM_RUN
/// that page goes to the device and back, so a guest whose backend is on another machine (a mirror,
/// not a shared mapping) sees what it would see locally.
public final class KVMPlugin: DevicePlugin {
    public static let name = "kvm"

    private let ioctls = SpecDerived { IoctlKinds<KVMIoctl>($0) }

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { ioctls(file.specs).map(KVMFile.init) }
}

enum KVMIoctl: String, CaseIterable, Sendable {
    case run = "KVM_RUN"
}

final class KVMFile: DeviceFileState {
    let ioctls: IoctlKinds<KVMIoctl>

    init(ioctls: IoctlKinds<KVMIoctl>) { self.ioctls = ioctls }

    /// The whole of whatever the guest mapped: kvm_run and the pages after it (the PIO data page).
    private static let everything: [Range<UInt64>] = [0..<(1 << 24)]

    func value(of name: String, arguments: [Int64]) throws -> Int64? { nil }

    func mappedToDevice(before call: CallView) -> [Range<UInt64>] {
        ioctls(call) == .run ? Self.everything : []
    }

    func mappedToGuest(after call: CallView, result: Int64) -> [Range<UInt64>] {
        ioctls(call) == .run ? Self.everything : []
    }
}
