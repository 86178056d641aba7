import ArgumentParser
import ParadiceToolSupport
#if canImport(Glibc)
import Glibc
#endif

/// How much of Paradice is generic and how much is per class: the paper's ~900 of ~7,700 lines.
struct Lines: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Count source lines: the generic code (engine, frontends, guest module and daemon), each plug-in, and the specs (data, counted apart).")

    @Option(help: "The repository to count (default: the one above the current folder).")
    var root: String?

    func run() throws {
        guard let top = root ?? SpecLocator.find().map({ String($0.dropLast("/Specs".count)) }) else {
            throw ValidationError("no repository found; pass --root")
        }
        var rows: [(String, Int, Int)] = []   // name, files, lines
        var generic = (0, 0)
        for module in try listDirectory(top + "/Sources").sorted() {
            let (files, lines) = count(top + "/Sources/" + module, extensions: [".swift", ".c", ".h"])
            rows.append(("  Sources/" + module, files, lines))
            generic.0 += files
            generic.1 += lines
        }
        // The guest kernel's module is generic too: it forwards file operations and names no device class.
        for module in ((try? listDirectory(top + "/Kernel")) ?? []).sorted() where isDirectory(top + "/Kernel/" + module) {
            let (files, lines) = count(top + "/Kernel/" + module, extensions: [".c", ".h"])
            rows.append(("  Kernel/" + module, files, lines))
            generic.0 += files
            generic.1 += lines
        }
        var plugins = (0, 0)
        var pluginRows: [(String, Int, Int)] = []
        for plugin in ((try? listDirectory(top + "/Plugins")) ?? []).sorted() where isDirectory(top + "/Plugins/" + plugin) {
            let (files, lines) = count(top + "/Plugins/" + plugin, extensions: [".swift", ".c", ".h"])
            pluginRows.append(("  Plugins/" + plugin, files, lines))
            plugins.0 += files
            plugins.1 += lines
        }
        let specs = count(top + "/Specs", extensions: [".spec"])
        func line(_ name: String, _ files: Int, _ lines: Int) { print(pad(name, 34) + pad("\(files) files", 10) + "\(lines) lines") }
        print("generic (no device class named):")
        rows.forEach { line($0.0, $0.1, $0.2) }
        line("generic total", generic.0, generic.1)
        let code = generic.1 + plugins.1
        func share(_ lines: Int) -> String { format2(Double(lines) / Double(max(1, code)) * 100) + "% of the code" }
        print("class-specific plug-ins:")
        pluginRows.forEach { print(pad($0.0, 34) + pad("\($0.1) files", 10) + pad("\($0.2) lines", 12) + share($0.2)) }
        print(pad("plug-in total", 34) + pad("\(plugins.0) files", 10) + pad("\(plugins.1) lines", 12) + share(plugins.1))
        print("data:")
        line("  Specs (*.spec)", specs.0, specs.1)
        // The figure the project tracks: plug-in lines over all code lines (generic + plug-ins; specs are data).
        print("plug-ins' share (class-specific code): \(plugins.1) of \(code) lines of code = "
              + format2(Double(plugins.1) / Double(max(1, code)) * 100) + "%")
    }

    /// Non-blank lines that are not only a comment.
    private func count(_ folder: String, extensions: [String]) -> (Int, Int) {
        var files = 0, lines = 0
        for entry in (try? listDirectory(folder)) ?? [] {
            let path = folder + "/" + entry
            if isDirectory(path) {
                let (f, l) = count(path, extensions: extensions)
                files += f
                lines += l
            } else if extensions.contains(where: { entry.hasSuffix($0) }) {
                files += 1
                guard let file = fopen(path, "r") else { continue }
                var buffer = [CChar](repeating: 0, count: 4096)
                while fgets(&buffer, 4096, file) != nil {
                    let text = String(cString: buffer).trimmingWhitespace
                    if text.isEmpty || text.hasPrefix("//") || text.hasPrefix("#") && entry.hasSuffix(".spec") || text.hasPrefix("*") || text.hasPrefix("/*") { continue }
                    lines += 1
                }
                fclose(file)
            }
        }
        return (files, lines)
    }

    private func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw ValidationError("cannot read \(path)") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    private func isDirectory(_ path: String) -> Bool { SpecLocator.isDirectory(path) }
}
