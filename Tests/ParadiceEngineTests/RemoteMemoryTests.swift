import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The repository's Sources folder: the frontend core's C sources, for programs built on the core.
let repositorySourceFolder: String = {
    let parts = #filePath.split(separator: "/").dropLast(3)
    return "/" + parts.joined(separator: "/") + "/Sources"
}()

/// Compiles one of Programs/*.c with the frontend core (and the C helpers it calls) linked in; under
/// AddressSanitizer and UndefinedBehaviorSanitizer when PARADICE_SANITIZE_CORE is set (scripts/sanitize-preload.sh).
func compileWithCore(_ name: String, into folder: String) throws -> String {
    let core = repositorySourceFolder + "/ParadiceFrontendCore"
    let sources = try FileManager.default.contentsOfDirectory(atPath: core).filter { $0.hasSuffix(".c") }.sorted().map { core + "/" + $0 }
    let output = folder + "/" + name
    let sanitized = ProcessInfo.processInfo.environment["PARADICE_SANITIZE_CORE"] != nil
    // clang as the script finds it (on PATH), gcc as the other programs are built.
    let compiler = sanitized ? ["clang"] : ["gcc"]
    let flags = compiler + (sanitized ? ["-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"] : ["-O1"])
    let tls = repositorySourceFolder + "/ParadiceTLS"
    let r = try run("/usr/bin/env", flags + ["-pthread", "-I", core + "/include", "-I", repositorySourceFolder + "/CParadice/include",
                                             "-I", tls + "/include", "-o", output, programSources + "/\(name).c"] + sources
                                    + ["cparadice.c", "ring.c", "spin.c", "ivshmem.c", "vchan.c"].map { repositorySourceFolder + "/CParadice/" + $0 }
                                    + [tls + "/tls.c", "-lssl", "-lcrypto"])
    guard r.status == 0 else { throw BackendFailure(log: "\(compiler[0]) \(name): \(r.output)") }
    return output
}

/// A frontend that is not the calling process, as a daemon serving a guest kernel's device node is:
/// Programs/remotememory.c forks a child that makes conformance.c's calls (and calls at the edges of its
/// memory), each argument in the child's memory; the parent forwards them through the frontend core with
/// the child's pid as its memory (pd_process_read/write) to a real backend. What the child sees must be
/// what it sees natively; once it has exited, calls on its memory fail with EFAULT and the connection lives on.
@Suite("the frontend core serving another process's memory", .serialized)
struct RemoteMemoryTests {
    @Test func aChildsCallsForwardedWithItsMemoryAnswerAsNative() throws {
        let kvm = access("/dev/kvm", R_OK | W_OK) == 0
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"] + (kvm ? ["/dev/kvm"] : []),
                                         extra: ["--plugins", "kvm"])
        let program = try compileWithCore("remotememory", into: backend.folder)
        let mode = kvm ? ["kvm"] : []

        let native = try run(program, ["native"] + mode)
        #expect(native.status == 0, "\(native.output)")
        let forwarded = try run(program, [backend.endpoint] + mode)
        #expect(forwarded.status == 0, "\(forwarded.output)")

        let nativeLines = native.output.split(separator: "\n").map(String.init)
        // The edges fault natively where the test says they do: a check that cannot fail checks nothing.
        for line in ["TIOCGWINSZ-sentinel 0 0 1800500000000000aaaaaaaaaaaaaaaa", "TIOCSWINSZ-straddle -1 \(EFAULT)",
                     "TIOCGWINSZ-unchanged 0 0 1800500000000000", "TIOCGWINSZ-straddle -1 \(EFAULT)",
                     "TIOCGWINSZ-wrap -1 \(EFAULT)", "read-bad-buffer -1 \(EFAULT)", "write-straddle -1 \(EFAULT)"] {
            #expect(nativeLines.contains(line), "natively: \(line)")
        }
        // This frontend cannot map memory into another process: mmap is ENODEV, and what used the mapping is not run.
        var expected: [String] = []
        for line in nativeLines {
            if line.hasPrefix("mmap-vcpu ") { expected.append("mmap-vcpu -1 \(ENODEV)") }
            else if !line.hasPrefix("KVM_RUN ") && !line.hasPrefix("munmap-vcpu ") { expected.append(line) }
        }
        // After the child's exit: the read it left unanswered, and calls on its winsize, fail; the daemon's own memory still works.
        expected += ["gone-read -1 \(EFAULT)", "gone-TIOCSWINSZ -1 \(EFAULT)", "gone-TIOCGWINSZ -1 \(EFAULT)",
                     "self-TIOCGWINSZ 0 0 0000000000000000"]
        #expect(expected.count > 30)
        #expect(forwarded.output.split(separator: "\n").map(String.init) == expected)
        #expect(backend.log.contains("guest=remotememory"))
    }
}
