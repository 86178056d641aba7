#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec

/// A file a guest opened through the backend. The descriptor closes when the last user lets go, so a
/// worker still inside a driver call keeps it valid after the guest's close.
final class OpenFile: @unchecked Sendable {
    let fd: Int32
    let path: String
    let specClass: SpecClass?
    let state: (any DeviceFileState)?
    /// O_NONBLOCK as the descriptor has it. The file's own state, not a session's: the sessions of forked
    /// children share the file and may set it while another reads it.
    private let statusFlags: LockedValue<Bool>

    init(fd: Int32, path: String, specClass: SpecClass?, state: (any DeviceFileState)?, nonBlocking: Bool) {
        self.fd = fd
        self.path = path
        self.specClass = specClass
        self.state = state
        self.statusFlags = LockedValue(nonBlocking)
    }

    /// Whether a read or write returns at once (EAGAIN) rather than sleeping in the driver.
    var nonBlocking: Bool { statusFlags.withLock { $0 } }

    /// F_SETFL of the flags in `settable`: the descriptor and `nonBlocking` change together. Returns
    /// fcntl's result and errno.
    func setStatusFlags(_ flags: Int32, settable: Int32) -> (result: Int32, error: Int32) {
        statusFlags.withLock { nonBlocking in
            let current = fcntl(fd, F_GETFL)
            guard current >= 0 else { return (current, errno) }
            let wanted = (current & ~settable) | (flags & settable)
            guard fcntl(fd, F_SETFL, wanted) == 0 else { return (-1, errno) }
            nonBlocking = wanted & O_NONBLOCK != 0
            return (0, 0)
        }
    }

    deinit { close(fd) }
}

/// A device mapping the backend holds for a guest that keeps a mirror of it.
final class DeviceMapping: @unchecked Sendable {
    let file: OpenFile
    let address: UnsafeMutableRawPointer
    let length: Int
    let deviceOffset: UInt64

    init(file: OpenFile, address: UnsafeMutableRawPointer, length: Int, deviceOffset: UInt64) {
        self.file = file
        self.address = address
        self.length = length
        self.deviceOffset = deviceOffset
    }

    deinit { munmap(address, length) }
}
