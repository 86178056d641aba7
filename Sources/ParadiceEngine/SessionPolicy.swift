#if canImport(Glibc)
import Glibc
#endif
import ParadiceSystem
import ParadiceTransport

/// The policy's checks on a guest's calls (Policy.swift). Each refusal is the errno a local permission
/// check gives (EACCES for opens, writes and writable mappings, EPERM for an ioctl) and one audit line:
/// who, what, and the rule that decided (or that none matched).
extension Session {
    /// What decides for this session now: nothing (no policy), or the policy in force and the rule of it
    /// that matches the guest, if any. Worked out again only when a reload replaced the policy.
    var decision: (policy: Policy, rule: Policy.Rule?)? {
        guard let policy = backend.policy else { return nil }
        return policyCache.withLock { cached in
            if let cached, cached.policy === policy { return cached }
            let fresh = (policy: policy, rule: policy.rule(for: identity))
            cached = fresh
            return fresh
        }
    }

    /// The refusal for `op` on `path`, if the policy refuses it (and its audit line is written).
    func refusal(_ op: String, path: String, writes: Bool, ioctl: String? = nil) -> Errno? {
        guard let (policy, rule) = decision else { return nil }
        let refused: Errno?
        if let rule, rule.mayOpen(path) {
            if writes && rule.readOnly {
                refused = .permissionDenied
            } else if let ioctl, !rule.ioctls.permits(ioctl) {
                refused = .notPermitted
            } else {
                refused = nil
            }
        } else {
            refused = ioctl == nil ? .permissionDenied : .notPermitted
        }
        guard let refused else { return nil }
        logger.warning("policy denied", metadata: [
            "who": "\(identity)", "op": "\(op)", "path": "\(path)", "ioctl": "\(ioctl ?? "-")",
            "rule": "\(rule?.described(in: policy.file) ?? "no rule matches (\(policy.file))")",
        ])
        return refused
    }

    /// Opens inside exported trees and folders: any guest a rule matches may make them (they are read-only);
    /// a guest no rule matches may open nothing.
    func treeRefusal(_ path: String) -> Errno? {
        guard let (policy, rule) = decision, rule == nil else { return nil }
        logger.warning("policy denied", metadata: [
            "who": "\(identity)", "op": "open", "path": "\(path)", "ioctl": "-", "rule": "no rule matches (\(policy.file))",
        ])
        return .permissionDenied
    }

    /// The limits of this session: the backend's, with those its rule sets.
    var limits: GuestLimits {
        let base = backend.configuration.limits
        guard let rule = decision?.rule else { return base }
        return rule.limits.applied(to: base)
    }
}
