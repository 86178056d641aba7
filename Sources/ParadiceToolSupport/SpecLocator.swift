#if canImport(Glibc)
import Glibc
#endif

/// Where the command-line tools find the spec folder.
public enum SpecLocator {
    /// $PARADICE_SPECS, else the nearest Specs/ above the current folder, else the one beside the program.
    public static func defaultFolder() -> String? {
        if let env = getenv("PARADICE_SPECS") { return String(cString: env) }
        return find()
    }

    public static func find() -> String? {
        var dir = currentDirectory()
        for _ in 0..<12 {
            if isDirectory(dir + "/Specs") { return dir + "/Specs" }
            guard let slash = dir.lastIndex(of: "/"), dir != "/" else { break }
            dir = slash == dir.startIndex ? "/" : String(dir[..<slash])
        }
        // Beside the program: <repo>/.build/<config>/paradice or <prefix>/bin/paradice.
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 {
            let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            var parts = exe.split(separator: "/").dropLast()
            for _ in 0..<4 {
                let base = "/" + parts.joined(separator: "/")
                for candidate in [base + "/Specs", base + "/share/paradice/Specs"] where isDirectory(candidate) { return candidate }
                parts = parts.dropLast()
            }
        }
        return nil
    }

    public static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return "." }
        return String(cString: buffer)
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}
