import CParadice
import Foundation
import ParadiceClient
import ParadiceTransport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The folder holding the built products (paradice-backend, paradice) next to the test bundle.
let productsFolder: String = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    var path = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while !path.isEmpty && !FileManager.default.fileExists(atPath: path + "/paradice-backend") {
        guard let slash = path.lastIndex(of: "/") else { break }
        path = String(path[..<slash])
    }
    return path
}()

let repositorySpecFolder: String = {
    let parts = #filePath.split(separator: "/").dropLast(3)
    return "/" + parts.joined(separator: "/") + "/Specs"
}()

/// A real paradice-backend process, stopped when the value goes away.
final class BackendProcess: @unchecked Sendable {
    let process = Process()
    let endpoint: String
    let folder: String
    private let output = Pipe()
    private let errors: FileHandle

    /// Starts a backend exporting `devices`, listening on a fresh unix socket (and TCP port 0 when `tcp`: plain
    /// TCP unless `security` gives the backend's TLS options).
    /// `namespace` runs it inside a network namespace (ip netns exec).
    /// `sessionLeader` runs it as a service manager would, leading a session of its own (setsid).
    /// `shm` listens on shared-memory rings too (shm:PATH), and makes that the endpoint.
    init(devices: [String], tcp: Bool = false, shm: Bool = false, namespace: String? = nil, sessionLeader: Bool = false,
         extra: [String] = [], security: [String] = []) throws {
        folder = NSTemporaryDirectory() + "paradice-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let socketPath = folder + "/backend.sock"
        var arguments = ["--listen", "unix:" + socketPath, "--specs", repositorySpecFolder, "--log-level", "debug"]
        if tcp { arguments += ["--listen", "tcp://127.0.0.1:0"] + (security.isEmpty ? ["--plain-tcp"] : security) }
        plainTCP = tcp && security.isEmpty
        if shm { arguments += ["--listen", "shm:" + folder + "/ring.sock"] }
        for d in devices { arguments += ["--device", d] }
        arguments += extra
        if let namespace {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace, productsFolder + "/paradice-backend"] + arguments
        } else if sessionLeader {
            // setsid execs in place (the child leads no process group yet), so the pid is the backend's.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
            process.arguments = [productsFolder + "/paradice-backend"] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: productsFolder + "/paradice-backend")
            process.arguments = arguments
        }
        process.standardOutput = output
        _ = FileManager.default.createFile(atPath: folder + "/backend.log", contents: nil)
        errors = FileHandle(forWritingAtPath: folder + "/backend.log")!
        process.standardError = errors
        try process.run()
        // The backend prints one "listening on" line per listener once it accepts.
        var lines: [String] = []
        var pending = Data()
        let wanted = 1 + (tcp ? 1 : 0) + (shm ? 1 : 0)
        while lines.count < wanted {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw BackendFailure(log: (try? String(contentsOfFile: folder + "/backend.log", encoding: .utf8)) ?? "") }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 10) {
                lines.append(String(decoding: pending[..<newline], as: UTF8.self))
                pending.removeSubrange(...newline)
            }
        }
        let endpoints = lines.compactMap { $0.components(separatedBy: "listening on ").last }
        endpoint = shm ? endpoints.first { $0.hasPrefix("shm") }! : tcp ? endpoints.first { $0.hasPrefix("tcp") }! : endpoints[0]
        unixEndpoint = "unix:" + socketPath
        if sessionLeader {
            // setsid forked (the child leads its process group): the backend is who answers on the socket.
            let probe = try RawGuest(unixEndpoint)
            var peer: Int32 = 0, uid: UInt32 = 0
            _ = paradice_peer_credentials(probe.fd, &peer, &uid)
            detachedPid = peer
        }
    }

    let unixEndpoint: String
    /// Its TCP listener is plain (no TLS).
    let plainTCP: Bool
    /// The backend's own pid when it runs detached from `process` (sessionLeader).
    private var detachedPid: Int32?

    var pid: Int32 {
        // Under `ip netns exec` the backend is exec'd in place, so the pid is the same.
        detachedPid ?? process.processIdentifier
    }

    /// Whether the backend process still runs.
    var isRunning: Bool { detachedPid.map { kill($0, 0) == 0 } ?? process.isRunning }

    /// How many descriptors the backend holds.
    func openDescriptors() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// Waits until `condition` holds, up to `seconds`.
    func waitUntil(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    var log: String { (try? String(contentsOfFile: folder + "/backend.log", encoding: .utf8)) ?? "" }

    func connect(_ name: String = "test") throws -> ParadiceClient {
        try ParadiceClient.connect(endpoint, name: name, security: TransportSecurity(plainTCP: plainTCP && endpoint.hasPrefix("tcp")))
    }

    deinit {
        if let detachedPid, kill(detachedPid, 0) == 0 {
            kill(detachedPid, SIGTERM)
            if !waitUntil(seconds: 3, { kill(detachedPid, 0) != 0 }) { kill(detachedPid, SIGKILL) }
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            if !waitUntil(seconds: 3, { !process.isRunning }) { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: folder)
    }
}

struct BackendFailure: Error, CustomStringConvertible {
    var log: String
    var description: String { "the backend did not start:\n\(log)" }
}

/// Runs a command, returning its exit status and output.
@discardableResult
func run(_ command: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: command)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()   // read to the end first: it never blocks the child
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Typed memory for ioctl arguments.
final class Buffer {
    let pointer: UnsafeMutableRawPointer
    let count: Int
    init(_ count: Int) {
        self.count = count
        pointer = .allocate(byteCount: count, alignment: 16)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }
    deinit { pointer.deallocate() }
    subscript<T>(_ offset: Int, as type: T.Type) -> T {
        get { pointer.loadUnaligned(fromByteOffset: offset, as: T.self) }
        set { pointer.storeBytes(of: newValue, toByteOffset: offset, as: T.self) }
    }
    var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: pointer, count: count)) }
}
