#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec
import ParadiceSystem

/// A file a guest opened through the backend. The descriptor closes when the last user lets go, so a
/// worker still inside a driver call keeps it valid after the guest's close.
final class OpenFile: @unchecked Sendable {
    let fd: Int32
    let path: String
    let specClass: SpecClass?
    let state: (any DeviceFileState)?
    /// What the file remembers between calls (the spec's `state`s), one slot per state its class declares.
    let states: FileStates
    /// O_NONBLOCK as the descriptor has it. The file's own state, not a session's: the sessions of forked
    /// children share the file and may set it while another reads it.
    private let statusFlags: LockedValue<Bool>
    /// Its hold on an exclusive export, or its place among a foreground export's files.
    let sharing: SharingClaim?

    init(fd: Int32, path: String, specClass: SpecClass?, state: (any DeviceFileState)?, nonBlocking: Bool,
         sharing: SharingClaim? = nil) {
        self.fd = fd
        self.sharing = sharing
        self.path = path
        self.specClass = specClass
        self.state = state
        self.states = FileStates(specClass, path: path)
        self.statusFlags = LockedValue(nonBlocking)
    }

    /// Whether a read or write returns at once (EAGAIN) rather than sleeping in the driver.
    var nonBlocking: Bool { statusFlags.withLock { $0 } }

    /// F_SETFL of the flags in `settable`: the descriptor and `nonBlocking` change together.
    func setStatusFlags(_ flags: Int32, settable: Int32) -> Result<Void, Errno> {
        statusFlags.withLock { nonBlocking in
            attempt { () throws(Errno) in
                let current = try Syscall.fcntl(fd, F_GETFL)
                let wanted = (current & ~settable) | (flags & settable)
                _ = try Syscall.fcntl(fd, F_SETFL, wanted)
                nonBlocking = wanted & O_NONBLOCK != 0
            }
        }
    }

    deinit {
        sharing?.release()   // first: no foreground switch may use the descriptor once it closes
        state?.willClose()
        try? Syscall.close(fd)
    }
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

    deinit { try? Syscall.munmap(address, length) }
}
