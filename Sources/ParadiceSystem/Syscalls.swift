#if canImport(Glibc)
import Glibc
#endif
import CParadice

// The raw system calls of the engine and the transports, each behind one wrapper that turns the C
// convention (-1 and the thread's errno) into `throws(Errno)`.
//
// EINTR, the policy in one place: every wrapper takes `retryOnInterrupt`, and its default says what
// the project does.
// - Calls on a guest's files (open, read, write, pread, pwrite, ioctl, poll, lseek, fsync, fcntl, mmap)
//   are never repeated: the only signal the backend sends itself (`SIGUSR1`, installed without
//   SA_RESTART) interrupts a worker whose guest went away, and the call must return so that the worker
//   can; a driver's own EINTR (KVM_RUN's immediate_exit, a signal the guest asked for) is the guest's
//   answer, passed on as a local call would give it.
// - Socket I/O of the transports (send, recv, accept) is repeated: an EINTR there is nobody's answer,
//   and a frame half sent or half received cannot be abandoned.
// - close is never repeated: on Linux the descriptor is gone even when close reports EINTR, and a second
//   close could hit a number another thread has just been given.
// - connect is not repeated: after EINTR the connection goes on in the background and a second call
//   would fail with EALREADY.

/// Runs `call` until it succeeds or fails with anything but EINTR (when `retryOnInterrupt`); a negative
/// result is a failure with the thread's errno, read at once.
@inlinable @inline(__always)
public func valueOrErrno<I: FixedWidthInteger & SignedInteger>(retryOnInterrupt: Bool, _ call: () -> I) -> Result<I, Errno> {
    while true {
        let value = call()
        if value >= 0 { return .success(value) }
        let error = Errno.current
        if retryOnInterrupt && error == .interrupted { continue }
        return .failure(error)
    }
}

/// `valueOrErrno` for calls whose only success value is 0.
@inlinable @inline(__always)
public func nothingOrErrno<I: FixedWidthInteger & SignedInteger>(retryOnInterrupt: Bool, _ call: () -> I) -> Result<Void, Errno> {
    valueOrErrno(retryOnInterrupt: retryOnInterrupt, call).map { _ in () }
}

/// The outcome of calls that throw an Errno, as a value (for a reply that carries either).
@inlinable @inline(__always)
public func attempt<T>(_ body: () throws(Errno) -> T) -> Result<T, Errno> {
    do throws(Errno) { return .success(try body()) } catch { return .failure(error) }
}

/// The wrappers, as `Syscall.read(fd, …)`: the names are the C calls', so that what runs is plain.
public enum Syscall {
    // MARK: files

    @inlinable
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0, retryOnInterrupt: Bool = false) throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.open(path, flags, mode) }.get()
    }

    /// Never repeated (see the top of this file).
    @inlinable
    public static func close(_ fd: Int32) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.close(fd) }.get()
    }

    @inlinable
    public static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, retryOnInterrupt: Bool = false) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.read(fd, buffer, count) }.get()
    }

    @inlinable
    public static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int64,
                             retryOnInterrupt: Bool = false) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.pread(fd, buffer, count, off_t(offset)) }.get()
    }

    @inlinable
    public static func write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, retryOnInterrupt: Bool = false) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.write(fd, buffer, count) }.get()
    }

    @inlinable
    public static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ offset: Int64,
                              retryOnInterrupt: Bool = false) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.pwrite(fd, buffer, count, off_t(offset)) }.get()
    }

    /// How many of `fds` have events (0 when the timeout passed).
    @inlinable
    public static func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMilliseconds: Int32,
                            retryOnInterrupt: Bool = false) throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.poll(fds, nfds_t(count), timeoutMilliseconds) }.get()
    }

    @inlinable
    public static func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32, retryOnInterrupt: Bool = false) throws(Errno) -> Int64 {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Int64(Glibc.lseek(fd, off_t(offset), whence)) }.get()
    }

    @inlinable
    public static func fsync(_ fd: Int32, retryOnInterrupt: Bool = false) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.fsync(fd) }.get()
    }

    /// fcntl without an argument (F_GETFL, F_GETFD).
    @inlinable
    public static func fcntl(_ fd: Int32, _ command: Int32, retryOnInterrupt: Bool = false) throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.fcntl(fd, command) }.get()
    }

    /// fcntl with an integer argument (F_SETFL, F_SETFD).
    @inlinable
    public static func fcntl(_ fd: Int32, _ command: Int32, _ value: Int32, retryOnInterrupt: Bool = false) throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.fcntl(fd, command, value) }.get()
    }

    /// An ioctl whose argument is memory (or none: nil). Returns the driver's non-negative result.
    @inlinable
    public static func ioctl(_ fd: Int32, _ number: UInt, _ pointer: UnsafeMutableRawPointer?,
                             retryOnInterrupt: Bool = false) throws(Errno) -> Int32 {
        try ioctl(fd, number, value: UInt(bitPattern: pointer), retryOnInterrupt: retryOnInterrupt)
    }

    /// An ioctl whose argument is an integer (a value, a descriptor, or an address already made one).
    @inlinable
    public static func ioctl(_ fd: Int32, _ number: UInt, value: UInt, retryOnInterrupt: Bool = false) throws(Errno) -> Int32 {
        // The kernel's ioctl returns an int; the C wrapper's long only carries it.
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Int32(truncatingIfNeeded: paradice_ioctl(fd, number, value)) }.get()
    }

    @inlinable
    public static func fstat(_ fd: Int32) throws(Errno) -> Glibc.stat {
        var st = Glibc.stat()
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.fstat(fd, &st) }.get()
        return st
    }

    @inlinable
    public static func stat(_ path: String) throws(Errno) -> Glibc.stat {
        var st = Glibc.stat()
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.fstatat(AT_FDCWD, path, &st, 0) }.get()   // stat(2): the name is the struct's in Swift
        return st
    }

    /// The target of the link at `path` (at most `capacity` bytes of it, as readlink truncates).
    public static func readlink(_ path: String, capacity: Int = 4096) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: capacity)
        let n = try valueOrErrno(retryOnInterrupt: false) {
            buffer.withUnsafeMutableBytes { Glibc.readlink(path, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        }.get()
        return Array(buffer[0..<n])
    }

    /// The absolute path with every link resolved.
    public static func realpath(_ path: String) throws(Errno) -> String {
        guard let real = Glibc.realpath(path, nil) else { throw Errno.current }
        defer { free(real) }
        return String(cString: real)
    }

    /// The entries of a directory, `.` and `..` included, in the order readdir gives them.
    public static func directoryEntries(_ path: String) throws(Errno) -> [(name: [UInt8], type: UInt8)] {
        guard let directory = opendir(path) else { throw Errno.current }
        defer { closedir(directory) }
        var entries: [(name: [UInt8], type: UInt8)] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            entries.append((name, entry.pointee.d_type))
        }
        return entries
    }

    @inlinable
    public static func unlink(_ path: String) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.unlink(path) }.get()
    }

    /// eventfd(0, EFD_CLOEXEC): a wake-up channel for poll loops.
    @inlinable
    public static func eventfd() throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: false) { paradice_eventfd() }.get()
    }

    // MARK: memory

    /// A mapping of `length` bytes of `fd` at `offset`.
    @inlinable
    public static func mmap(_ length: Int, protection: Int32, flags: Int32, _ fd: Int32, offset: Int64) throws(Errno) -> UnsafeMutableRawPointer {
        guard let address = Glibc.mmap(nil, length, protection, flags, fd, off_t(offset)), address != MAP_FAILED else {
            throw Errno.current
        }
        return address
    }

    @inlinable
    public static func munmap(_ address: UnsafeMutableRawPointer, _ length: Int) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.munmap(address, length) }.get()
    }

    // MARK: sockets

    @inlinable
    public static func socket(_ domain: Int32, _ type: Int32, _ protocol: Int32 = 0) throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: false) { Glibc.socket(domain, type, `protocol`) }.get()
    }

    /// A connected pair of unix sockets.
    @inlinable
    public static func socketpair(_ domain: Int32, _ type: Int32, _ protocol: Int32 = 0) throws(Errno) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.socketpair(domain, type, `protocol`, &fds) }.get()
        return (fds[0], fds[1])
    }

    /// Never repeated (see the top of this file).
    @inlinable
    public static func connect(_ fd: Int32, _ address: UnsafeRawBufferPointer) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) {
            Glibc.connect(fd, address.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
        }.get()
    }

    @inlinable
    public static func bind(_ fd: Int32, _ address: UnsafeRawBufferPointer) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) {
            Glibc.bind(fd, address.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
        }.get()
    }

    @inlinable
    public static func listen(_ fd: Int32, backlog: Int32) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.listen(fd, backlog) }.get()
    }

    /// accept4 with SOCK_CLOEXEC, filling the peer's address and its length.
    @inlinable
    public static func accept(_ fd: Int32, _ address: UnsafeMutableRawPointer, _ length: inout UInt32,
                              retryOnInterrupt: Bool = true) throws(Errno) -> Int32 {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { paradice_accept(fd, address, &length) }.get()
    }

    @inlinable
    public static func send(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, flags: Int32,
                            retryOnInterrupt: Bool = true) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.send(fd, buffer, count, flags) }.get()
    }

    /// The bytes received; 0 at the end of the stream.
    @inlinable
    public static func recv(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, flags: Int32 = 0,
                            retryOnInterrupt: Bool = true) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: retryOnInterrupt) { Glibc.recv(fd, buffer, count, flags) }.get()
    }

    /// recv, spinning first on non-blocking receives as `spin` learned (paradice_spin.h), then blocking.
    @inlinable
    public static func recv(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int,
                            spinning spin: UnsafeMutablePointer<paradice_spin>) throws(Errno) -> Int {
        try valueOrErrno(retryOnInterrupt: true) { paradice_recv_spinning(fd, buffer, UInt(count), nil, spin) }.get()
    }

    /// Every byte of `buffer` with `descriptor` attached (SCM_RIGHTS), in one sendmsg.
    @inlinable
    public static func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, passing descriptor: Int32) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) { paradice_send_with_descriptor(fd, buffer.baseAddress, buffer.count, descriptor) }.get()
    }

    @inlinable
    public static func shutdown(_ fd: Int32, _ how: Int32) throws(Errno) {
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.shutdown(fd, how) }.get()
    }

    @inlinable
    public static func setsockopt<T: BitwiseCopyable>(_ fd: Int32, _ level: Int32, _ option: Int32, _ value: T) throws(Errno) {
        var value = value
        try nothingOrErrno(retryOnInterrupt: false) {
            Glibc.setsockopt(fd, level, option, &value, socklen_t(MemoryLayout<T>.size))
        }.get()
    }

    /// The socket's own address, in `storage`; returns its length.
    @inlinable
    public static func getsockname(_ fd: Int32, _ storage: inout sockaddr_storage) throws(Errno) -> socklen_t {
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try nothingOrErrno(retryOnInterrupt: false) {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.getsockname(fd, $0, &length) }
            }
        }.get()
        return length
    }
}
