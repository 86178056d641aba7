import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites {
/// Two guests on one backend: one guest's device objects are, for another, objects that do not exist.
@Suite("Isolation between guests: vgem")
struct Isolation {
    /// Guest A names a vgem buffer (GEM_FLINK) and holds it; guest B, another `paradice run`, gets ENOENT
    /// for A's name (what the driver says of name 0, which never exists), while A's own second file opens
    /// it, and a program in the VM itself, outside Paradice, opens it too: the refusal is the backend's.
    /// B's PRIME import of a descriptor number it does not hold (A's dma-buf fd) fails with EBADF, there
    /// and natively.
    @Test func aGuestCannotOpenAnotherGuestsBufferByName() throws {
        let vm = try DriverVM.require()
        let program = try compileForDriverVM(vm, "drmflink")
        let folder = NSTemporaryDirectory() + "drmflink-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let nameFile = folder + "/name", doneFile = folder + "/done"

        let a = Background { try vm.forwarded([program.host, "make", "/dev/dri/card1", nameFile, doneFile], timeout: 900) }
        defer { FileManager.default.createFile(atPath: doneFile, contents: Data()) }
        let fields = try #require(fieldsWritten(to: nameFile), "guest A never named its buffer")
        try #require(fields.count == 2)
        let (name, fd) = (fields[0], fields[1])

        // Native first: its file is closed when it exits, so B's file becomes master in turn (and so may
        // open names at all), where a session's files close a moment after its process ends.
        let native = try vm.native("\(program.guest) open /dev/dri/card1 \(name) \(fd)")
        let b = try vm.forwarded([program.host, "open", "/dev/dri/card1", name, fd])
        FileManager.default.createFile(atPath: doneFile, contents: Data())
        let aRun = a.wait()

        #expect(aRun.status == 0, "\(aRun.output)")
        #expect(aRun.output.contains("named: yes"), "\(aRun.output)")
        #expect(aRun.output.contains("GEM_OPEN of its own name in its second file: ok"), "\(aRun.output)")
        #expect(aRun.output.contains("done"), "\(aRun.output)")

        #expect(b.status == 0, "\(b.output)")
        #expect(b.output.contains("GEM_OPEN of name 0: -1 No such file or directory"), "\(b.output)")
        #expect(b.output.contains("GEM_OPEN of the other's name: -1 No such file or directory"), "\(b.output)")
        #expect(b.output.contains("PRIME_FD_TO_HANDLE of a descriptor it does not hold: -1 Bad file descriptor"), "\(b.output)")

        // Natively the name opens: only the backend keeps it from guest B.
        #expect(native.status == 0, "\(native.output)")
        #expect(native.output.contains("GEM_OPEN of name 0: -1 No such file or directory"), "\(native.output)")
        #expect(native.output.contains("GEM_OPEN of the other's name: ok"), "\(native.output)")
        #expect(native.output.contains("PRIME_FD_TO_HANDLE of a descriptor it does not hold: -1 Bad file descriptor"), "\(native.output)")
    }
}

/// Two guests on one vivid capture node: one guest's buffer queue is, for another, a queue it may not use.
@Suite("Isolation between guests: vivid")
struct IsolationV4L2 {
    /// Guest A allocates MMAP buffers (REQBUFS), so its file owns the queue, and holds them; its own second
    /// file maps A's buffer. Guest B, another `paradice run`, gets EBUSY for QBUF of A's buffer (the
    /// driver's rule, passed through) and EBUSY for its mmap (the backend's: a program in the VM itself,
    /// outside Paradice, maps it, while its QBUF gets the driver's EBUSY too).
    @Test func aGuestCannotMapAnotherGuestsBuffers() throws {
        let (a, b, native) = try otherGuestTries("own")
        #expect(a.output.contains("REQBUFS: ok"), "\(a.output)")
        #expect(a.output.contains("mmap of its own buffer: ok"), "\(a.output)")
        #expect(a.output.contains("mmap of its own buffer in its second file: ok"), "\(a.output)")
        expectRefused(b)
        // Natively the buffer maps: only the backend keeps it from guest B. The queue stays A's.
        #expect(native.status == 0, "\(native.output)")
        #expect(native.output.contains("QBUF of the other's buffer: -1 Device or resource busy"), "\(native.output)")
        #expect(native.output.contains("mmap of the other's buffer: ok"), "\(native.output)")
    }

    /// When guest A's file owns the queue by reading frames with read() (videobuf2's file I/O, which makes
    /// the buffers itself), the driver refuses every mmap of the queue (vb2_mmap: "file io in progress"),
    /// natively too: B gets EBUSY from the driver, and the backend has nothing to add.
    @Test func noOneMapsTheBuffersAGuestReadsFramesInto() throws {
        let (a, b, native) = try otherGuestTries("reader")
        #expect(a.output.contains("read of a frame: ok") && a.output.contains("QUERYBUF: ok"), "\(a.output)")
        expectRefused(b)
        #expect(native.status == 0 && native.output == b.output, "\(native.output)")
    }

    /// Guest A's program in `mode` holding the queue of /dev/video0 while guest B's and a native program's
    /// `other` try buffer 0: their outputs.
    private func otherGuestTries(_ mode: String) throws -> (a: (status: Int32, output: String), b: (status: Int32, output: String),
                                                             native: (status: Int32, output: String)) {
        let vm = try DriverVM.require()
        let program = try compileForDriverVM(vm, "v4l2iso")
        let folder = NSTemporaryDirectory() + "v4l2iso-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let infoFile = folder + "/buffer", doneFile = folder + "/done"

        let a = Background { try vm.forwarded([program.host, mode, "/dev/video0", infoFile, doneFile], timeout: 900) }
        defer { FileManager.default.createFile(atPath: doneFile, contents: Data()) }
        let fields = try #require(fieldsWritten(to: infoFile), "guest A never made its buffers")
        try #require(fields.count == 2)
        let (offset, length) = (fields[0], fields[1])

        let b = try vm.forwarded([program.host, "other", "/dev/video0", offset, length])
        let native = try vm.native("\(program.guest) other /dev/video0 \(offset) \(length)")
        FileManager.default.createFile(atPath: doneFile, contents: Data())
        let aRun = a.wait()
        #expect(aRun.status == 0 && aRun.output.contains("done"), "\(aRun.output)")
        return (aRun, b, native)
    }

    private func expectRefused(_ b: (status: Int32, output: String)) {
        #expect(b.status == 0, "\(b.output)")
        #expect(b.output.contains("QUERYBUF of the other's buffer: ok"), "\(b.output)")
        #expect(b.output.contains("its offset: the same"), "\(b.output)")
        #expect(b.output.contains("QBUF of the other's buffer: -1 Device or resource busy"), "\(b.output)")
        #expect(b.output.contains("mmap of the other's buffer: -1 Device or resource busy"), "\(b.output)")
    }
}
}

/// The words a guest program writes to `path` once (by a rename) when it holds what it made: waited for up
/// to 10 minutes (the VM is emulated).
private func fieldsWritten(to path: String) -> [String]? {
    for _ in 0..<6000 {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            return text.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        usleep(100_000)
    }
    return nil
}
