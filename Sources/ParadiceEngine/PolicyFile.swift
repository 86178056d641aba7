#if canImport(Glibc)
import Glibc
#endif
import Yams

/// The policy file (YAML): a list of rules, tried in order, the first that matches a guest deciding for it.
///
///     rules:
///       - name: cameras                 # optional; audit lines name a rule by index, name and line
///         match: { psk: "camera-*" }    # subject, cn, san (globs), psk (glob), uid, gid; or
///                                       # unauthenticated: true; or any: true
///         devices: ["/dev/video*"]      # globs over the exported paths
///         access: read-only             # or read-write (the default)
///         ioctls: { deny: [VIDIOC_S_CTRL] }   # or { allow: [VIDIOC_QUERYCAP, "VIDIOC_G_*"] }
///         limits: { max-open-files: 16, max-mapped-bytes: 64M }
///         may-focus: true               # may switch the foreground guest (paradice focus)
///
/// Errors read `file:line:col: message`, at the position YAML's parser or the offending node gives.
public enum PolicyFile {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    public static func load(_ path: String) throws -> Policy {
        guard let f = fopen(path, "r") else { throw Failure(description: "\(path): cannot open the policy file") }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            bytes += chunk[0..<n]
            guard bytes.count <= 1 << 20 else { throw Failure(description: "\(path): a policy file is at most 1 MiB") }
        }
        return try parse(String(decoding: bytes, as: UTF8.self), file: path)
    }

    public static func parse(_ text: String, file: String) throws -> Policy {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch let error as YamlError {
            throw Failure(description: describe(error, file))
        }
        let reader = Reader(file: file)
        guard let root, case .mapping(let top) = root else {
            throw reader.failure(root, "a policy is a mapping with a 'rules' list")
        }
        var rulesNode: Node?
        for (key, value) in top {
            switch key.string {
            case "rules": rulesNode = value
            default: throw reader.failure(key, "unknown key '\(key.string ?? "?")' (a policy has 'rules')")
            }
        }
        guard let rulesNode else { throw reader.failure(root, "a policy needs a 'rules' list") }
        guard case .sequence(let list) = rulesNode else { throw reader.failure(rulesNode, "'rules' is a list of rules") }
        var rules: [Policy.Rule] = []
        for (i, node) in list.enumerated() { rules.append(try reader.rule(node, index: i + 1)) }
        return Policy(file: file, rules: rules)
    }

    private static func describe(_ error: YamlError, _ file: String) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return "\(file):\(mark.line):\(mark.column): \(problem)\(context.map { " (\($0.text) at \($0.mark.line):\($0.mark.column))" } ?? "")"
        case .reader(let problem, _, _, _): return "\(file): \(problem)"
        case .duplicatedKeysInMapping(let duplicates, let context):
            return "\(file):\(context.mark.line):\(context.mark.column): duplicate key \(duplicates.sorted().map { "'\($0)'" }.joined(separator: ", "))"
        default: return "\(file): \(error)"
        }
    }

    private struct Reader {
        let file: String

        func failure(_ node: Node?, _ message: String) -> Failure {
            guard let mark = node?.mark else { return Failure(description: "\(file): \(message)") }
            return Failure(description: "\(file):\(mark.line):\(mark.column): \(message)")
        }

        func mapping(_ node: Node, _ what: String) throws -> Node.Mapping {
            guard case .mapping(let m) = node else { throw failure(node, "\(what) is a mapping") }
            return m
        }

        func string(_ node: Node, _ what: String) throws -> String {
            guard case .scalar(let s) = node, !s.string.isEmpty else { throw failure(node, "\(what) is a non-empty string") }
            return s.string
        }

        func strings(_ node: Node, _ what: String) throws -> [String] {
            if case .scalar = node { return [try string(node, what)] }
            guard case .sequence(let list) = node else { throw failure(node, "\(what) is a list of strings") }
            return try list.map { try string($0, what) }
        }

        func number(_ node: Node, _ what: String, bytes: Bool = false) throws -> Int {
            guard case .scalar(let s) = node, let value = bytes ? byteCount(s.string) : Int(s.string), value > 0 else {
                throw failure(node, "\(what) is a \(bytes ? "byte count (K, M, G suffixes)" : "count") above 0")
            }
            return value
        }

        func id(_ node: Node, _ what: String) throws -> UInt32 {
            guard case .scalar(let s) = node, let value = UInt32(s.string) else { throw failure(node, "\(what) is a number from 0 to 4294967295") }
            return value
        }

        func flag(_ node: Node, _ what: String) throws -> Bool {
            guard case .scalar(let s) = node, s.string == "true" || s.string == "false" else { throw failure(node, "\(what) is true or false") }
            return s.string == "true"
        }

        func rule(_ node: Node, index: Int) throws -> Policy.Rule {
            let fields = try mapping(node, "a rule")
            var rule = Policy.Rule(index: index, name: nil, line: node.mark?.line ?? 0, match: Policy.Match(), devices: [],
                                   readOnly: false, ioctls: .all, limits: Policy.LimitOverrides())
            var matched = false
            for (key, value) in fields {
                switch key.string {
                case "name": rule.name = try string(value, "name")
                case "match": rule.match = try match(value); matched = true
                case "devices": rule.devices = try strings(value, "devices")
                case "access":
                    switch value.string {
                    case "read-only": rule.readOnly = true
                    case "read-write": rule.readOnly = false
                    default: throw failure(value, "access is read-only or read-write")
                    }
                case "ioctls": rule.ioctls = try ioctls(value)
                case "limits": rule.limits = try limits(value)
                case "may-focus": rule.mayFocus = try flag(value, "may-focus")
                default:
                    throw failure(key, "unknown key '\(key.string ?? "?")' in a rule (name, match, devices, access, ioctls, limits, may-focus)")
                }
            }
            guard matched else { throw failure(node, "rule \(index) has no 'match'") }
            return rule
        }

        func match(_ node: Node) throws -> Policy.Match {
            var m = Policy.Match()
            let fields = try mapping(node, "match")
            for (key, value) in fields {
                switch key.string {
                case "subject": m.subject = try string(value, "subject")
                case "cn": m.commonName = try string(value, "cn")
                case "san": m.alternativeName = try string(value, "san")
                case "psk": m.presharedKey = try string(value, "psk")
                case "uid": m.uid = try id(value, "uid")
                case "gid": m.gid = try id(value, "gid")
                case "unauthenticated": m.unauthenticated = try flag(value, "unauthenticated")
                case "any": m.any = try flag(value, "any")
                default: throw failure(key, "unknown key '\(key.string ?? "?")' in a match (subject, cn, san, psk, uid, gid, unauthenticated, any)")
                }
            }
            let identities = [m.subject, m.commonName, m.alternativeName, m.presharedKey].compactMap { $0 }.count
                + (m.uid != nil || m.gid != nil ? 1 : 0)
            let kinds = (m.subject != nil || m.commonName != nil || m.alternativeName != nil ? 1 : 0) + (m.presharedKey != nil ? 1 : 0)
                + (m.uid != nil || m.gid != nil ? 1 : 0) + (m.unauthenticated ? 1 : 0) + (m.any ? 1 : 0)
            guard identities > 0 || m.unauthenticated || m.any else { throw failure(node, "a match names no one") }
            guard kinds == 1 else {
                throw failure(node, "a match names one kind of guest: a certificate, a PSK identity, a unix user, unauthenticated or any")
            }
            return m
        }

        func ioctls(_ node: Node) throws -> Policy.IoctlFilter {
            let fields = try mapping(node, "ioctls")
            guard fields.count == 1, let (key, value) = fields.first else { throw failure(node, "ioctls has either 'allow' or 'deny'") }
            switch key.string {
            case "allow": return .only(try strings(value, "allow"))
            case "deny": return .allExcept(try strings(value, "deny"))
            default: throw failure(key, "ioctls has either 'allow' or 'deny'")
            }
        }

        func limits(_ node: Node) throws -> Policy.LimitOverrides {
            var limits = Policy.LimitOverrides()
            for (key, value) in try mapping(node, "limits") {
                let name = key.string ?? ""
                switch name {
                case "max-open-files": limits.openFiles = try number(value, name)
                case "max-requests-in-flight": limits.requestsInFlight = try number(value, name)
                case "max-workers": limits.workerThreads = try number(value, name)
                case "max-mapped-bytes": limits.mappedBytes = try number(value, name, bytes: true)
                case "max-read-bytes-in-flight": limits.readBytesInFlight = try number(value, name, bytes: true)
                default:
                    throw failure(key, "unknown limit '\(name)' (max-open-files, max-requests-in-flight, max-workers, max-mapped-bytes, max-read-bytes-in-flight)")
                }
            }
            return limits
        }

        /// `4096`, `64K`, `80M`, `8G`.
        func byteCount(_ text: String) -> Int? {
            let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
            guard let last = text.uppercased().last else { return nil }
            let scale = units[last] ?? 1
            guard let n = Int(scale == 1 ? Substring(text) : text.dropLast()) else { return nil }
            let (product, overflow) = n.multipliedReportingOverflow(by: scale)
            return overflow ? nil : product
        }
    }
}
