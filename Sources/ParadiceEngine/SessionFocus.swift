#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
import ParadiceTransport
import ParadiceWire

/// PD_FOCUS, the control request of `paradice focus`: which guest is the foreground of the `foreground` exports.
extension Session {
    func focus(_ request: UInt32, guest: GuestPath) {
        guard case .success(let name) = guest else { return reply(request, guest.map { _ in 0 }) }
        guard mayFocus else {
            logger.warning("policy denied", metadata: [
                "who": "\(identity)", "op": "focus", "path": "-", "ioctl": "-", "guest": "\(name)",
                "rule": "\(focusRuleDescription)",
            ])
            return fail(request, .notPermitted)
        }
        let guests = backend.guests(named: name)
        guard let target = guests.first else {
            logger.notice("focus refused: no session is that guest", metadata: ["guest": "\(name)"])
            return fail(request, .noSuchFileOrDirectory)
        }
        guard guests.count == 1 else {
            logger.notice("focus refused: the name is more than one guest's", metadata: ["guest": "\(name)", "guests": "\(guests)"])
            return fail(request, .invalidArgument)
        }
        let files = backend.sharing.focus(target)
        logger.notice("foreground switched", metadata: ["to": "\(target)", "files": "\(files)"])
        reply(request, result: Int64(files))
    }

    /// With a policy, its rule's `may-focus`; without one, the superuser and the backend's own user on
    /// this machine (a unix socket proves who they are), no one else.
    private var mayFocus: Bool {
        if let (_, rule) = decision { return rule?.mayFocus ?? false }
        guard case .local(let uid, _, _) = identity else { return false }
        return uid == 0 || uid == getuid()
    }

    private var focusRuleDescription: String {
        guard let (policy, rule) = decision else { return "no policy: only uid 0 or the backend's own uid on a unix socket" }
        return rule.map { "\($0.described(in: policy.file)) has no may-focus" } ?? "no rule matches (\(policy.file))"
    }
}
