import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The test bed's guest VM (testbed/drivervm, dvm.role=guest): the driver VM's kernel without its virtual
/// drivers, with the Paradice module and `paradice guest` serving the driver VM's backend (through this
/// machine: tcp://10.0.2.2:<port> from inside). Its /dev has the driver VM's devices at their own names, and
/// clients run there unmodified, with no LD_PRELOAD. Booted once, beside the suite's driver VM.
final class GuestVM: @unchecked Sendable {
    static let repository = String(repositorySpecFolder.dropLast("/Specs".count))

    /// Whether this tree has a guest VM's frontend: the module's sources and the daemon.
    static let available = FileManager.default.isExecutableFile(atPath: repository + "/Kernel/paradice/build.sh")
        && FileManager.default.fileExists(atPath: repository + "/Sources/paradice-guestd")

    static let shared: Result<GuestVM, BackendFailure> = {
        do { return .success(try GuestVM()) } catch let e as BackendFailure { return .failure(e) } catch {
            return .failure(BackendFailure(log: "\(error)"))
        }
    }()

    /// One node of each kind the driver VM's backend exports: the guest VM is ready once they are there.
    static let driverNodes = ["/dev/video0", "/dev/video3", "/dev/media0", "/dev/dri/card0", "/dev/dri/card2", "/dev/dri/renderD128",
                              "/dev/snd/controlC1", "/dev/snd/pcmC1D0p", "/dev/uinput", "/dev/input/event0"]

    let driver: DriverVM
    let folder: String
    let bootSeconds: Double
    /// The driver VM's backend as the guest VM reaches it.
    let driverBackend: String

    private init() throws {
        driver = try DriverVM.require()
        driverBackend = "tcp://10.0.2.2:" + (driver.endpoint.split(separator: ":").last.map(String.init) ?? "")
        let boot = try ParadiceEngineTests.run("/usr/bin/env", ["python3", driver.controller, "--port", "auto", "--role", "guest", "boot",
                                            "--daemon=--backend \(driverBackend) --plain-tcp", "--expect", Self.driverNodes.joined(separator: " ")])
        let lines = boot.output.split(separator: "\n")
        guard boot.status == 0, let dir = lines.first(where: { $0.hasPrefix("dir=") }) else {
            throw BackendFailure(log: "the guest VM did not boot:\n\(boot.output)")
        }
        folder = String(dir.dropFirst(4))
        bootSeconds = lines.first { $0.hasPrefix("boot_s=") }.flatMap { Double($0.dropFirst(7)) } ?? 0
        print("guest VM: booted with its frontend in \(bootSeconds) s (driver VM \(driver.bootSeconds) s)")
        atexit {
            if case .success(let vm) = GuestVM.shared { _ = try? ParadiceEngineTests.run("/usr/bin/env", ["python3", vm.driver.controller, "--dir", vm.folder, "stop"]) }
        }
    }

    /// The guest VM's share folder on this machine (/share inside).
    var share: String { folder + "/share" }

    /// A command run in the guest VM (the host's userland, as the driver VM's `native`): its status and output.
    func run(_ command: String, timeout: Int = 300) throws -> (status: Int32, output: String) {
        let r = try ParadiceEngineTests.run("/usr/bin/env", ["python3", driver.controller, "--dir", folder, "exec", "--timeout", String(timeout), command])
        return (r.status, r.output)
    }

    /// Starts a shell command in the guest VM in the background; its output, then "exit N", go to `output` in
    /// the share folder.
    func start(_ command: String, output: String) throws {
        let r = try run("cd / && setsid sh -c '\(command); echo \"exit $?\"' > /share/\(output) 2>&1 < /dev/null &", timeout: 60)
        guard r.status == 0 else { throw BackendFailure(log: "could not start `\(command)` in the guest VM: \(r.output)") }
    }

    /// A file of the share folder, as text.
    func text(_ name: String) -> String { evdevFileText(share + "/" + name) }

    static func require() throws -> GuestVM {
        switch shared {
        case .success(let vm): return vm
        case .failure(let e): throw e
        }
    }
}

/// One more `paradice guest` in the guest VM, for a backend or for devices made after the VM's own frontend
/// registered the driver VM's (a uinput keyboard): it adds the nodes not there yet. Stopped (SIGTERM, its
/// nodes go) when the value goes away.
final class GuestFrontend {
    let vm: GuestVM
    let tag: String

    init(_ vm: GuestVM, backend: String, waitingFor nodes: [String], extra: String = "") throws {
        self.vm = vm
        tag = "frontend-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // The test backends the guest VM reaches over TCP are plain ones unless `extra` brings TLS options.
        let plain = backend.hasPrefix("tcp") && !extra.contains("--tls-") && !extra.contains("--psk-file") ? "--plain-tcp" : ""
        let started = try vm.run("cd / && setsid sh -c 'echo $$ > /share/\(tag).pid; exec /share/bin/paradice-frontend --backend \(backend) \(plain) \(extra)' "
                                 + "> /share/\(tag).log 2>&1 < /dev/null &", timeout: 60)
        guard started.status == 0 else { throw BackendFailure(log: "paradice guest did not start: \(started.output)") }
        let check = nodes.map { "[ -e \($0) ]" }.joined(separator: " && ")
        let deadline = Date().addingTimeInterval(60)
        while !nodes.isEmpty, try vm.run(check, timeout: 30).status != 0 {
            guard Date() < deadline else { throw BackendFailure(log: "paradice guest made no \(nodes):\n\(vm.text(tag + ".log"))") }
            usleep(200_000)
        }
    }

    var log: String { vm.text(tag + ".log") }

    deinit {
        _ = try? vm.run("kill $(cat /share/\(tag).pid) 2>/dev/null; sleep 1; rm -f /share/\(tag).pid /share/\(tag).log", timeout: 30)
    }
}

/// Every guest VM suite nests in the driver VM's, so that they run one at a time with them: both VMs share
/// this machine's CPUs, and rate comparisons need them otherwise idle.
extension DriverVMSuites {
    @Suite("A guest VM: real clients on its Paradice nodes against the same clients natively",
           .enabled(if: GuestVM.available, "this tree has no Kernel/paradice module or paradice-guestd"))
    struct GuestVMSuites {}
}
