/// The files of one guest process and, after fork, of its children: every session that joined the table
/// holds its own reference to each handle, so a child's close drops only the child's, as with
/// descriptors across fork. A file closes when no session holds it any more.
final class HandleTable: @unchecked Sendable {
    private let lock = Lock()
    /// Handle n is slot n; 0 is never a handle. Freed numbers are reused lowest first, like fds.
    private var files: [OpenFile?] = [nil]
    private var holders: [Set<UInt32>] = [[]]   // per handle: the sessions holding it
    private var held: [UInt32: Int] = [:]        // per session: how many handles it holds
    let token = UInt32.random(in: 1...UInt32.max)

    func file(_ handle: UInt32, for session: UInt32) -> OpenFile? {
        lock.withLock {
            let h = Int(handle)
            return h < files.count && holders[h].contains(session) ? files[h] : nil
        }
    }

    /// A new handle for `file`, or nil when the session holds `limit` already (the caller closes the file).
    func register(_ file: OpenFile, for session: UInt32, limit: Int = .max) -> UInt32? {
        lock.withLock {
            guard held[session, default: 0] < limit else { return nil }
            held[session, default: 0] += 1
            if let free = files.indices.dropFirst().first(where: { files[$0] == nil }) {
                files[free] = file
                holders[free] = [session]
                return UInt32(free)
            }
            files.append(file)
            holders.append([session])
            return UInt32(files.count - 1)
        }
    }

    /// How many handles the session holds.
    func count(for session: UInt32) -> Int { lock.withLock { held[session, default: 0] } }

    /// Drops the session's reference; the file itself when it was the last.
    func release(_ handle: UInt32, for session: UInt32) -> Bool {
        lock.withLock {
            let h = Int(handle)
            guard h < files.count, holders[h].remove(session) != nil else { return false }
            held[session, default: 1] -= 1
            if holders[h].isEmpty { files[h] = nil }
            return true
        }
    }

    /// A forked child's session takes a reference to everything the parent's holds.
    func join(_ session: UInt32, from parent: UInt32) {
        lock.withLock {
            for h in holders.indices where holders[h].contains(parent) && holders[h].insert(session).inserted {
                held[session, default: 0] += 1
            }
        }
    }

    /// The references one session holds become another's: a forked child claiming its ticket.
    func transfer(from holder: UInt32, to session: UInt32) {
        lock.withLock {
            for h in holders.indices where holders[h].remove(holder) != nil {
                if holders[h].insert(session).inserted { held[session, default: 0] += 1 }
            }
            held[holder] = nil
        }
    }

    /// Every reference of a session that ended; returns how many files it held.
    func releaseAll(for session: UInt32) -> Int {
        lock.withLock {
            var count = 0
            for h in holders.indices where holders[h].remove(session) != nil {
                count += 1
                if holders[h].isEmpty { files[h] = nil }
            }
            held[session] = nil
            return count
        }
    }
}
