#if canImport(Glibc)
import Glibc
#endif

/// The folder of the running program: the tools start their siblings (paradice-backend, paradice) and find
/// libParadicePreload.so there.
public func programFolder() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}
