#if canImport(Glibc)
import Glibc
#endif
import ParadiceSpec

/// Per spec file: what was checked and what disagreed.
public struct VerifyReport: Sendable {
    public var file: String
    public var className: String?
    public var source: String          // "headers" or the facts file
    public var structs = 0
    public var fields = 0
    public var constants = 0
    public var ioctls = 0
    public var mismatches: [Diagnostic] = []
}

/// Compares spec layouts, constants and ioctl numbers with the C headers (or a facts file).
public struct Verifier {
    public var compiler: String
    public var workDirectory: String

    public init(compiler: String = "cc", workDirectory: String? = nil) {
        self.compiler = compiler
        if let w = workDirectory {
            self.workDirectory = w
        } else {
            var template = Array("/tmp/paradice-verify-XXXXXX".utf8CString)
            // mkdtemp answers a pointer into the template: read while the template is lent.
            let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!).map { String(cString: $0) } }
            self.workDirectory = made ?? "/tmp"
        }
    }

    public func verify(_ specs: SpecSet) -> [VerifyReport] {
        specs.files.map { verify($0, in: specs) }
    }

    public func verify(_ file: SpecFile, in specs: SpecSet) -> VerifyReport {
        let checks = layoutChecks(for: file, in: specs)
        var report = VerifyReport(file: file.path, className: file.specClass?.name, source: "headers")
        var actual: [String: [Int64]] = [:]
        if let facts = file.facts {
            let path = facts.hasPrefix("/") ? facts : directoryName(file.path) + "/" + facts
            report.source = path
            do {
                actual = try FactsFile.load(path)
            } catch let e as Diagnostic {
                report.mismatches.append(e)
                return report
            } catch {
                return report
            }
        } else {
            actual = runProbe(file: file, checks: checks, report: &report)
        }
        for check in checks {
            guard let values = actual[check.key] else {
                if file.facts != nil {
                    report.mismatches.append(Diagnostic(check.location, "\(check.what): no fact recorded (\(check.key))"))
                }
                continue
            }
            let expected = Array(check.expected.prefix(check.compareCount))
            let got = Array(values.prefix(check.compareCount))
            // A C constant such as (0xf << 28) has type int: equal modulo 2^32 is equal.
            let sameInt = check.kind == .constant && got.count == 1 && expected.count == 1
                && Int32(truncatingIfNeeded: expected[0]) == Int32(truncatingIfNeeded: got[0])
                && (0...Int64(UInt32.max)).contains(expected[0]) && got[0] < 0 && got[0] >= Int64(Int32.min)
            if expected != got && !sameInt {
                report.mismatches.append(Diagnostic(check.location,
                    "\(check.what): spec says \(render(expected, check)), C says \(render(got, check))"))
            }
            switch check.kind {
            case .type: report.structs += 1
            case .member: report.fields += 1
            case .constant: report.constants += 1
            case .ioctl: report.ioctls += 1
            }
        }
        return report
    }

    private func render(_ values: [Int64], _ check: LayoutCheck) -> String {
        if check.kind == .ioctl { return values.map { "0x" + String(UInt32(truncatingIfNeeded: $0), radix: 16) }.joined(separator: ", ") }
        return values.map(String.init).joined(separator: ", ")
    }

    /// Compiles and runs the probe; checks whose line fails to compile become mismatches and are dropped.
    private func runProbe(file: SpecFile, checks: [LayoutCheck], report: inout VerifyReport) -> [String: [Int64]] {
        var live = Array(checks.indices)
        let base = workDirectory + "/" + baseName(file.path).replacingOccurrences(of: ".", with: "_")
        for _ in 0..<4 {
            let subset = live.map { checks[$0] }
            let (source, firstLine) = probeSource(headers: file.headers, checks: subset)
            writeFile(base + ".c", source)
            let flags = file.cflags.map(shellQuote).joined(separator: " ")
            let status = shell("\(compiler) -std=gnu11 -w \(flags) -o \(base).probe \(base).c > \(base).cc.log 2>&1")
            if status != 0 {
                let log = readFile(base + ".cc.log")
                var failing = Set<Int>()
                for line in log.split(separator: "\n") {
                    // "path.c:LINE:COL: error: message"
                    let parts = line.split(separator: ":", maxSplits: 4, omittingEmptySubsequences: false)
                    guard parts.count >= 5, parts[0].hasSuffix(".c"), let n = Int(parts[1]), parts[3].contains("error") else { continue }
                    let index = n - firstLine
                    guard index >= 0, index < subset.count else { continue }
                    if failing.insert(index).inserted {
                        let check = subset[index]
                        report.mismatches.append(Diagnostic(check.location,
                            "\(check.what): the C compiler rejects it: \(String(parts[4]).trimmingCharacters(in: " "))"))
                    }
                }
                if failing.isEmpty {
                    let first = log.split(separator: "\n").prefix(5).joined(separator: "\n")
                    report.mismatches.append(Diagnostic(SourceLocation(file: file.path, line: 1, column: 1),
                        "the C probe does not compile against the headers:\n\(first)"))
                    return [:]
                }
                live = live.enumerated().filter { !failing.contains($0.offset) }.map(\.element)
                continue
            }
            guard shell("\(base).probe > \(base).out 2>&1") == 0 else {
                report.mismatches.append(Diagnostic(SourceLocation(file: file.path, line: 1, column: 1), "the C probe failed to run"))
                return [:]
            }
            var results: [String: [Int64]] = [:]
            for line in readFile(base + ".out").split(separator: "\n") {
                let numbers = line.split(separator: " ").compactMap { Int64($0) }
                guard let id = numbers.first, Int(id) < subset.count else { continue }
                results[subset[Int(id)].key] = Array(numbers.dropFirst())
            }
            return results
        }
        return [:]
    }
}

extension String {
    func replacingOccurrences(of a: String, with b: String) -> String { split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b) }
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }
func directoryName(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return String(path[..<slash])
}
func shellQuote(_ s: String) -> String { "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'" }

func shell(_ command: String) -> Int32 {
    let status = system(command)
    return status == -1 ? -1 : (status >> 8) & 0xff
}

func writeFile(_ path: String, _ text: String) {
    guard let f = fopen(path, "wb") else { return }
    _ = text.utf8CString.withUnsafeBufferPointer { fwrite($0.baseAddress!, 1, $0.count - 1, f) }
    fclose(f)
}

func readFile(_ path: String) -> String {
    (try? SpecSet.readTextFile(path)) ?? ""
}
