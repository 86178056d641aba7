#if canImport(Glibc)
import Glibc
#endif
import CParadice
import ParadiceSystem
import ParadiceWire

/// Device mappings a session holds for a guest that keeps a mirror of each (a backend on another
/// machine): PD_MMAP maps the device here, the plug-in's sync points say which bytes travel, PD_MUNMAP
/// takes the mirror's last stores and unmaps.
extension Session {
    /// PD_MMAP: the backend maps the device; the guest keeps a mirror that the plug-in's sync points update.
    func map(_ request: UInt32, _ file: OpenFile, offset: UInt64, length: UInt64, protection: Int32) {
        guard length > 0, length <= 1 << 30, offset <= UInt64(Int64.max) - length else {
            return fail(request, .invalidArgument)
        }
        let writable = protection & PROT_WRITE != 0
        if let refused = refusal(writable ? "mmap PROT_WRITE" : "mmap", path: file.path, writes: writable) { return fail(request, refused) }
        if let specClass = file.specClass, let refusal = backend.specs.mmapRefusal(in: specClass, offset: offset, length: length) {
            logger.debug("mmap refused by the spec", metadata: ["path": "\(file.path)", "offset": "\(offset)"])
            return fail(request, Errno(refusal))
        }
        if let refusal = file.state?.mayMap(offset: offset, length: length) {
            logger.debug("mmap refused by the plug-in", metadata: ["path": "\(file.path)", "offset": "\(offset)"])
            return fail(request, refusal)
        }
        let count = Int(length)
        let room = lock.withLock { () -> Bool in
            guard mappedBytes + count <= limits.mappedBytes else { return false }
            mappedBytes += count   // taken now: two maps in a row cannot both pass
            return true
        }
        guard room else {
            reachedLimit("mapped bytes", limits.mappedBytes, .noMemory)
            return fail(request, .noMemory)
        }
        let address: UnsafeMutableRawPointer
        switch Executor.map(file.fd, offset: offset, length: count, protection: protection) {
        case .success(let mapped): address = mapped
        case .failure(let error):
            lock.withLock { mappedBytes -= count }
            return fail(request, error)
        }
        let id = lock.withLock { () -> UInt32 in
            var id = nextMapping
            while id == 0 || mappings[id] != nil { id &+= 1 }   // a wrapped counter never reuses a live id
            nextMapping = id &+ 1
            mappings[id] = DeviceMapping(file: file, address: address, length: count, deviceOffset: offset)
            return id
        }
        logger.debug("mapped", metadata: ["path": "\(file.path)", "offset": "\(offset)", "length": "\(length)"])
        // What the new mirror starts with, if the plug-in says the device holds data there already.
        let start = offset..<(offset + length)
        let initial = mappingRanges(of: file, file.state?.mappedToGuest(mapping: start) ?? []).filter { $0.id == id }
        let contents = Reply.mirrorContents(initial.map {
            (mapping: id, offset: $0.offset, bytes: UnsafeRawBufferPointer(start: $0.mapping.address + $0.offset, count: $0.length))
        })
        reply(request, result: Int64(id), data: contents)
    }

    /// PD_MUNMAP: the guest's last stores into a writable shared mirror reach the device, then it is unmapped.
    func unmap(_ request: UInt32, mapping: UInt32, contents: Result<[MirrorBytes], ProtocolError>) throws(ProtocolError) {
        let removed = lock.withLock { () -> DeviceMapping? in
            guard let m = mappings.removeValue(forKey: mapping) else { return nil }
            mappedBytes -= m.length
            return m
        }
        guard let removed else { return fail(request, .invalidArgument) }
        for range in try contents.get() {
            // Only bytes of this mapping, inside it.
            guard range.mapping == mapping, range.offset <= UInt64(removed.length),
                  UInt64(range.bytes.count) <= UInt64(removed.length) - range.offset else { continue }
            range.bytes.withUnsafeBytes {
                (removed.address + Int(range.offset)).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
            }
        }
        reply(request, result: 0)
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
}
