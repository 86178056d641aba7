import ParadiceSpec

/// The ioctl numbers the tests use, looked up in the repository's compiled specs, so that no number is
/// written twice: the header-verification test (ParadiceSpecTests) and `paradice spec verify` check every
/// spec number against the C headers.
enum Ioctl {
    static let TCGETS = number("TCGETS")
    static let TCSETS = number("TCSETS")
    static let TIOCGWINSZ = number("TIOCGWINSZ")
    static let TIOCSWINSZ = number("TIOCSWINSZ")
    static let FIONREAD = number("FIONREAD")
    static let TIOCGPTN = number("TIOCGPTN")
    static let TIOCSPTLCK = number("TIOCSPTLCK")
    static let TUNSETIFF = number("TUNSETIFF")
    static let TUNGETIFF = number("TUNGETIFF")
    static let KVM_GET_API_VERSION = number("KVM_GET_API_VERSION")
    static let KVM_CREATE_VM = number("KVM_CREATE_VM")
    static let KVM_CHECK_EXTENSION = number("KVM_CHECK_EXTENSION")
    static let KVM_IRQFD = number("KVM_IRQFD")
    static let KVM_GET_SUPPORTED_CPUID = number("KVM_GET_SUPPORTED_CPUID")
    static let KVM_SET_USER_MEMORY_REGION = number("KVM_SET_USER_MEMORY_REGION")
    static let LOOP_CTL_GET_FREE = number("LOOP_CTL_GET_FREE")
    static let LOOP_GET_STATUS64 = number("LOOP_GET_STATUS64")

    private static let specs: SpecSet = {
        do {
            return try SpecSet.load(directory: repositorySpecFolder)
        } catch {
            fatalError("the repository specs do not compile:\n\(error)")
        }
    }()

    /// The command number of a plain ioctl (not a family) of the specs; a name they lack stops the tests.
    private static func number(_ name: String) -> UInt32 {
        guard let ioctl = specs.ioctl(named: name), !ioctl.isFamily,
              let number = try? ioctl.command(in: specs, parameters: [:])
        else { fatalError("no plain ioctl \(name) in \(repositorySpecFolder)") }
        return number
    }
}
