#if canImport(Glibc)
import Glibc
#endif
import CParadice
import Logging
import ParadicePlan
import ParadiceSpec
import ParadiceTransport
import ParadiceWire

/// One guest connection: its handle table, its workers, its watches. Everything it opened is closed
/// when the guest goes away, however it goes.
final class Session: @unchecked Sendable {
    let id: UInt32
    let socket: FrameSocket
    unowned let backend: Backend
    var logger: Logger

    let lock = Lock()
    /// Shared with the sessions of forked children that joined it.
    private(set) var handles = HandleTable()
    /// The calls on worker threads, with the thread once one runs it.
    private var workers: [UInt64: pthread_t?] = [:]
    private var nextWorker: UInt64 = 0
    private(set) var cancelled = false
    /// The request of the guest's PD_BYE: answered once its files are released.
    private var farewell: UInt32?
    var mappings: [UInt32: DeviceMapping] = [:]
    private var nextMapping: UInt32 = 1
    /// Made with the session, before any other thread sees it (a lazy var is no safe first use from two).
    private(set) var watcher: Watcher!

    init(id: UInt32, socket: FrameSocket, backend: Backend) {
        self.id = id
        self.socket = socket
        self.backend = backend
        var logger = backend.logger
        logger[metadataKey: "session"] = "\(id)"
        logger[metadataKey: "peer"] = "\(socket.peer)"
        self.logger = logger
        watcher = Watcher(session: self)
    }

    // MARK: lifecycle

    func run() {
        defer { teardown() }
        do {
            guard let hello = try socket.receive(), hello.op == PD_HELLO.code else {
                logger.warning("connection without a handshake")
                return
            }
            try handshake(hello)
            while let frame = try socket.receive() {
                if frame.op == PD_BYE.code { farewell = frame.request; break }
                dispatch(frame)
            }
            logger.info(farewell == nil ? "guest disconnected" : "guest said goodbye")
        } catch {
            logger.info("guest connection ended", metadata: ["reason": "\(error)"])
        }
    }

    private func teardown() {
        lock.withLock { cancelled = true }
        watcher.stop()
        // Interrupt workers blocked in driver calls until every one has returned.
        // A worker leaves the table, under the lock, before its thread ends or takes other work:
        // signalling under the lock never reaches a thread that is gone or busy elsewhere.
        while lock.withLock({ () -> Bool in
            for case let thread? in workers.values { pthread_kill(thread, interruptSignal) }
            return !workers.isEmpty
        }) {
            usleep(1000)
        }
        lock.withLock { mappings.removeAll() }   // each unmaps itself
        let count = handles.releaseAll(for: id)
        if let request = farewell { reply(request, result: 0) }
        socket.close()
        if count > 0 { logger.info("closed the guest's files", metadata: ["count": "\(count)"]) }
    }

    private func handshake(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let hello = try reader.read(pd_hello.self)
        let name = String(decoding: reader.readRest(), as: UTF8.self)
        guard hello.magic == PD_MAGIC, hello.major == PD_VERSION_MAJOR else {
            logger.warning("incompatible guest", metadata: ["version": "\(hello.major).\(hello.minor)"])
            var w = BodyWriter()
            w.append(pd_reply(result: -1, error: EPROTONOSUPPORT, reserved: 0))
            try socket.send(Frame(op: PD_REPLY.code, request: frame.request, body: w.bytes))
            throw ProtocolError("version \(hello.major).\(hello.minor)")
        }
        logger[metadataKey: "guest"] = "\(name.isEmpty ? "?" : name) pid \(hello.pid)"
        if hello.join_session != 0 {
            // A forked child: it shares its parent's files, each with a reference of its own.
            guard let parent = backend.session(hello.join_session), parent.handles.token == hello.join_token else {
                logger.warning("refused a join of an unknown session", metadata: ["session": "\(hello.join_session)"])
                var w = BodyWriter()
                w.append(pd_reply(result: -1, error: EPERM, reserved: 0))
                try socket.send(Frame(op: PD_REPLY.code, request: frame.request, body: w.bytes))
                throw ProtocolError("bad join")
            }
            handles = parent.handles
            handles.join(id, from: parent.id)
            logger.info("forked guest joined its parent's session", metadata: ["parent": "\(parent.id)"])
        } else {
            logger.info("guest connected")
        }
        var w = BodyWriter()
        let exports = backend.configuration.devices + backend.configuration.trees.map {
            DeviceExport(pattern: $0.hasSuffix("/") ? $0 : $0 + "/", className: nil)
        }
        w.append(pd_hello_reply(magic: PD_MAGIC, major: UInt16(PD_VERSION_MAJOR), minor: UInt16(PD_VERSION_MINOR),
                                capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS, session: id,
                                device_count: UInt32(exports.count), token: handles.token))
        for export in exports {
            let path = Array(export.pattern.utf8)
            let className = Array((backend.exports.classFor(export.pattern)??.name ?? export.className ?? "").utf8)
            var st = stat()
            let isNode = stat(export.pattern, &st) == 0
            w.append(pd_device(path_length: UInt32(path.count), class_length: UInt32(className.count),
                               mode: isNode ? st.st_mode : 0, reserved: 0, rdev: isNode ? UInt64(st.st_rdev) : 0))
            w.append(bytes: path)
            w.append(bytes: className)
            w.pad()
        }
        try socket.send(Frame(op: PD_REPLY.code, request: frame.request, body: w.bytes))
    }

    // MARK: handles

    func file(_ handle: UInt32) -> OpenFile? { handles.file(handle, for: id) }

    func register(_ file: OpenFile) -> UInt32 { handles.register(file, for: id) }

    // MARK: replies

    func reply(_ request: UInt32, result: Int64, error: Int32 = 0, data: [UInt8] = [], op: UInt16 = PD_REPLY.code) {
        var w = BodyWriter(capacity: MemoryLayout<pd_reply>.size + data.count)
        w.append(pd_reply(result: error == 0 ? result : -1, error: error, reserved: 0))
        w.append(bytes: data)
        send(w.frame(op: op, request: request))
    }

    func fail(_ request: UInt32, _ error: Int32) { reply(request, result: -1, error: error) }

    func send(_ frame: Frame) {
        send(frame.encoded())
    }

    /// Sends an encoded frame; a guest that cannot take it is disconnected.
    func send(_ encoded: [UInt8]) {
        do { try socket.sendRaw(encoded) } catch { socket.shutdownBoth() }
    }

    /// Runs an operation that may sleep in the driver on a thread of the backend's pool, so that this
    /// guest's other requests and every other guest go on. The thread is interrupted if the guest goes away.
    func offload(_ body: @escaping @Sendable () -> Void) {
        // The call counts as running from now: a teardown waits for it even before a thread takes it.
        let token: UInt64? = lock.withLock {
            guard !cancelled else { return nil }
            nextWorker &+= 1
            workers.updateValue(nil, forKey: nextWorker)
            return nextWorker
        }
        guard let token else { return }
        let work = PendingWork(body)
        backend.workers.run { [self] in
            let go = lock.withLock { () -> Bool in
                if !cancelled { workers[token] = pthread_self() }
                return !cancelled
            }
            if go { work.run() } else { work.drop() }
            // Only a cancelled session signals its workers: a thread that saw no cancellation here was
            // never signalled, and is given the next call.
            return lock.withLock {
                workers.removeValue(forKey: token)
                return !cancelled
            }
        }
    }

    /// One driver call and its errno. Never repeated on EINTR: the only signal the backend sends itself
    /// ends the session, and a driver's own EINTR (KVM_RUN's immediate_exit) is the guest's answer.
    func perform(_ call: () -> Int) -> (Int, Int32) {
        let r = call()
        return (r, r < 0 ? errno : 0)
    }

    // MARK: dispatch

    private func dispatch(_ frame: Frame) {
        do {
            switch frame.op {
            case PD_OPEN.code: try open(frame)
            case PD_CLOSE.code: close(frame)
            case PD_READ.code, PD_PREAD.code: try read(frame)
            case PD_WRITE.code, PD_PWRITE.code: try write(frame)
            case PD_IOCTL.code: try ioctl(frame)
            case PD_POLL.code: try poll(frame)
            case PD_LLSEEK.code: try llseek(frame)
            case PD_FSYNC.code: fsync(frame)
            case PD_FSTAT.code: fstat(frame)
            case PD_SETFL.code: try setfl(frame)
            case PD_FASYNC.code: try fasync(frame)
            case PD_WATCH.code: try watch(frame)
            case PD_SHARE.code: share(frame)
            case PD_MMAP.code: try map(frame)
            case PD_MUNMAP.code: try unmap(frame)
            case PD_READLINK.code: readLink(frame)
            case PD_LISTDIR.code: listDirectory(frame)
            default:
                logger.warning("unknown operation", metadata: ["op": "\(frame.op)"])
                fail(frame.request, ENOSYS)
            }
        } catch {
            logger.warning("malformed request", metadata: ["op": "\(frame.op)", "error": "\(error)"])
            fail(frame.request, EINVAL)
        }
    }

    private func open(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_open.self)
        let path = String(decoding: reader.readRest(), as: UTF8.self)
        guard let specClass = backend.exports.classFor(path) else {
            // A file of an exported tree, or a folder of exported nodes, for reading only.
            let folder = backend.exports.holdsDevices(path)
            if let resolved = resolveInTree(path) ?? (folder ? path : nil) {
                guard request.flags & O_ACCMODE == O_RDONLY else { return fail(frame.request, EROFS) }
                let fd = Glibc.open(resolved, (request.flags & (O_NONBLOCK | O_DIRECTORY | paradice_o_path())) | O_RDONLY | O_CLOEXEC
                                    | (folder ? O_DIRECTORY : 0))
                guard fd >= 0 else { return fail(frame.request, errno) }
                let handle = register(OpenFile(fd: fd, path: resolved, specClass: nil, state: nil, nonBlocking: true))
                return reply(frame.request, result: Int64(handle), data: statBytes(fd))
            }
            logger.notice("open of a path that is not exported", metadata: ["path": "\(path)"])
            return fail(frame.request, ENOENT)
        }
        // The guest's own flags, minus what only makes sense in the guest's process.
        let allowed = O_ACCMODE | O_NONBLOCK | O_APPEND | O_SYNC | O_DSYNC | O_NOCTTY | O_EXCL | paradice_o_direct()
            | paradice_o_path()   // stat on a forwarded path: no open side effects
        let flags = (request.flags & Int32(allowed)) | O_CLOEXEC | O_NOCTTY
        let fd = Glibc.open(path, flags, mode_t(request.mode))
        guard fd >= 0 else { return fail(frame.request, errno) }
        let file = OpenFile(fd: fd, path: path, specClass: specClass, state: backend.pluginState(for: specClass, path: path, descriptor: fd),
                            nonBlocking: request.flags & O_NONBLOCK != 0)
        let handle = register(file)
        logger.debug("opened", metadata: ["path": "\(path)", "handle": "\(handle)", "class": "\(specClass?.name ?? "-")"])
        reply(frame.request, result: Int64(handle), data: statBytes(fd))
    }

    private func statBytes(_ fd: Int32) -> [UInt8] {
        var st = stat()
        var w = BodyWriter()
        if Glibc.fstat(fd, &st) == 0 {
            w.append(pd_stat(mode: st.st_mode, reserved: 0, rdev: UInt64(st.st_rdev), size: UInt64(st.st_size)))
        } else {
            w.append(pd_stat())
        }
        return w.bytes
    }

    private func close(_ frame: Frame) {
        guard handles.release(frame.handle, for: id) else { return fail(frame.request, EBADF) }
        watcher.forget(frame.handle)
        reply(frame.request, result: 0)
    }

    private func fstat(_ frame: Frame) {
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        reply(frame.request, result: 0, data: statBytes(file.fd))
    }

    private func read(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let io = try reader.read(pd_io.self)
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        let count = Int(min(io.count, UInt64(PD_MAX_FRAME) - 64))
        let positional = frame.op == PD_PREAD.code
        let work: @Sendable () -> Void = { [self] in
            var data = [UInt8](repeating: 0, count: count)
            let (n, e) = perform {
                data.withUnsafeMutableBytes { positional ? pread(file.fd, $0.baseAddress, count, off_t(io.offset)) : Glibc.read(file.fd, $0.baseAddress, count) }
            }
            if n >= 0 { data.removeSubrange(n...) }
            reply(frame.request, result: Int64(n), error: e, data: n > 0 ? data : [])
            watcher.rearm(frame.handle)
        }
        file.nonBlocking ? work() : offload(work)
    }

    private func write(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let io = try reader.read(pd_io.self)
        let data = reader.readRest()
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        let positional = frame.op == PD_PWRITE.code
        let work: @Sendable () -> Void = { [self] in
            let (n, e) = perform {
                data.withUnsafeBytes { positional ? pwrite(file.fd, $0.baseAddress, $0.count, off_t(io.offset)) : Glibc.write(file.fd, $0.baseAddress, $0.count) }
            }
            reply(frame.request, result: Int64(n), error: e)
            watcher.rearm(frame.handle)
        }
        file.nonBlocking ? work() : offload(work)
    }

    private func poll(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_poll.self)
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        let work: @Sendable () -> Void = { [self] in
            var p = pollfd(fd: file.fd, events: Int16(truncatingIfNeeded: request.events), revents: 0)
            let (n, e) = perform { Int(Glibc.poll(&p, 1, request.timeout_ms)) }
            reply(frame.request, result: n > 0 ? Int64(p.revents) : 0, error: e)
        }
        request.timeout_ms == 0 ? work() : offload(work)
    }

    private func llseek(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_llseek.self)
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        let r = lseek(file.fd, off_t(request.offset), request.whence)
        reply(frame.request, result: Int64(r), error: r < 0 ? errno : 0)
    }

    private func fsync(_ frame: Frame) {
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        offload { [self] in
            let (r, e) = perform { Int(Glibc.fsync(file.fd)) }
            reply(frame.request, result: Int64(r), error: e)
        }
    }

    private func setfl(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_flags.self)
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        let (r, e) = file.setStatusFlags(request.flags, settable: O_NONBLOCK | O_APPEND)
        reply(frame.request, result: Int64(r), error: e)
    }

    private func fasync(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_flags.self)
        guard file(frame.handle) != nil else { return fail(frame.request, EBADF) }
        // The guest raises SIGIO itself: the backend pushes an event whenever the file becomes ready.
        if request.flags != 0 {
            watcher.watch(frame.handle, events: Int16(POLLIN | POLLOUT | POLLPRI), persistent: true)
        } else {
            watcher.forget(frame.handle)
        }
        reply(frame.request, result: 0)
    }

    /// PD_MMAP: the backend maps the device; the guest keeps a mirror that the plug-in's sync points update.
    private func map(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_mmap.self)
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        guard request.length > 0, request.length <= 1 << 30, request.offset <= UInt64(Int64.max) - request.length else {
            return fail(frame.request, EINVAL)
        }
        if let refusal = file.state?.mayMap(offset: request.offset, length: request.length) {
            logger.debug("mmap refused by the plug-in", metadata: ["path": "\(file.path)", "offset": "\(request.offset)"])
            return fail(frame.request, refusal)
        }
        let protection = request.prot & (PROT_READ | PROT_WRITE)
        guard let address = Glibc.mmap(nil, Int(request.length), protection, MAP_SHARED, file.fd, off_t(request.offset)),
              address != MAP_FAILED
        else { return fail(frame.request, errno) }
        let id = lock.withLock { () -> UInt32 in
            let id = nextMapping
            nextMapping &+= 1
            mappings[id] = DeviceMapping(file: file, address: address, length: Int(request.length), deviceOffset: request.offset)
            return id
        }
        logger.debug("mapped", metadata: ["path": "\(file.path)", "offset": "\(request.offset)", "length": "\(request.length)"])
        // What the new mirror starts with, if the plug-in says the device holds data there already.
        let start = request.offset..<(request.offset + request.length)
        let initial = mappingRanges(of: file, file.state?.mappedToGuest(mapping: start) ?? []).filter { $0.id == id }
        var w = BodyWriter()
        if !initial.isEmpty {
            w.append(pd_mapping_count(count: UInt32(initial.count), reserved: 0))
            for p in initial {
                w.append(pd_mapping_range(mapping: id, length: UInt32(p.length), offset: UInt64(p.offset)))
                w.append(UnsafeRawBufferPointer(start: p.mapping.address + p.offset, count: p.length))
                w.pad()
            }
        }
        reply(frame.request, result: Int64(id), data: w.bytes)
    }

    /// PD_MUNMAP: the guest's last stores into a writable shared mirror reach the device, then it is unmapped.
    private func unmap(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_munmap.self)
        let removed = lock.withLock { mappings.removeValue(forKey: request.mapping) }
        guard let removed else { return fail(frame.request, EINVAL) }
        if reader.remaining >= MemoryLayout<pd_mapping_count>.size {
            let count = try reader.read(pd_mapping_count.self)
            for _ in 0..<count.count {
                let range = try reader.read(pd_mapping_range.self)
                let bytes = try reader.readBytes(Int(range.length))
                reader.skipPadding()
                guard range.mapping == request.mapping, range.offset <= UInt64(removed.length),
                      UInt64(bytes.count) <= UInt64(removed.length) - range.offset else { continue }
                bytes.withUnsafeBytes { (removed.address + Int(range.offset)).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        }
        reply(frame.request, result: 0)
    }

    /// The parts of this file's mappings that a plug-in's device-offset ranges cover.
    func mappingRanges(of file: OpenFile, _ ranges: [Range<UInt64>]) -> [(id: UInt32, mapping: DeviceMapping, offset: Int, length: Int)] {
        guard !ranges.isEmpty else { return [] }
        let mine = lock.withLock { mappings.filter { $0.value.file === file } }
        var out: [(UInt32, DeviceMapping, Int, Int)] = []
        for (id, m) in mine.sorted(by: { $0.key < $1.key }) {
            let covered = m.deviceOffset..<(m.deviceOffset + UInt64(m.length))
            for r in ranges where r.overlaps(covered) {
                let lo = max(r.lowerBound, covered.lowerBound), hi = min(r.upperBound, covered.upperBound)
                out.append((id, m, Int(lo - m.deviceOffset), Int(hi - lo)))
            }
        }
        return out
    }

    /// The real path of `path` when it lies inside an exported tree (symlinks resolved, so nothing escapes).
    func resolveInTree(_ path: String, keepLast: Bool = false) -> String? {
        guard !backend.configuration.trees.isEmpty else { return nil }
        var target = path
        var last = ""
        if keepLast, let slash = path.lastIndex(of: "/") {
            // For readlink: resolve the directory, keep the link itself.
            target = slash == path.startIndex ? "/" : String(path[..<slash])
            last = String(path[path.index(after: slash)...])
        }
        guard let real = realpath(target, nil) else { return nil }
        defer { free(real) }
        var resolved = String(cString: real)
        if keepLast { resolved += (resolved == "/" ? "" : "/") + last }
        for tree in backend.configuration.trees {
            let root = tree.hasSuffix("/") ? String(tree.dropLast()) : tree
            if resolved == root || resolved.hasPrefix(root + "/") { return resolved }
        }
        return nil
    }

    private func readLink(_ frame: Frame) {
        let path = String(decoding: frame.body, as: UTF8.self)
        guard let resolved = resolveInTree(path, keepLast: true) else { return fail(frame.request, ENOENT) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(resolved, &buffer, buffer.count)
        guard n >= 0 else { return fail(frame.request, errno) }
        reply(frame.request, result: Int64(n), data: buffer[0..<n].map { UInt8(bitPattern: $0) })
    }

    private func listDirectory(_ frame: Frame) {
        let path = String(decoding: frame.body, as: UTF8.self)
        // A folder of exported nodes lists only those (and . and ..).
        let folder = backend.exports.holdsDevices(path)
        guard let resolved = resolveInTree(path) ?? (folder ? path : nil), let directory = opendir(resolved) else {
            return fail(frame.request, errno == 0 ? ENOENT : errno)
        }
        defer { closedir(directory) }
        var w = BodyWriter()
        var count = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if folder && !name.allSatisfy({ $0 == UInt8(ascii: ".") })
                && backend.exports.classFor(path + "/" + String(decoding: name, as: UTF8.self)) == nil { continue }
            w.append(pd_dirent(type: entry.pointee.d_type, reserved: 0, name_length: UInt16(name.count), reserved2: 0))
            w.append(bytes: name)
            w.pad()
            count += 1
        }
        reply(frame.request, result: Int64(count), data: w.bytes)
    }

    /// PD_SHARE: the device's descriptor for a same-host guest's mmap.
    private func share(_ frame: Frame) {
        guard let file = file(frame.handle) else { return fail(frame.request, EBADF) }
        guard backend.configuration.shareMappings, socket.isLocal else {
            logger.notice("mmap refused: descriptors are not shared with this guest", metadata: ["path": "\(file.path)"])
            return fail(frame.request, ENODEV)
        }
        var w = BodyWriter()
        w.append(pd_reply(result: 0, error: 0, reserved: 0))
        do { try socket.sendRaw(w.frame(op: PD_REPLY.code, request: frame.request), passing: file.fd) } catch { socket.shutdownBoth() }
    }

    private func watch(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_poll.self)
        guard file(frame.handle) != nil else { return fail(frame.request, EBADF) }
        watcher.watch(frame.handle, events: Int16(truncatingIfNeeded: request.events), persistent: false)
        reply(frame.request, result: 0)
    }
}

/// A worker's call, dropped as soon as it has run: what it holds (its open file) is released before the
/// session counts the worker finished, so a session torn down after its workers (at PD_BYE) has closed
/// the device by then, not whenever the thread's closure happens to go.
final class PendingWork: @unchecked Sendable {
    private var body: (@Sendable () -> Void)?
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func run() {
        body?()
        body = nil
    }

    func drop() { body = nil }
}
