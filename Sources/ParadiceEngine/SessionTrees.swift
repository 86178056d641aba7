#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem
import ParadiceWire

/// The read-only trees a backend exports (sysfs: what libraries read to identify a device) and the
/// folders of exported nodes: a guest may open, list and read links in them, never leave them.
extension Session {
    /// The real path of `path` when it lies inside an exported tree (symlinks resolved, so nothing escapes);
    /// otherwise realpath's errno, or ENOENT for a path outside every tree.
    func resolvedInTree(_ path: String, keepLast: Bool = false) -> Result<String, Errno> {
        guard !backend.configuration.trees.isEmpty else { return .failure(.noSuchFileOrDirectory) }
        var target = path
        var last = ""
        if keepLast, let slash = path.lastIndex(of: "/") {
            // For readlink: resolve the directory, keep the link itself.
            target = slash == path.startIndex ? "/" : String(path[..<slash])
            last = String(path[path.index(after: slash)...])
        }
        var resolved: String
        do throws(Errno) { resolved = try Syscall.realpath(target) } catch { return .failure(error) }
        if keepLast { resolved += (resolved == "/" ? "" : "/") + last }
        for tree in backend.configuration.trees {
            let root = tree.hasSuffix("/") ? String(tree.dropLast()) : tree
            if resolved == root || resolved.hasPrefix(root + "/") { return .success(resolved) }
        }
        return .failure(.noSuchFileOrDirectory)
    }

    func resolveInTree(_ path: String, keepLast: Bool = false) -> String? { try? resolvedInTree(path, keepLast: keepLast).get() }

    /// PD_OPEN of a file of an exported tree, or of a folder of exported nodes: for reading only.
    func openInTree(_ request: UInt32, _ resolved: String, flags: Int32, folder: Bool) {
        guard flags & O_ACCMODE == O_RDONLY else { return fail(request, .readOnlyFileSystem) }
        let opened = Executor.open(resolved, flags: (flags & (O_NONBLOCK | O_DIRECTORY | paradice_o_path())) | O_RDONLY | O_CLOEXEC
                                   | (folder ? O_DIRECTORY : 0))
        guard case .success(let fd) = opened else { return reply(request, opened.map(Int64.init)) }
        guard let handle = register(OpenFile(fd: fd, path: resolved, specClass: nil, state: nil, nonBlocking: true)) else {
            return fail(request, .tooManyOpenFiles)
        }
        reply(request, result: Int64(handle), data: Executor.stat(fd))
    }

    func readLink(_ request: UInt32, _ path: GuestPath) {
        guard case .success(let path) = path else { return reply(request, path.map { _ in 0 }) }
        guard let resolved = resolveInTree(path, keepLast: true) else { return fail(request, .noSuchFileOrDirectory) }
        switch Executor.readLink(resolved) {
        case .success(let target): reply(request, result: Int64(target.count), data: target)
        case .failure(let error): fail(request, error)
        }
    }

    /// PD_LISTDIR: a tree's directory, or a folder of exported nodes, which lists only those (and . and ..).
    func listDirectory(_ request: UInt32, _ path: GuestPath) {
        guard case .success(let path) = path else { return reply(request, path.map { _ in 0 }) }
        let folder = backend.exports.holdsDevices(path)
        let resolved = resolvedInTree(path).flatMapError { error in folder ? .success(path) : .failure(error) }
        guard case .success(let directory) = resolved else { return reply(request, resolved.map { _ in 0 }) }
        let (outcome, entries) = Executor.listDirectory(directory) { name in
            !folder || name.allSatisfy({ $0 == UInt8(ascii: ".") })
                || backend.exports.classFor(path + "/" + String(decoding: name, as: UTF8.self)) != nil
        }
        reply(request, outcome, data: entries)
    }
}
