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
        // A writes its name once it holds the buffer: waited for up to 10 minutes (the VM is emulated).
        var written: String?
        for _ in 0..<6000 {
            if let text = try? String(contentsOfFile: nameFile, encoding: .utf8) { written = text; break }
            usleep(100_000)
        }
        let fields = try #require(written, "guest A never named its buffer").split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
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
}
