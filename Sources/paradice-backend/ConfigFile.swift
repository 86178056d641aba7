#if canImport(Glibc)
import Glibc
#endif

/// The backend's config file: TOML-style `key = value` lines with the command line's settings.
///
///     listen  = ["unix:/run/paradice.sock", "tcp://127.0.0.1:7000"]
///     plugins = ["alsa", "v4l2"]
///     device  = ["/dev/ptmx", "/dev/pts/*", "/dev/kvm", "/dev/input/event*,sharing=foreground"]
///     specs   = "/usr/local/share/paradice/Specs"
///     log-level = "info"
///     tls-cert = "/etc/paradice/backend.pem"   # TLS on TCP listeners: tls-cert, tls-key, tls-ca,
///     tls-key  = "/etc/paradice/backend.key"   # and/or psk-file; or plain-tcp = true
///     tls-ca   = "/etc/paradice/ca.pem"
///     max-open-files = 4096            # per guest session; also max-requests-in-flight, max-workers,
///     max-mapped-bytes = "8G"          # max-read-bytes-in-flight, max-frame, max-sessions (see --help)
///     policy = "/etc/paradice/policy.yaml"   # who may open what (docs/policy.md)
enum ConfigFile {
    struct Settings {
        var listen: [String] = []
        var plugins: [String] = []
        var devices: [String] = []
        var specs: String?
        var logLevel: String?
        var shareMappings = false
        var trees: [String] = []
        var tlsCert: String?
        var tlsKey: String?
        var tlsCA: String?
        var pskFile: String?
        var policy: String?
        var plainTCP = false
        /// Limit settings (max-…), as written: the command checks them with its own options.
        var limits: [String: String] = [:]
    }

    static let limitKeys: Set<String> = ["max-open-files", "max-requests-in-flight", "max-workers", "max-mapped-bytes",
                                         "max-read-bytes-in-flight", "max-frame", "max-sessions", "handshake-timeout",
                                         "fork-timeout"]

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func load(_ path: String) throws -> Settings {
        guard let f = fopen(path, "r") else { throw Failure(description: "\(path): cannot open the config file") }
        defer { fclose(f) }
        var settings = Settings()
        var lineNumber = 0
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), f) != nil {
            lineNumber += 1
            var line = String(cString: buffer)
            if let hash = line.firstIndex(of: "#"), !line[..<hash].contains("\"") { line = String(line[..<hash]) }
            line = line.trimmingWhitespace
            if line.isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw Failure(description: "\(path):\(lineNumber):1: expected 'key = value'")
            }
            let key = String(line[..<eq]).trimmingWhitespace
            let values = try parseValue(String(line[line.index(after: eq)...]).trimmingWhitespace, path, lineNumber)
            switch key {
            case "listen": settings.listen += values
            case "plugins": settings.plugins += values
            case "device", "devices": settings.devices += values
            case "tree", "trees": settings.trees += values
            case "specs": settings.specs = values.last
            case "log-level", "log_level": settings.logLevel = values.last
            case "share-mappings", "share_mappings": settings.shareMappings = values.last == "true"
            case "tls-cert", "tls_cert": settings.tlsCert = values.last
            case "tls-key", "tls_key": settings.tlsKey = values.last
            case "tls-ca", "tls_ca": settings.tlsCA = values.last
            case "psk-file", "psk_file": settings.pskFile = values.last
            case "policy": settings.policy = values.last
            case "plain-tcp", "plain_tcp":
                guard values.last == "true" || values.last == "false" else {
                    throw Failure(description: "\(path):\(lineNumber):\(line.distance(from: line.startIndex, to: eq) + 3): plain-tcp is true or false")
                }
                settings.plainTCP = values.last == "true"
            case let k where limitKeys.contains(k.replacingUnderscores): settings.limits[k.replacingUnderscores] = values.last
            default: throw Failure(description: "\(path):\(lineNumber):1: unknown setting '\(key)'")
            }
        }
        return settings
    }

    private static func parseValue(_ text: String, _ path: String, _ line: Int) throws -> [String] {
        if text.hasPrefix("[") {
            guard text.hasSuffix("]") else { throw Failure(description: "\(path):\(line): a list needs its closing ']'") }
            return try text.dropFirst().dropLast().split(separator: ",").map { try unquote(String($0).trimmingWhitespace, path, line) }
                .filter { !$0.isEmpty }
        }
        return [try unquote(text, path, line)]
    }

    private static func unquote(_ text: String, _ path: String, _ line: Int) throws -> String {
        if text.hasPrefix("\"") {
            guard text.count >= 2, text.hasSuffix("\"") else { throw Failure(description: "\(path):\(line): unterminated string") }
            return String(text.dropFirst().dropLast())
        }
        return text
    }
}

extension String {
    var replacingUnderscores: String { String(map { $0 == "_" ? "-" : $0 }) }

    var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" || c == "\n" || c == "\r" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\n" || c == "\r" { s.removeLast() }
        return String(s)
    }
}
