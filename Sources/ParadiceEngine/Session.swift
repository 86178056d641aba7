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
    /// Calls admitted while `workerThreads` of the session's calls were running: each waits for one to end.
    private var waiting: [(token: UInt64, work: PendingWork)] = []
    private var running = 0
    /// Bytes the session's reads in flight may fill (GuestLimits.readBytesInFlight).
    fileprivate var readBytesInFlight = 0
    /// The limits this session has run into, each logged the first time only.
    private var limitsReached: Set<String> = []
    private(set) var cancelled = false
    /// The request of the guest's PD_BYE: answered once its files are released.
    private var farewell: UInt32?
    var mappings: [UInt32: DeviceMapping] = [:]
    private var mappedBytes = 0
    private var nextMapping: UInt32 = 1
    var limits: GuestLimits { backend.configuration.limits }
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
            setReceiveTimeout(seconds: limits.handshakeSeconds)
            let first: Frame?
            do { first = try socket.receive(maxLength: Self.maxHandshake) } catch TransportError.system(_, EAGAIN) {
                logger.warning("connection without a handshake", metadata: ["waited": "\(limits.handshakeSeconds) s"])
                return
            }
            guard let hello = first, hello.op == PD_HELLO.code else {
                logger.warning("connection without a handshake")
                return
            }
            try handshake(hello)
            setReceiveTimeout(seconds: 0)   // a guest may be silent as long as it likes once it is one
            while let frame = try socket.receive() {
                if frame.op == PD_BYE.code { farewell = frame.request; break }
                try dispatch(frame)
            }
            logger.info(farewell == nil ? "guest disconnected" : "guest said goodbye")
        } catch let malformed as MalformedFrame {
            logger.warning("malformed frame: session ended", metadata: ["op": "\(malformed.op)", "reason": "\(malformed.reason)"])
        } catch let malformed as ProtocolError {
            // A header past the largest frame.
            logger.warning("malformed frame: session ended", metadata: ["reason": "\(malformed.message)"])
        } catch {
            logger.info("guest connection ended", metadata: ["reason": "\(error)"])
        }
    }

    private func setReceiveTimeout(seconds: Int) {
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(socket.fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A handshake carries a version and a name: anything larger is not one.
    static let maxHandshake = 64 << 10

    private func teardown() {
        // Calls still waiting for a thread never run.
        let dropped = lock.withLock { () -> [PendingWork] in
            cancelled = true
            for w in waiting { workers.removeValue(forKey: w.token) }
            defer { waiting.removeAll() }
            return waiting.map(\.work)
        }
        dropped.forEach { $0.drop() }
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
        lock.withLock { mappings.removeAll(); mappedBytes = 0 }   // each unmaps itself
        let count = handles.releaseAll(for: id)
        if let request = farewell { reply(request, result: 0) }
        socket.close()
        if count > 0 { logger.info("closed the guest's files", metadata: ["count": "\(count)"]) }
    }

    private func handshake(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let hello: pd_hello
        do { hello = try reader.read(pd_hello.self) } catch let e as ProtocolError {
            throw MalformedFrame(op: frame.op, reason: e.message)
        }
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

    /// A handle for a new file, or nil (the file closes as it goes) when the session holds its limit of files.
    func register(_ file: OpenFile) -> UInt32? {
        let handle = handles.register(file, for: id, limit: limits.openFiles)
        if handle == nil { reachedLimit("open files", limits.openFiles, EMFILE) }
        return handle
    }

    /// Logs, the first time only, that the session ran into one of its limits.
    func reachedLimit(_ name: String, _ value: Int, _ error: Int32) {
        guard lock.withLock({ limitsReached.insert(name).inserted }) else { return }
        logger.warning("guest over its limit: refused", metadata: ["limit": "\(name)", "value": "\(value)",
                                                                   "errno": "\(error)", "later": "not logged"])
    }

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
    /// Past the session's `workerThreads` the call waits for one of its threads; past `requestsInFlight`
    /// it fails with EAGAIN, as a kernel out of request slots answers.
    func offload(_ request: UInt32, _ body: @escaping @Sendable () -> Void) {
        enum Admission { case cancelled, refused, start(UInt64), queued }
        let work = PendingWork(body)
        let limits = self.limits
        // The call counts as running from now: a teardown waits for it even before a thread takes it.
        let admission = lock.withLock { () -> Admission in
            guard !cancelled else { return .cancelled }
            guard workers.count < limits.requestsInFlight else { return .refused }
            nextWorker &+= 1
            workers.updateValue(nil, forKey: nextWorker)
            guard running < limits.workerThreads else {
                waiting.append((nextWorker, work))
                return .queued
            }
            running += 1
            return .start(nextWorker)
        }
        switch admission {
        case .cancelled: work.drop()
        case .refused:
            work.drop()
            reachedLimit("requests in flight", limits.requestsInFlight, EAGAIN)
            fail(request, EAGAIN)
        case .queued: reachedLimit("worker threads (later calls wait)", limits.workerThreads, 0)
        case .start(let token): start(token, work)
        }
    }

    /// Runs the call on a thread of the pool, then, on the same thread, the session's calls that waited for one.
    private func start(_ token: UInt64, _ work: PendingWork) {
        backend.workers.run { [self] in
            var call: (token: UInt64, work: PendingWork)? = (token, work)
            var reusable = true
            while let (token, work) = call {
                let go = lock.withLock { () -> Bool in
                    if !cancelled { workers[token] = pthread_self() }
                    return !cancelled
                }
                if go { work.run() } else { work.drop() }
                // Only a cancelled session signals its workers: a thread that saw no cancellation here was
                // never signalled, and is given the next call.
                (call, reusable) = lock.withLock { () -> ((token: UInt64, work: PendingWork)?, Bool) in
                    workers.removeValue(forKey: token)
                    if !cancelled && !waiting.isEmpty { return (waiting.removeFirst(), true) }
                    running -= 1
                    return (nil, !cancelled)
                }
            }
            return reusable
        }
    }

    /// One driver call and its errno. Never repeated on EINTR: the only signal the backend sends itself
    /// ends the session, and a driver's own EINTR (KVM_RUN's immediate_exit) is the guest's answer.
    func perform(_ call: () -> Int) -> (Int, Int32) {
        let r = call()
        return (r, r < 0 ? errno : 0)
    }

    // MARK: dispatch

    /// Serves one request. A bad value (an unknown handle, a flag the driver refuses, an unknown op) gets
    /// the errno a local call would; a frame that is not what its op says (too short for its structure,
    /// counts or lengths past its end) throws MalformedFrame, which ends the session.
    private func dispatch(_ frame: Frame) throws {
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
        } catch let error as ProtocolError {
            throw MalformedFrame(op: frame.op, reason: error.message)
        }
    }

    /// A guest path as a local open would take it, or the errno such an open gives. Paths travel without
    /// their NUL: one inside is no path a program could have passed.
    private func guestPath(_ bytes: ArraySlice<UInt8>) -> (path: String?, error: Int32) {
        if bytes.isEmpty { return (nil, ENOENT) }
        if bytes.count >= Int(PATH_MAX) { return (nil, ENAMETOOLONG) }
        if bytes.contains(0) { return (nil, EINVAL) }
        return (String(decoding: bytes, as: UTF8.self), 0)
    }

    private func open(_ frame: Frame) throws {
        var reader = BodyReader(frame.body)
        let request = try reader.read(pd_open.self)
        let (guestPath, pathError) = guestPath(reader.readRest())
        guard let path = guestPath else { return fail(frame.request, pathError) }
        // A pattern's `*` matches `.` and `..` too: those name the folder or its parent, never an exported node.
        let dotted = path.split(separator: "/", omittingEmptySubsequences: false).contains { $0 == "." || $0 == ".." }
        guard let specClass = dotted ? nil : backend.exports.classFor(path) else {
            // A file of an exported tree, or a folder of exported nodes, for reading only.
            let folder = backend.exports.holdsDevices(path)
            if let resolved = resolveInTree(path) ?? (folder ? path : nil) {
                guard request.flags & O_ACCMODE == O_RDONLY else { return fail(frame.request, EROFS) }
                let fd = Glibc.open(resolved, (request.flags & (O_NONBLOCK | O_DIRECTORY | paradice_o_path())) | O_RDONLY | O_CLOEXEC
                                    | (folder ? O_DIRECTORY : 0))
                guard fd >= 0 else { return fail(frame.request, errno) }
                guard let handle = register(OpenFile(fd: fd, path: resolved, specClass: nil, state: nil, nonBlocking: true)) else {
                    return fail(frame.request, EMFILE)
                }
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
        guard let handle = register(file) else { return fail(frame.request, EMFILE) }
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
        // No more than a reply can carry; the buffer is reserved, not touched, so only what the driver
        // returns takes memory, and the session's reads in flight share one budget.
        let headroom = Frame.headerSize + MemoryLayout<pd_reply>.size
        let count = Int(min(io.count, UInt64(PD_MAX_FRAME) - UInt64(headroom)))
        let admitted = lock.withLock { () -> Bool in
            guard readBytesInFlight == 0 || readBytesInFlight + count <= limits.readBytesInFlight else { return false }
            readBytesInFlight += count
            return true
        }
        guard admitted else {
            reachedLimit("read bytes in flight", limits.readBytesInFlight, EAGAIN)
            return fail(frame.request, EAGAIN)
        }
        let positional = frame.op == PD_PREAD.code
        // Given back when the call is done with, whether it ran or was dropped (refused, or its session ended).
        let reservation = ReadReservation(self, count)
        let work: @Sendable () -> Void = { [self] in
            withExtendedLifetime(reservation) {}
            var n = 0, e: Int32 = 0
            let encoded = [UInt8](unsafeUninitializedCapacity: headroom + count) { buffer, initialized in
                let data = buffer.baseAddress! + headroom
                (n, e) = perform { positional ? pread(file.fd, data, count, off_t(io.offset)) : Glibc.read(file.fd, data, count) }
                let length = MemoryLayout<pd_reply>.size + max(n, 0)
                var header = pd_header(length: UInt32(length), op: PD_REPLY.code, flags: 0, request: frame.request, handle: 0)
                var result = pd_reply(result: n >= 0 ? Int64(n) : -1, error: e, reserved: 0)
                withUnsafeBytes(of: &header) { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
                withUnsafeBytes(of: &result) {
                    UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[Frame.headerSize...]).copyMemory(from: $0)
                }
                initialized = headroom + max(n, 0)
            }
            send(encoded)
            watcher.rearm(frame.handle)
        }
        file.nonBlocking ? work() : offload(frame.request, work)
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
        file.nonBlocking ? work() : offload(frame.request, work)
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
        request.timeout_ms == 0 ? work() : offload(frame.request, work)
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
        offload(frame.request) { [self] in
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
        let length = Int(request.length)
        let room = lock.withLock { () -> Bool in
            guard mappedBytes + length <= limits.mappedBytes else { return false }
            mappedBytes += length   // taken now: two maps in a row cannot both pass
            return true
        }
        guard room else {
            reachedLimit("mapped bytes", limits.mappedBytes, ENOMEM)
            return fail(frame.request, ENOMEM)
        }
        let protection = request.prot & (PROT_READ | PROT_WRITE)
        guard let address = Glibc.mmap(nil, Int(request.length), protection, MAP_SHARED, file.fd, off_t(request.offset)),
              address != MAP_FAILED
        else {
            let e = errno
            lock.withLock { mappedBytes -= length }
            return fail(frame.request, e)
        }
        let id = lock.withLock { () -> UInt32 in
            var id = nextMapping
            while id == 0 || mappings[id] != nil { id &+= 1 }   // a wrapped counter never reuses a live id
            nextMapping = id &+ 1
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
        let removed = lock.withLock { () -> DeviceMapping? in
            guard let m = mappings.removeValue(forKey: request.mapping) else { return nil }
            mappedBytes -= m.length
            return m
        }
        guard let removed else { return fail(frame.request, EINVAL) }
        if reader.remaining >= MemoryLayout<pd_mapping_count>.size {
            let count = try reader.read(pd_mapping_count.self)
            try reader.expect(Int(count.count), of: pd_mapping_range.self)
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
        let (guestPath, pathError) = guestPath(frame.body[...])
        guard let path = guestPath else { return fail(frame.request, pathError) }
        guard let resolved = resolveInTree(path, keepLast: true) else { return fail(frame.request, ENOENT) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(resolved, &buffer, buffer.count)
        guard n >= 0 else { return fail(frame.request, errno) }
        reply(frame.request, result: Int64(n), data: buffer[0..<n].map { UInt8(bitPattern: $0) })
    }

    private func listDirectory(_ frame: Frame) {
        let (guestPath, pathError) = guestPath(frame.body[...])
        guard let path = guestPath else { return fail(frame.request, pathError) }
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

/// Bytes of a session's read budget, held by one read's call for as long as the call exists.
private final class ReadReservation: @unchecked Sendable {
    let session: Session
    let count: Int
    init(_ session: Session, _ count: Int) { self.session = session; self.count = count }
    deinit { session.lock.withLock { session.readBytesInFlight -= count } }
}

/// A frame that is not what its op says: it ends the session that sent it.
struct MalformedFrame: Error {
    let op: String
    let reason: String

    init(op: UInt16, reason: String) {
        self.op = Self.name(op)
        self.reason = reason
    }

    static func name(_ op: UInt16) -> String {
        let names: [UInt16: String] = [
            PD_HELLO.code: "HELLO", PD_OPEN.code: "OPEN", PD_CLOSE.code: "CLOSE", PD_READ.code: "READ", PD_WRITE.code: "WRITE",
            PD_IOCTL.code: "IOCTL", PD_POLL.code: "POLL", PD_LLSEEK.code: "LLSEEK", PD_FSYNC.code: "FSYNC",
            PD_FASYNC.code: "FASYNC", PD_SETFL.code: "SETFL", PD_WATCH.code: "WATCH", PD_PREAD.code: "PREAD",
            PD_PWRITE.code: "PWRITE", PD_FSTAT.code: "FSTAT", PD_MMAP.code: "MMAP", PD_MUNMAP.code: "MUNMAP",
            PD_READLINK.code: "READLINK", PD_LISTDIR.code: "LISTDIR", PD_BYE.code: "BYE", PD_SHARE.code: "SHARE",
        ]
        return names[op].map { "PD_" + $0 } ?? "\(op)"
    }
}

extension BodyReader {
    /// Throws unless `count` structures of `T` fit in what is left: a count is checked against the frame
    /// before anything is allocated for it or looped over.
    mutating func expect<T>(_ count: Int, of type: T.Type) throws {
        guard count <= remaining / MemoryLayout<T>.size else {
            throw ProtocolError("\(count) × \(T.self) in \(remaining) bytes")
        }
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
