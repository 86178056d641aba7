import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The project's driver VM (testbed/drivervm): vivid, virtio-gpu, vgem, vkms, snd-dummy, snd-aloop, uinput
/// and virtio-keyboard under a Debian kernel, with paradice-backend inside. Booted once for the suite.
final class DriverVM: @unchecked Sendable {
    static let shared: Result<DriverVM, BackendFailure> = {
        do { return .success(try DriverVM()) } catch let e as BackendFailure { return .failure(e) } catch {
            return .failure(BackendFailure(log: "\(error)"))
        }
    }()

    let controller: String
    let endpoint: String
    let folder: String
    let bootSeconds: Double

    private init() throws {
        let repository = String(repositorySpecFolder.dropLast("/Specs".count))
        controller = repository + "/testbed/drivervm/dvmctl.py"
        setenv("DVM_BACKEND_ARGS", "--plugins v4l2,evdev,alsa,drm,kvm --tree /sys --log-level info", 1)
        let boot = try run("/usr/bin/env", ["python3", controller, "--port", "auto", "boot"])
        guard boot.status == 0, let url = boot.output.split(separator: "\n").first(where: { $0.hasPrefix("tcp://") }) else {
            throw BackendFailure(log: "the driver VM did not boot:\n\(boot.output)")
        }
        endpoint = String(url)
        folder = boot.output.split(separator: "\n").first { $0.hasPrefix("dir=") }.map { String($0.dropFirst(4)) } ?? ""
        bootSeconds = boot.output.split(separator: "\n").first { $0.hasPrefix("boot_s=") }.flatMap { Double($0.dropFirst(7)) } ?? 0
        atexit {
            if case .success(let vm) = DriverVM.shared { _ = try? run("/usr/bin/env", ["python3", vm.controller, "--dir", vm.folder, "stop"]) }
        }
    }

    /// A command run natively inside the VM: its status and output.
    func native(_ command: String, timeout: Int = 300) throws -> (status: Int32, output: String) {
        let r = try run("/usr/bin/env", ["python3", controller, "--dir", folder, "exec", "--timeout", String(timeout), command])
        return (r.status, r.output)
    }

    /// The same client on this machine through `paradice run`.
    func forwarded(_ command: [String], timeout: Double = 600) throws -> (status: Int32, output: String) {
        let r = try paradiceRun(endpoint, command, timeout: timeout)
        return (r.status, r.output + r.errors)
    }

    static func require() throws -> DriverVM {
        switch shared {
        case .success(let vm): return vm
        case .failure(let e): throw e
        }
    }
}

/// How busy this machine was while `body` ran, as fractions of its wall time: `stolen`, CPU time the
/// hypervisor gave to others (the `steal` column of /proc/stat, as a fraction of all CPU time), and
/// `waiting`, time in which some runnable task here waited for a CPU (/proc/pressure/cpu, "some"): other
/// tenants show in the first, other work on this machine (a second VM, a parallel build) in the second.
/// Either way the emulated VM stalls for tens or hundreds of milliseconds, natively and forwarded alike,
/// but a forwarded client, which needs the VM for every call, feels it first.
struct HostBusyness: CustomStringConvertible {
    var stolen = 0.0, waiting = 0.0
    /// Over 5 % stolen, or a task kept waiting for a CPU a third of the time.
    var wasBusy: Bool { stolen > 0.05 || waiting > 0.33 }
    var description: String { "\(Int(stolen * 100)) % of its CPU time stolen, a task waiting for a CPU \(Int(waiting * 100)) % of the time" }
}

func busyness<T>(during body: () throws -> T) rethrows -> (result: T, busy: HostBusyness) {
    func ticks() -> (steal: Double, total: Double) {
        guard let line = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?.split(separator: "\n").first else { return (0, 0) }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        return (fields.count > 7 ? fields[7] : 0, fields.prefix(8).reduce(0, +))
    }
    /// Microseconds in which some task waited for a CPU, since boot; nil without PSI.
    func pressure() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/pressure/cpu", encoding: .utf8),
              let some = text.split(separator: "\n").first(where: { $0.hasPrefix("some ") }),
              let total = some.split(separator: " ").first(where: { $0.hasPrefix("total=") }) else { return nil }
        return Double(total.dropFirst("total=".count))
    }
    let (before, waitedBefore, started) = (ticks(), pressure(), DispatchTime.now().uptimeNanoseconds)
    let result = try body()
    let (after, waitedAfter, ended) = (ticks(), pressure(), DispatchTime.now().uptimeNanoseconds)
    var busy = HostBusyness()
    let total = after.total - before.total
    if total > 0 { busy.stolen = (after.steal - before.steal) / total }
    if let a = waitedAfter, let b = waitedBefore, ended > started { busy.waiting = (a - b) * 1000 / Double(ended - started) }
    return (result, busy)
}

/// A timing comparison on a shared host: an attempt that `failed` while the host was visibly busy (see
/// `HostBusyness.wasBusy`, or whatever `disturbed` says of the native reference) is taken again, three
/// attempts at most. The last is returned, and judged by the caller either way.
func unlessTheHostWasBusy<T>(_ what: String, failed: (T) -> Bool, disturbed: (T) -> Bool = { _ in false },
                             _ attempt: () throws -> T) rethrows -> T {
    var last = try busyness(during: attempt)
    for _ in 1..<3 where failed(last.result) {
        guard last.busy.wasBusy || disturbed(last.result) else {
            print("\(what): failed on a host that was not busy (\(last.busy))")
            break
        }
        print("\(what): failed while the host was busy (\(last.busy)); once more")
        last = try busyness(during: attempt)
    }
    return last.result
}

/// Every suite on the driver VM nests in this one, so they run one at a time: the VM has one emulated CPU,
/// and rate comparisons with native need it otherwise idle. So does HostileGuest, whose stress (thousands of
/// connections and dying guests) beside them starved a forwarded speaker-test into underruns.
@Suite("Real drivers in the driver VM", .serialized)
struct DriverVMSuites {}
