import CParadice
import ParadiceSystem
import ParadiceWire

extension Session {
    /// Serves one decoded request. A bad value (an unknown handle, a flag the driver refuses, an unknown op)
    /// gets the errno a local call would; a frame that is not what its op says ends the session: its decoding
    /// threw already, or (PD_IOCTL, PD_MUNMAP's mirror contents) its handler throws MalformedFrame.
    func dispatch(_ frame: RequestFrame) throws {
        let request = frame.id
        do {
            switch frame.request {
            case .open(let flags, let mode, let path): open(request, flags: flags, mode: mode, path: path)
            case .close: close(request, frame.handle)
            case .read(let count, let offset): read(request, frame.handle, count: count, offset: offset)
            case .write(let data, let offset): write(request, frame.handle, data, offset: offset)
            case .ioctl(let raw): try ioctl(raw)
            case .poll(let events, let timeout, let readAhead):
                poll(request, frame.handle, events: events, timeoutMilliseconds: timeout, readAhead: readAhead)
            case .seek(let offset, let whence): seek(request, frame.handle, offset: offset, whence: whence)
            case .fsync: fsync(request, frame.handle)
            case .fstat: fstat(request, frame.handle)
            case .setStatusFlags(let flags): setStatusFlags(request, frame.handle, flags)
            case .fasync(let enabled): fasync(request, frame.handle, enabled: enabled)
            case .watch(let events, let level, let readAhead): watch(request, frame.handle, events: events, level: level, readAhead: readAhead)
            case .share: share(request, frame.handle)
            case .map(let offset, let length, let protection):
                guard let file = file(frame.handle) else { return fail(request, .badFileDescriptor) }
                map(request, file, offset: offset, length: length, protection: protection)
            case .unmap(let mapping, let contents): try unmap(request, mapping: mapping, contents: contents)
            case .readLink(let path): readLink(request, path)
            case .listDirectory(let path): listDirectory(request, path)
            case .interrupt(let target): interrupt(target)   // no reply of its own
            case .focus(let guest): focus(request, guest: guest)
            case .fork: fork(request, returning: frame.handle)
            case .unknown(let op):
                logger.warning("unknown operation", metadata: ["op": "\(op)"])
                fail(request, .noFunction)
            }
        } catch let error as ProtocolError {
            throw MalformedFrame(op: frame.op, reason: error.message)
        }
    }
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
            PD_INTERRUPT.code: "INTERRUPT", PD_FOCUS.code: "FOCUS", PD_FORK.code: "FORK",
        ]
        return names[op].map { "PD_" + $0 } ?? "\(op)"
    }
}
