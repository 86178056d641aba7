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
    var nonBlocking: Bool

    init(fd: Int32, path: String, specClass: SpecClass?, state: (any DeviceFileState)?, nonBlocking: Bool) {
        self.fd = fd
        self.path = path
        self.specClass = specClass
        self.state = state
        self.nonBlocking = nonBlocking
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
