#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem
import ParadiceWire

extension Session {
    /// PD_HELLO: the guest's version is checked, a forked child joins its parent's files, and the reply
    /// lists what the backend exports.
    func handshake(_ frame: Frame) throws {
        let hello: Hello
        do { hello = try Hello(frame) } catch { throw MalformedFrame(op: frame.op, reason: error.message) }
        guard hello.isCompatible else {
            logger.warning("incompatible guest", metadata: ["version": "\(hello.header.major).\(hello.header.minor)"])
            try socket.sendRaw(Reply.frame(frame.request, .failure(.protocolNotSupported)))
            throw ProtocolError("version \(hello.header.major).\(hello.header.minor)")
        }
        logger[metadataKey: "guest"] = "\(hello.name.isEmpty ? "?" : hello.name) pid \(hello.header.pid)"
        if hello.header.join_session != 0,
           let ticket = backend.claimForkTicket(hello.header.join_session, token: hello.header.join_token, by: identity) {
            // A forked child with its PD_FORK ticket: the files its parent held at the fork become its own.
            handles = ticket.handles
            guest = ticket.guest
            handles.transfer(from: hello.header.join_session, to: id)
            logger.info("forked guest claimed its parent's files", metadata: ["ticket": "\(hello.header.join_session)"])
        } else if hello.header.join_session != 0 {
            // A forked child without a ticket: it shares its parent's files as they are now, each with a
            // reference of its own.
            guard let parent = backend.session(hello.header.join_session), parent.handles.token == hello.header.join_token else {
                logger.warning("refused a join of an unknown session", metadata: ["session": "\(hello.header.join_session)"])
                try socket.sendRaw(Reply.frame(frame.request, .failure(.notPermitted)))
                throw ProtocolError("bad join")
            }
            // A child is its parent's principal: another guest's token does not open its files.
            guard !parent.identity.isAuthenticated || parent.identity.isSamePrincipal(as: identity) else {
                logger.warning("refused a join of another guest's session",
                               metadata: ["session": "\(parent.id)", "parent identity": "\(parent.identity)"])
                try socket.sendRaw(Reply.frame(frame.request, .failure(.notPermitted)))
                throw ProtocolError("join across identities")
            }
            handles = parent.handles
            guest = parent.guest
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
                                capabilities: PD_CAP_EVENTS | PD_CAP_FD_SLOTS | PD_CAP_INTERRUPT | PD_CAP_WATCH_LEVEL | PD_CAP_SLOTS_AHEAD | PD_CAP_READ_AHEAD, session: id,
                                device_count: UInt32(exports.count), token: handles.token))
        for export in exports {
            let path = Array(export.pattern.utf8)
            let className = Array((backend.exports.classFor(export.pattern)??.name ?? export.className ?? "").utf8)
            let node = try? Syscall.stat(export.pattern)
            w.append(pd_device(path_length: UInt32(path.count), class_length: UInt32(className.count),
                               mode: node?.st_mode ?? 0, reserved: 0, rdev: node.map { UInt64($0.st_rdev) } ?? 0))
            w.append(bytes: path)
            w.append(bytes: className)
            w.pad()
        }
        try socket.sendRaw(w.frame(op: PD_REPLY.code, request: frame.request))
    }
}

extension Session {
    /// PD_FORK: the guest process is about to fork or exec. The ticket holds what the session's table holds
    /// now, so its child (or the new program) keeps the files it inherits whatever the parent closes or opens
    /// meanwhile, or if it exits. With a ticket in the handle: the fork or exec failed, the ticket goes back.
    func fork(_ request: UInt32, returning returned: UInt32) {
        if returned != 0 {
            guard let count = backend.returnForkTicket(returned, to: self) else { return fail(request, .invalidArgument) }
            logger.debug("a fork ticket came back", metadata: ["ticket": "\(returned)", "files": "\(count)"])
            return reply(request, result: 0)
        }
        guard let ticket = backend.issueForkTicket(for: self) else {
            reachedLimit("fork tickets", backend.configuration.limits.forkTickets, .resourceTemporarilyUnavailable)
            return fail(request, .resourceTemporarilyUnavailable)
        }
        reply(request, result: Int64(ticket))
    }
}
