#if canImport(Glibc)
import Glibc
#endif

/// An error number, as the kernel (or a driver) gave it and as it travels on the wire. Named constants
/// for the errnos the project answers with or acts on; any other value is kept as it came.
@frozen
public struct Errno: RawRepresentable, Error, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno, as the last failed call left it.
    @inlinable public static var current: Errno { Errno(rawValue: Glibc.errno) }

    /// strerror's text and the number: "Bad file descriptor (errno 9)".
    public var description: String { "\(String(cString: strerror(rawValue))) (errno \(rawValue))" }

    public static let notPermitted = Errno(EPERM)
    public static let noSuchFileOrDirectory = Errno(ENOENT)
    public static let interrupted = Errno(EINTR)
    public static let ioError = Errno(EIO)
    public static let noSuchAddressOrDevice = Errno(ENXIO)
    public static let argListTooLong = Errno(E2BIG)
    public static let badFileDescriptor = Errno(EBADF)
    /// EAGAIN (EWOULDBLOCK): try again; the kernel's answer for a resource a caller holds too much of.
    public static let resourceTemporarilyUnavailable = Errno(EAGAIN)
    public static let wouldBlock = resourceTemporarilyUnavailable
    public static let noMemory = Errno(ENOMEM)
    public static let permissionDenied = Errno(EACCES)
    public static let badAddress = Errno(EFAULT)
    public static let resourceBusy = Errno(EBUSY)
    public static let fileExists = Errno(EEXIST)
    public static let noSuchDevice = Errno(ENODEV)
    public static let notDirectory = Errno(ENOTDIR)
    public static let isDirectory = Errno(EISDIR)
    public static let invalidArgument = Errno(EINVAL)
    public static let tooManyOpenFiles = Errno(EMFILE)
    public static let inappropriateIOCTLForDevice = Errno(ENOTTY)
    public static let noSpace = Errno(ENOSPC)
    public static let illegalSeek = Errno(ESPIPE)
    public static let readOnlyFileSystem = Errno(EROFS)
    public static let brokenPipe = Errno(EPIPE)
    public static let outOfRange = Errno(ERANGE)
    public static let fileNameTooLong = Errno(ENAMETOOLONG)
    public static let noFunction = Errno(ENOSYS)
    public static let protocolError = Errno(EPROTO)
    public static let overflow = Errno(EOVERFLOW)
    /// EBADFD: a descriptor in a bad state (a file whose device went away).
    public static let fileDescriptorInBadState = Errno(EBADFD)
    public static let tooManyUsers = Errno(EUSERS)
    public static let notSocket = Errno(ENOTSOCK)
    public static let protocolNotSupported = Errno(EPROTONOSUPPORT)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let addressInUse = Errno(EADDRINUSE)
    public static let addressNotAvailable = Errno(EADDRNOTAVAIL)
    public static let connectionAbort = Errno(ECONNABORTED)
    public static let connectionReset = Errno(ECONNRESET)
    public static let socketNotConnected = Errno(ENOTCONN)
    public static let timedOut = Errno(ETIMEDOUT)
    public static let connectionRefused = Errno(ECONNREFUSED)
}
