#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
import Testing

private let TIOCGWINSZ: UInt = 0x5413
private let TIOCSWINSZ: UInt = 0x5414
private let TIOCGPTN: UInt = 0x8004_5430
private let TIOCSPTLCK: UInt = 0x4004_5431

/// Expects `body` to fail with `expected`.
private func expectErrno(_ expected: Errno, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("succeeded, expected \(expected)", sourceLocation: sourceLocation)
    } catch {
        #expect(error as? Errno == expected, sourceLocation: sourceLocation)
    }
}

private func pipe() throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    guard Glibc.pipe(&fds) == 0 else { throw Errno.current }
    return (fds[0], fds[1])
}

@Suite("Errno")
struct ErrnoTests {
    @Test func namedConstantsAreTheKernelsNumbers() {
        #expect(Errno.badFileDescriptor.rawValue == EBADF)
        #expect(Errno.inappropriateIOCTLForDevice.rawValue == ENOTTY)
        #expect(Errno.wouldBlock == Errno.resourceTemporarilyUnavailable)
        #expect(Errno(ENOMEM) == .noMemory)
        #expect(Errno(rawValue: 9999).rawValue == 9999)   // one without a name is kept as it came
    }

    @Test func describesItselfWithStrerror() {
        #expect(Errno.badFileDescriptor.description == "\(String(cString: strerror(EBADF))) (errno \(EBADF))")
        #expect(Errno.inappropriateIOCTLForDevice.description.contains("ioctl"))
    }
}

@Suite("Syscalls against real files")
struct SyscallTests {
    @Test func devNullReadsNothingAndTakesEverything() throws {
        let fd = try Syscall.open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { try? Syscall.close(fd) }
        var bytes: [UInt8] = [1, 2, 3]
        #expect(try Syscall.write(fd, &bytes, 3) == 3)
        #expect(try Syscall.pwrite(fd, &bytes, 3, 100) == 3)
        #expect(try Syscall.read(fd, &bytes, 3) == 0)
        #expect(try Syscall.pread(fd, &bytes, 3, 7) == 0)
        #expect(try Syscall.lseek(fd, 0, SEEK_SET) == 0)
        #expect(try Syscall.fstat(fd).st_mode & S_IFMT == S_IFCHR)
        #expect(try Syscall.fcntl(fd, F_GETFL) & O_ACCMODE == O_RDWR)
        // No terminal: the driver's answer is ENOTTY, as a thrown Errno.
        var size = winsize()
        expectErrno(.inappropriateIOCTLForDevice) { _ = try Syscall.ioctl(fd, TIOCGWINSZ, &size) }
    }

    /// Numbers that are no descriptor (a closed one could be reused at once by a test running alongside).
    @Test func noDescriptorIsEBADF() throws {
        let fd = Int32.max
        var byte: UInt8 = 0
        expectErrno(.badFileDescriptor) { _ = try Syscall.read(fd, &byte, 1) }
        expectErrno(.badFileDescriptor) { try Syscall.close(fd) }
        expectErrno(.badFileDescriptor) { _ = try Syscall.ioctl(fd, TIOCGWINSZ, value: 0) }
        expectErrno(.badFileDescriptor) { try Syscall.fsync(-1) }
        expectErrno(.noSuchFileOrDirectory) { _ = try Syscall.open("/nonexistent/paradice", O_RDONLY) }
    }

    @Test func aPipeIsNotSeekableAndWouldBlockWhenEmpty() throws {
        let (r, w) = try pipe()
        defer { try? Syscall.close(r); try? Syscall.close(w) }
        expectErrno(.illegalSeek) { _ = try Syscall.lseek(r, 0, SEEK_CUR) }
        let flags = try Syscall.fcntl(r, F_GETFL)
        _ = try Syscall.fcntl(r, F_SETFL, flags | O_NONBLOCK)
        var byte: UInt8 = 0
        expectErrno(.wouldBlock) { _ = try Syscall.read(r, &byte, 1) }
        var fds = [pollfd(fd: r, events: Int16(POLLIN), revents: 0)]
        #expect(try Syscall.poll(&fds, 1, 0) == 0)
        byte = 42
        #expect(try Syscall.write(w, &byte, 1) == 1)
        #expect(try Syscall.poll(&fds, 1, 0) == 1)
        #expect(fds[0].revents & Int16(POLLIN) != 0)
        byte = 0
        #expect(try Syscall.read(r, &byte, 1) == 1)
        #expect(byte == 42)
    }

    @Test func ptyIoctlsThroughPointers() throws {
        let master = try Syscall.open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        defer { try? Syscall.close(master) }
        var number: UInt32 = 0
        #expect(try Syscall.ioctl(master, TIOCGPTN, &number) == 0)
        var unlock: Int32 = 0
        #expect(try Syscall.ioctl(master, TIOCSPTLCK, &unlock) == 0)
        var size = winsize(ws_row: 33, ws_col: 77, ws_xpixel: 0, ws_ypixel: 0)
        #expect(try Syscall.ioctl(master, TIOCSWINSZ, &size) == 0)
        let slave = try Syscall.open("/dev/pts/\(number)", O_RDWR | O_NOCTTY | O_CLOEXEC)
        defer { try? Syscall.close(slave) }
        var seen = winsize()
        #expect(try Syscall.ioctl(slave, TIOCGWINSZ, &seen) == 0)
        #expect(seen.ws_row == 33 && seen.ws_col == 77)
        // An ioctl the tty layer does not know.
        expectErrno(.inappropriateIOCTLForDevice) { _ = try Syscall.ioctl(master, 0x5401_00FF, value: 0) }
    }

    @Test func mapsAndUnmapsAFile() throws {
        var template = Array("/tmp/paradice-syscalls-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        try #require(fd >= 0)
        defer { unlink(template); try? Syscall.close(fd) }
        var bytes: [UInt8] = Array("paradice".utf8)
        #expect(try Syscall.pwrite(fd, &bytes, bytes.count, 0) == bytes.count)
        let address = try Syscall.mmap(4096, protection: PROT_READ, flags: MAP_SHARED, fd, offset: 0)
        #expect(Array(UnsafeRawBufferPointer(start: address, count: 8)) == bytes)
        try Syscall.munmap(address, 4096)
        expectErrno(.invalidArgument) { _ = try Syscall.mmap(0, protection: PROT_READ, flags: MAP_SHARED, fd, offset: 0) }
        expectErrno(.badFileDescriptor) { _ = try Syscall.mmap(4096, protection: PROT_READ, flags: MAP_SHARED, -1, offset: 0) }
    }

    @Test func socketPairCarriesBytesAndADescriptor() throws {
        let (a, b) = try Syscall.socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
        defer { try? Syscall.close(a); try? Syscall.close(b) }
        var bytes: [UInt8] = [7, 8, 9]
        #expect(try Syscall.send(a, &bytes, 3, flags: Int32(MSG_NOSIGNAL)) == 3)
        var got = [UInt8](repeating: 0, count: 3)
        #expect(try Syscall.recv(b, &got, 3) == 3)
        #expect(got == bytes)
        try Syscall.shutdown(a, Int32(SHUT_WR))
        #expect(try Syscall.recv(b, &got, 3) == 0)   // end of stream
        expectErrno(.brokenPipe) { _ = try Syscall.send(a, &bytes, 3, flags: Int32(MSG_NOSIGNAL)) }
        let event = try Syscall.eventfd()
        defer { try? Syscall.close(event) }
        expectErrno(.notSocket) { try Syscall.shutdown(event, Int32(SHUT_RDWR)) }
    }
}

/// A thread blocked in a read, interrupted by a signal whose handler has no SA_RESTART: the wrapper returns
/// EINTR unless told to retry. The signal is sent until the read has returned (the test never guesses when
/// the thread is asleep).
@Suite("Syscalls and EINTR", .serialized)
struct InterruptTests {
    static let signal = SIGUSR2

    init() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(Self.signal, &action, nil)
    }

    final class Reader: @unchecked Sendable {
        var result: Result<Int, Errno>?
        var done = false
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        init() { pthread_mutex_init(mutex, nil) }
        func finish(_ r: Result<Int, Errno>) { pthread_mutex_lock(mutex); result = r; done = true; pthread_mutex_unlock(mutex) }
        var isDone: Bool { pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }; return done }
    }

    /// Starts a read of `fd` on a thread of its own and interrupts it `signals` times (or until it returns).
    func interruptedRead(_ fd: Int32, retry: Bool, signals: Int, then: () -> Void = {}) -> Result<Int, Errno> {
        let reader = Reader()
        var thread = pthread_t()
        let box = Unmanaged.passRetained(ReadJob(fd: fd, retry: retry, reader: reader)).toOpaque()
        pthread_create(&thread, nil, { raw in
            let job = Unmanaged<ReadJob>.fromOpaque(raw!).takeRetainedValue()
            // The test runner's threads block signals, and a new thread inherits their mask.
            var only = sigset_t()
            sigemptyset(&only)
            sigaddset(&only, InterruptTests.signal)
            pthread_sigmask(SIG_UNBLOCK, &only, nil)
            var byte: UInt8 = 0
            job.reader.finish(Result { () throws(Errno) -> Int in try Syscall.read(job.fd, &byte, 1, retryOnInterrupt: job.retry) })
            return nil
        }, box)
        var sent = 0
        while !reader.isDone && sent < signals {
            pthread_kill(thread, Self.signal)
            sent += 1
            usleep(1000)
        }
        then()
        pthread_join(thread, nil)
        return reader.result!
    }

    final class ReadJob {
        let fd: Int32, retry: Bool, reader: Reader
        init(fd: Int32, retry: Bool, reader: Reader) { self.fd = fd; self.retry = retry; self.reader = reader }
    }

    @Test func aDeviceCallReturnsEINTR() throws {
        let (r, w) = try pipe()
        defer { try? Syscall.close(r); try? Syscall.close(w) }
        // Nothing is ever written: only the signal can end the read.
        let result = interruptedRead(r, retry: false, signals: .max)
        #expect(throws: Errno.interrupted) { try result.get() }
    }

    @Test func aRetriedCallSleepsThroughSignals() throws {
        let (r, w) = try pipe()
        defer { try? Syscall.close(r); try? Syscall.close(w) }
        let result = interruptedRead(r, retry: true, signals: 50) {
            var byte: UInt8 = 1
            _ = try? Syscall.write(w, &byte, 1)
        }
        #expect(try result.get() == 1)
    }
}
