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
    /// O_NONBLOCK as the descriptor has it, and the reads and writes that may sleep in the driver now. The
    /// file's own state, not a session's: the sessions of forked children share the file and may set it
    /// while another reads it.
    private let statusFlags: LockedValue<(nonBlocking: Bool, sleepingCalls: Int)>
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
        self.statusFlags = LockedValue((nonBlocking, 0))
    }

    /// Whether a read or write returns at once (EAGAIN) rather than sleeping in the driver.
    var nonBlocking: Bool { statusFlags.withLock { $0.nonBlocking } }

    /// How the class's reads may be split (pd_stat.read_unit): 0 for no read-ahead.
    var readUnit: Int { specClass?.readUnit ?? 0 }

    /// A read or write, counted while it may sleep in the driver (the descriptor is blocking as it
    /// starts): a read-ahead does not make the descriptor non-blocking under it (see `readAhead`).
    func sleepingCall<T>(_ body: () -> T) -> T {
        let counted = statusFlags.withLock { state -> Bool in
            if state.nonBlocking { return false }
            state.sleepingCalls += 1
            return true
        }
        defer { if counted { statusFlags.withLock { $0.sleepingCalls -= 1 } } }
        return body()
    }

    /// Up to `count` bytes (whole read units) that the file has now, read without sleeping, or nothing.
    /// A blocking descriptor is made non-blocking for this one read, under the lock that every sleeping
    /// read and write takes to start, and only while none is in the driver: no call of any session sees
    /// the flag change (the device's poll said it is readable, but another reader of the device, a
    /// native process or another open, may have taken the bytes since, so a plain read might sleep).
    func readAhead(_ count: Int) -> [UInt8] {
        let unit = readUnit
        let wanted = unit > 0 ? count / unit * unit : 0
        guard wanted > 0 else { return [] }
        return statusFlags.withLock { flags -> [UInt8] in
            guard flags.nonBlocking || flags.sleepingCalls == 0 else { return [] }
            var restore: Int32?
            if !flags.nonBlocking {
                guard let current = try? Syscall.fcntl(fd, F_GETFL),
                      (try? Syscall.fcntl(fd, F_SETFL, current | O_NONBLOCK)) != nil else { return [] }
                restore = current
            }
            defer { if let restore { _ = try? Syscall.fcntl(fd, F_SETFL, restore) } }
            var bytes = [UInt8](repeating: 0, count: wanted)
            let n = bytes.withUnsafeMutableBytes { (try? Syscall.read(fd, $0.baseAddress!, wanted)) ?? 0 }
            bytes.removeSubrange(max(0, n)...)
            return bytes
        }
    }

    /// F_SETFL of the flags in `settable`: the descriptor and `nonBlocking` change together.
    func setStatusFlags(_ flags: Int32, settable: Int32) -> Result<Void, Errno> {
        statusFlags.withLock { state in
            attempt { () throws(Errno) in
                let current = try Syscall.fcntl(fd, F_GETFL)
                let wanted = (current & ~settable) | (flags & settable)
                _ = try Syscall.fcntl(fd, F_SETFL, wanted)
                state.nonBlocking = wanted & O_NONBLOCK != 0
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
