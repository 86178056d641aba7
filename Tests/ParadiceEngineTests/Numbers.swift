/// Ioctl numbers the tests use (x86-64), checked against the specs by `paradice spec verify`.
enum Ioctl {
    static let TCGETS: UInt32 = 0x5401
    static let TCSETS: UInt32 = 0x5402
    static let TIOCGWINSZ: UInt32 = 0x5413
    static let TIOCSWINSZ: UInt32 = 0x5414
    static let FIONREAD: UInt32 = 0x541B
    static let TIOCGPTN: UInt32 = 0x8004_5430
    static let TIOCSPTLCK: UInt32 = 0x4004_5431
    static let TUNSETIFF: UInt32 = 0x4004_54ca
    static let TUNGETIFF: UInt32 = 0x8004_54d2
    static let KVM_GET_API_VERSION: UInt32 = 0xAE00
    static let KVM_CREATE_VM: UInt32 = 0xAE01
    static let KVM_CHECK_EXTENSION: UInt32 = 0xAE03
    static let KVM_GET_SUPPORTED_CPUID: UInt32 = 0xC008_AE05
    static let KVM_SET_USER_MEMORY_REGION: UInt32 = 0x4020_AE46
    static let LOOP_CTL_GET_FREE: UInt32 = 0x4C82
    static let LOOP_GET_STATUS64: UInt32 = 0x4C05
}
