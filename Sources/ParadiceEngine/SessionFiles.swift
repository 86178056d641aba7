#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem
import ParadiceWire

/// The requests on a guest's files: the handle is checked, the session's limits applied and the thread
/// chosen here; `Executor` makes the call. A file that may sleep (a blocking read, a poll with a timeout,
/// fsync) is served on a worker thread, so that the guest's other requests go on.
extension Session {
    func open(_ request: UInt32, flags: Int32, mode: UInt32, path: GuestPath) {
        guard case .success(let path) = path else { return reply(request, path.map { _ in 0 }) }
        // A pattern's `*` matches `.` and `..` too: those name the folder or its parent, never an exported node.
        let dotted = path.split(separator: "/", omittingEmptySubsequences: false).contains { $0 == "." || $0 == ".." }
        guard let specClass = dotted ? nil : backend.exports.classFor(path) else {
            // A file of an exported tree, or a folder of exported nodes, for reading only.
            let folder = backend.exports.holdsDevices(path)
            if let resolved = resolveInTree(path) ?? (folder ? path : nil) {
                if let refused = treeRefusal(path) { return fail(request, refused) }
                return openInTree(request, resolved, flags: flags, folder: folder)
            }
            logger.notice("open of a path that is not exported", metadata: ["path": "\(path)"])
            return fail(request, .noSuchFileOrDirectory)
        }
        let access = flags & O_ACCMODE
        if let refused = refusal(access == O_RDONLY ? "open O_RDONLY" : access == O_WRONLY ? "open O_WRONLY" : "open O_RDWR",
                                 path: path, writes: access != O_RDONLY) {
            return fail(request, refused)
        }
        // The guest's own flags, minus what only makes sense in the guest's process.
        let allowed = O_ACCMODE | O_NONBLOCK | O_APPEND | O_SYNC | O_DSYNC | O_NOCTTY | O_EXCL | paradice_o_direct()
            | paradice_o_path()   // stat on a forwarded path: no open side effects
        let sharing = flags & paradice_o_path() != 0 ? .shared : backend.exports.sharing(of: path)
        var claim: SharingClaim?   // an exclusive hold before the open, given back if it fails
        if sharing == .exclusive {
            guard let held = backend.sharing.claimExclusive(path, by: handles) else {
                logger.info("open refused: another guest holds the exclusive device", metadata: ["path": "\(path)"])
                return fail(request, .resourceBusy)
            }
            claim = held
        }
        let opened = Executor.open(path, flags: (flags & Int32(allowed)) | O_CLOEXEC | O_NOCTTY, mode: mode)
        guard case .success(let fd) = opened else { return reply(request, opened.map(Int64.init)) }
        if sharing == .foreground {
            claim = backend.sharing.joinForeground(DeviceFile(path: path, descriptor: fd, specs: backend.specs, guest: guest, sharing: sharing),
                                                   plugin: backend.plugin(for: specClass), owner: identity)
        }
        let state = backend.pluginState(for: specClass, path: path, descriptor: fd, guest: guest, sharing: sharing)
        let file = OpenFile(fd: fd, path: path, specClass: specClass, state: state,
                            nonBlocking: flags & O_NONBLOCK != 0, sharing: claim)
        guard let handle = register(file) else { return fail(request, .tooManyOpenFiles) }
        logger.debug("opened", metadata: ["path": "\(path)", "handle": "\(handle)", "class": "\(specClass?.name ?? "-")"])
        reply(request, result: Int64(handle), data: Executor.stat(fd, readUnit: file.readUnit))
    }

    func close(_ request: UInt32, _ handle: UInt32) {
        guard handles.release(handle, for: id) else { return fail(request, .badFileDescriptor) }
        watcher.forget(handle)
        reply(request, result: 0)
    }

    func fstat(_ request: UInt32, _ handle: UInt32) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        reply(request, result: 0, data: Executor.stat(file.fd, readUnit: file.readUnit))
    }

    func read(_ request: UInt32, _ handle: UInt32, count asked: UInt64, offset: Int64?) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        // No more than a reply can carry; the buffer is reserved, not touched, so only what the driver
        // returns takes memory, and the session's reads in flight share one budget.
        let headroom = Frame.headerSize + MemoryLayout<pd_reply>.size
        let count = Int(min(asked, UInt64(PD_MAX_FRAME) - UInt64(headroom)))
        let admitted = lock.withLock { () -> Bool in
            guard readBytesInFlight == 0 || readBytesInFlight + count <= limits.readBytesInFlight else { return false }
            readBytesInFlight += count
            return true
        }
        guard admitted else {
            reachedLimit("read bytes in flight", limits.readBytesInFlight, .resourceTemporarilyUnavailable)
            return fail(request, .resourceTemporarilyUnavailable)
        }
        // Given back when the call is done with, whether it ran or was dropped (refused, or its session ended).
        let reservation = ReadReservation(self, count)
        let work: @Sendable (DriverWindow) -> Void = { [self] window in
            withExtendedLifetime(reservation) {}
            send(window.run { file.sleepingCall { Executor.read(file.fd, count: count, offset: offset, request: request) } })
            watcher.rearm(handle)
        }
        file.nonBlocking ? work(.inline) : offload(request, work)
    }

    func write(_ request: UInt32, _ handle: UInt32, _ data: ArraySlice<UInt8>, offset: Int64?) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        if let refused = refusal("write", path: file.path, writes: true) { return fail(request, refused) }
        let work: @Sendable (DriverWindow) -> Void = { [self] window in
            reply(request, window.run { file.sleepingCall { Executor.write(file.fd, data, offset: offset) } })
            watcher.rearm(handle)
        }
        file.nonBlocking ? work(.inline) : offload(request, work)
    }

    func poll(_ request: UInt32, _ handle: UInt32, events: Int16, timeoutMilliseconds: Int32, readAhead: Int?) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        let work: @Sendable (DriverWindow) -> Void = { [self] window in
            let outcome = window.run { Executor.poll(file.fd, events: events, timeoutMilliseconds: timeoutMilliseconds) }
            guard let readAhead else { return reply(request, outcome) }
            reply(request, outcome, data: self.readAhead(file, handle, readAhead, after: outcome))
        }
        timeoutMilliseconds == 0 ? work(.inline) : offload(request, work)
    }

    func seek(_ request: UInt32, _ handle: UInt32, offset: Int64, whence: Int32) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        reply(request, Executor.seek(file.fd, offset: offset, whence: whence))
    }

    func fsync(_ request: UInt32, _ handle: UInt32) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        offload(request) { [self] window in reply(request, window.run { Executor.fsync(file.fd) }) }
    }

    func setStatusFlags(_ request: UInt32, _ handle: UInt32, _ flags: Int32) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        reply(request, file.setStatusFlags(flags, settable: O_NONBLOCK | O_APPEND).map { 0 })
    }

    func fasync(_ request: UInt32, _ handle: UInt32, enabled: Bool) {
        guard file(handle) != nil else { return fail(request, .badFileDescriptor) }
        // The guest raises SIGIO itself: the backend pushes an event whenever the file becomes ready.
        if enabled {
            watcher.watch(handle, events: Int16(POLLIN | POLLOUT | POLLPRI), persistent: true)
        } else {
            watcher.forget(handle)
        }
        reply(request, result: 0)
    }

    /// PD_WATCH. With a level to look at (PD_WATCH_LEVEL) the device is polled first, on this thread (a
    /// poll that does not wait): a level that holds is the reply, and the handle's watch is left as it
    /// was, so no PD_EVENT repeats what the reply said. Otherwise the watch is armed after the look, and
    /// its own poll reports what came in between.
    func watch(_ request: UInt32, _ handle: UInt32, events: Int16, level: Int16?, readAhead: Int?) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        let nothingAhead = readAhead == nil ? [] : Reply.readAhead([])
        if let level {
            let outcome = Executor.poll(file.fd, events: level, timeoutMilliseconds: 0)
            switch outcome {
            case .failure(let error): return reply(request, .failure(error), data: nothingAhead)
            case .success(let revents) where revents != 0:
                return reply(request, outcome, data: readAhead.map { self.readAhead(file, handle, $0, after: outcome) } ?? [])
            case .success: break
            }
        }
        watcher.watch(handle, events: events, persistent: false)
        reply(request, result: 0, data: nothingAhead)
    }

    /// PD_READ_AHEAD's pd_read_ahead_done and bytes: a read only when the level found POLLIN, of a file
    /// whose class declares how its reads split. It counts as the guest's read (a FASYNC watch re-arms).
    private func readAhead(_ file: OpenFile, _ handle: UInt32, _ count: Int, after level: Result<Int64, Errno>) -> [UInt8] {
        guard case .success(let revents) = level, revents & Int64(POLLIN) != 0 else { return Reply.readAhead([]) }
        let bytes = file.readAhead(count)
        if !bytes.isEmpty { watcher.rearm(handle) }
        return Reply.readAhead(bytes)
    }

    /// PD_SHARE: the device's descriptor for a same-host guest's mmap.
    func share(_ request: UInt32, _ handle: UInt32) {
        guard let file = file(handle) else { return fail(request, .badFileDescriptor) }
        guard backend.configuration.shareMappings, socket.isLocal else {
            logger.notice("mmap refused: descriptors are not shared with this guest", metadata: ["path": "\(file.path)"])
            return fail(request, .noSuchDevice)
        }
        // The guest gets the descriptor itself: one open for writing it may map for writing.
        let writable = ((try? Syscall.fcntl(file.fd, F_GETFL)) ?? O_RDWR) & O_ACCMODE != O_RDONLY
        if let refused = refusal("mmap (shared descriptor)", path: file.path, writes: writable) { return fail(request, refused) }
        do { try socket.sendRaw(Reply.frame(request, .success(0)), passing: file.fd) } catch { socket.shutdownBoth() }
    }
}
