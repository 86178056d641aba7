// A class's `mmap refuse` clauses: checked when the class resolves, asked at each guest mmap.

extension SpecSet {
    /// The errno a mapping of `length` bytes at device offset `offset` of a file of `specClass` gets, or
    /// nil when no refusal of the class applies. A condition that cannot be evaluated refuses.
    public func mmapRefusal(in specClass: SpecClass, offset: UInt64, length: UInt64) -> Int32? {
        guard !specClass.mmapRefusals.isEmpty else { return nil }
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) else { return specClass.mmapRefusals[0].errno }
        let scope = ConstantScope(parameters: ["offset": Int64(offset), "length": Int64(length)])
        for refusal in specClass.mmapRefusals {
            guard let holds = try? evaluate(refusal.condition, in: scope) else { return refusal.errno }
            if holds != 0 { return refusal.errno }
        }
        return nil
    }

    func resolveMmapRefusal(_ syntax: MmapRefusalSyntax) -> MmapRefusal? {
        // A plug-in variable has no call to be asked for at mmap; any other name must be offset, length
        // or a constant, which one evaluation over a sample mapping reports where it is written.
        if let variable = syntax.condition.variableLocation {
            error(variable, "an mmap condition reads offset, length and constants, not plug-in variables")
            return nil
        }
        guard constantExpression(syntax.condition, parameters: ["offset": 0, "length": 1]) != nil else { return nil }
        guard let number = Self.errnoNumbers[syntax.errno.0] else {
            error(syntax.errno.1, "unknown errno '\(syntax.errno.0)'")
            return nil
        }
        return MmapRefusal(condition: syntax.condition, errno: number, location: syntax.location)
    }

    /// Linux's errno numbers (asm-generic/errno-base.h and errno.h, the same on x86-64 and aarch64), for
    /// the errnos a spec may name.
    static let errnoNumbers: [String: Int32] = [
        "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EINTR": 4, "EIO": 5, "ENXIO": 6, "E2BIG": 7, "ENOEXEC": 8,
        "EBADF": 9, "ECHILD": 10, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "ENOTBLK": 15,
        "EBUSY": 16, "EEXIST": 17, "EXDEV": 18, "ENODEV": 19, "ENOTDIR": 20, "EISDIR": 21, "EINVAL": 22,
        "ENFILE": 23, "EMFILE": 24, "ENOTTY": 25, "ETXTBSY": 26, "EFBIG": 27, "ENOSPC": 28, "ESPIPE": 29,
        "EROFS": 30, "EMLINK": 31, "EPIPE": 32, "EDOM": 33, "ERANGE": 34, "EDEADLK": 35, "ENAMETOOLONG": 36,
        "ENOLCK": 37, "ENOSYS": 38, "ENOTEMPTY": 39, "ENOMSG": 42, "ENODATA": 61, "ETIME": 62, "ENOLINK": 67,
        "EPROTO": 71, "EBADMSG": 74, "EOVERFLOW": 75, "EBADFD": 77, "EILSEQ": 84, "ERESTART": 85,
        "EOPNOTSUPP": 95, "ENOTSUP": 95, "ETIMEDOUT": 110, "EALREADY": 114, "EINPROGRESS": 115,
        "ENOMEDIUM": 123, "ECANCELED": 125, "ENOTRECOVERABLE": 131,
    ]
}
