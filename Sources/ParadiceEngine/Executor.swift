#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
import ParadiceWire

/// Makes the system calls of a guest's file requests, through ParadiceSystem, and gives their outcome
/// as the reply carries it. It holds nothing and knows no session, socket or thread: the session decides
/// whether a call may run (its handle, its limits) and on which thread, then sends what this returns.
/// (The split of swift-nio's core and its POSIX I/O.)
enum Executor {
    /// PD_READ and PD_PREAD: the reply, its data read in place by the driver.
    static func read(_ fd: Int32, count: Int, offset: Int64?, request: UInt32) -> [UInt8] {
        Reply.filled(request, capacity: count) { data in
            attempt { () throws(Errno) -> Int in
                if let offset { return try Syscall.pread(fd, data, count, offset) }
                return try Syscall.read(fd, data, count)
            }
        }
    }

    /// PD_WRITE and PD_PWRITE: the bytes the driver took.
    static func write(_ fd: Int32, _ data: ArraySlice<UInt8>, offset: Int64?) -> Result<Int64, Errno> {
        data.withUnsafeBytes { bytes in
            attempt { () throws(Errno) -> Int64 in
                if let offset { return Int64(try Syscall.pwrite(fd, bytes.baseAddress, bytes.count, offset)) }
                return Int64(try Syscall.write(fd, bytes.baseAddress, bytes.count))
            }
        }
    }

    /// PD_POLL: the file's revents, 0 when the timeout passed first.
    static func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int64, Errno> {
        attempt { () throws(Errno) -> Int64 in
            var p = pollfd(fd: fd, events: events, revents: 0)
            return try Syscall.poll(&p, 1, timeoutMilliseconds) > 0 ? Int64(p.revents) : 0
        }
    }

    static func seek(_ fd: Int32, offset: Int64, whence: Int32) -> Result<Int64, Errno> {
        attempt { () throws(Errno) in try Syscall.lseek(fd, offset, whence) }
    }

    static func fsync(_ fd: Int32) -> Result<Int64, Errno> {
        attempt { () throws(Errno) -> Int64 in try Syscall.fsync(fd); return 0 }
    }

    /// What the guest's stat of an open file shows (zeros if fstat fails).
    static func stat(_ fd: Int32, readUnit: Int = 0) -> [UInt8] {
        Reply.stat(attempt { () throws(Errno) in try Syscall.fstat(fd) }, readUnit: readUnit)
    }

    static func open(_ path: String, flags: Int32, mode: UInt32 = 0) -> Result<Int32, Errno> {
        attempt { () throws(Errno) in try Syscall.open(path, flags, mode_t(mode)) }
    }

    /// A link's target, as readlink gives it (at most 4096 bytes).
    static func readLink(_ path: String) -> Result<[UInt8], Errno> {
        attempt { () throws(Errno) in try Syscall.readlink(path, capacity: 4096) }
    }

    /// A directory's entries that `keep` keeps, encoded for PD_LISTDIR; the result is their count.
    static func listDirectory(_ path: String, keeping keep: ([UInt8]) -> Bool) -> (Result<Int64, Errno>, [UInt8]) {
        do throws(Errno) {
            let entries = try Syscall.directoryEntries(path).filter { keep($0.name) }
            return (.success(Int64(entries.count)), Reply.directory(entries))
        } catch {
            return (.failure(error), [])
        }
    }

    /// A shared mapping of a device, readable or writable only (never executable).
    static func map(_ fd: Int32, offset: UInt64, length: Int, protection: Int32) -> Result<UnsafeMutableRawPointer, Errno> {
        attempt { () throws(Errno) in
            try Syscall.mmap(length, protection: protection & (PROT_READ | PROT_WRITE), flags: MAP_SHARED, fd, offset: Int64(offset))
        }
    }
}
