#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ParadiceSpec
import Testing

/// Golden diagnostics: every `testdata/errors/*.spec` names, on its offending lines, the exact diagnostics
/// the compiler must give for it (format in testdata/errors/README.md).
@Suite("Spec compiler diagnostics")
struct SpecDiagnosticsTests {
    static let folder: String = {
        let parts = #filePath.split(separator: "/").dropLast()
        return "/" + parts.joined(separator: "/") + "/testdata/errors"
    }()

    static let files: [String] = {
        guard let dir = opendir(folder) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name.hasSuffix(".spec") { names.append(name) }
        }
        return names.sorted()
    }()

    @Test func theGoldenFilesAreThere() {
        // Guards the test below against passing over an empty or moved folder.
        #expect(Self.files.count >= 5, "\(Self.folder)")
    }

    @Test(arguments: files)
    func compilerGivesExactlyTheAnnotatedDiagnostics(_ name: String) throws {
        let text = try SpecSet.readTextFile(Self.folder + "/" + name)
        let expected = try Self.expectedDiagnostics(in: text, file: name)
        #expect(!expected.isEmpty, "\(name) expects no diagnostic: a golden file must show at least one")

        var found: [String] = []
        do {
            _ = try SpecSet.compile(sources: [(name, text)])
        } catch let errors as SpecErrors {
            found = errors.diagnostics.map(\.description)
        }
        let missing = expected.filter { !found.contains($0) }
        let unexpected = found.filter { !expected.contains($0) }
        #expect(missing.isEmpty, "expected, not given:\n\(missing.joined(separator: "\n"))")
        #expect(unexpected.isEmpty, "given, not expected:\n\(unexpected.joined(separator: "\n"))")
        if missing.isEmpty && unexpected.isEmpty {
            #expect(found.sorted() == expected.sorted())   // and each as many times as expected
        }
    }

    struct MalformedAnnotation: Error, CustomStringConvertible {
        var description: String
    }

    /// `FILE:LINE:COLUMN: MESSAGE` for every `### COLUMN: MESSAGE` of the text. An annotation-only line
    /// belongs to the nearest line above it that holds code.
    static func expectedDiagnostics(in text: String, file: String) throws -> [String] {
        var expected: [String] = []
        var codeLine = 0
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let parts = line.pieces(separatedBy: "###")
            let onlyAnnotations = parts.count > 1 && parts[0].allSatisfy { $0 == " " || $0 == "\t" }
            if !onlyAnnotations { codeLine = index + 1 }
            for annotation in parts.dropFirst() {
                let trimmed = annotation.trimmingSpaces
                guard let colon = trimmed.firstIndex(of: ":"), let column = Int(trimmed[..<colon]), column > 0 else {
                    throw MalformedAnnotation(description: "\(file):\(index + 1): '### \(trimmed)' is not '### COLUMN: MESSAGE'")
                }
                let message = trimmed[trimmed.index(after: colon)...].trimmingSpaces
                expected.append("\(file):\(codeLine):\(column): \(message)")
            }
        }
        return expected
    }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

    /// The pieces between occurrences of a separator (no Foundation).
    fileprivate func pieces(separatedBy separator: String) -> [String] {
        var pieces: [String] = []
        var rest = Substring(self)
        while let range = rest.firstRange(of: separator) {
            pieces.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        pieces.append(String(rest))
        return pieces
    }
}
