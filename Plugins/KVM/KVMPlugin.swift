import ParadiceEngine

/// KVM: what kvm.h's spec cannot say, which is nothing yet: a vcpu's kvm_run page goes to the device and
/// back around KVM_RUN by the spec's `sync` clause. The plug-in stays registered so that the spec's
/// `plugin kvm` names it (and `$dirty_bitmap_bytes` has a home when KVM_GET_DIRTY_LOG needs one).
public final class KVMPlugin: DevicePlugin {
    public static let name = "kvm"

    public init() {}

    public func state(for file: DeviceFile) -> (any DeviceFileState)? { nil }
}
