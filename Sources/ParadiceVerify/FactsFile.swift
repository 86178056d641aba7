import ParadiceSpec

/// Layout facts recorded from a header that no package installs (netmap):
/// `sizeof TYPE N`, `alignof TYPE N`, `offsetof TYPE MEMBER OFFSET SIZE`, `const NAME V`, `ioctl NAME V`.
enum FactsFile {
    static func load(_ path: String) throws -> [String: [Int64]] {
        let text = readFile(path)
        guard !text.isEmpty else { throw Diagnostic(SourceLocation(file: path, line: 1, column: 1), "cannot read the facts file") }
        var sizes: [String: Int64] = [:]
        var aligns: [String: Int64] = [:]
        var facts: [String: [Int64]] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let kind = words.first else { continue }
            let location = SourceLocation(file: path, line: index + 1, column: 1)
            func number(_ s: String) throws -> Int64 {
                let v = s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16).map { Int64(bitPattern: $0) } : Int64(s)
                guard let v else { throw Diagnostic(location, "'\(s)' is not a number") }
                return v
            }
            switch kind {
            case "sizeof", "alignof":
                guard words.count >= 3 else { throw Diagnostic(location, "expected '\(kind) TYPE N'") }
                let type = words[1..<(words.count - 1)].joined(separator: " ")
                if kind == "sizeof" { sizes[type] = try number(words.last!) } else { aligns[type] = try number(words.last!) }
            case "offsetof":
                guard words.count >= 5 else { throw Diagnostic(location, "expected 'offsetof TYPE MEMBER OFFSET SIZE'") }
                let type = words[1..<(words.count - 3)].joined(separator: " ")
                facts["member|\(type)|\(words[words.count - 3])"] = [try number(words[words.count - 2]), try number(words.last!)]
            case "const", "ioctl":
                guard words.count == 3 else { throw Diagnostic(location, "expected '\(kind) NAME VALUE'") }
                facts["\(kind)|\(words[1])"] = [try number(words[2])]
            default:
                throw Diagnostic(location, "unknown fact '\(kind)'")
            }
        }
        for (type, size) in sizes { facts["type|\(type)"] = [size, aligns[type] ?? -1] }
        return facts
    }
}
