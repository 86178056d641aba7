#if canImport(Glibc)
import Glibc
#endif

/// A failed operation, with the errno the device (or the connection) gave.
public struct Errno: Error, Sendable, Equatable, CustomStringConvertible {
    public var rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    public var description: String { "errno \(rawValue): \(String(cString: strerror(rawValue)))" }

    public static let badFileDescriptor = Errno(EBADF)
    public static let fault = Errno(EFAULT)
    public static let io = Errno(EIO)
    public static let notTTY = Errno(ENOTTY)
}
