/// Turns spec text into tokens. Newlines are statement separators except inside `( )` and `[ ]`.
struct Lexer {
    private let bytes: [UInt8]
    private let file: String
    private var index = 0
    private var line = 1
    private var lineStart = 0
    private var nesting = 0
    private(set) var diagnostics: [Diagnostic] = []

    init(text: String, file: String) {
        self.bytes = Array(text.utf8)
        self.file = file
    }

    private static let singlePuncts = Set("{}()<>[],;=+-*/%&|^~!:.".utf8)
    private static let twoCharPuncts: Set<String> = ["==", "!=", "<=", ">=", "<<", ">>", "&&", "||", "->", ".."]

    mutating func tokenize() -> [Token] {
        var tokens: [Token] = []
        while true {
            let token = next()
            // Fold runs of newlines into one.
            if token.kind == .newline, tokens.last?.kind == .newline || tokens.isEmpty { continue }
            tokens.append(token)
            if token.kind == .end { break }
        }
        return tokens
    }

    private var location: SourceLocation {
        SourceLocation(file: file, line: line, column: index - lineStart + 1)
    }

    private func peek(_ offset: Int = 0) -> UInt8? {
        index + offset < bytes.count ? bytes[index + offset] : nil
    }

    private mutating func next() -> Token {
        while let c = peek() {
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\r") {
                index += 1
            } else if c == UInt8(ascii: "#") {
                while let d = peek(), d != UInt8(ascii: "\n") { index += 1 }
            } else if c == UInt8(ascii: "\\") && peek(1) == UInt8(ascii: "\n") {
                index += 2; line += 1; lineStart = index   // explicit line continuation
            } else if c == UInt8(ascii: "\n") {
                let loc = location
                index += 1; line += 1; lineStart = index
                if nesting == 0 { return Token(kind: .newline, location: loc) }
            } else {
                break
            }
        }
        let start = location
        guard let c = peek() else { return Token(kind: .end, location: start) }

        if isIdentifierStart(c) {
            return Token(kind: .identifier(identifier()), location: start)
        }
        if c == UInt8(ascii: "$") {
            index += 1
            guard let d = peek(), isIdentifierStart(d) else {
                diagnostics.append(Diagnostic(start, "expected a variable name after '$'"))
                return next()
            }
            return Token(kind: .variable(identifier()), location: start)
        }
        if isDigit(c) { return Token(kind: .integer(number(start)), location: start) }
        if c == UInt8(ascii: "'") { return Token(kind: .integer(character(start)), location: start) }
        if c == UInt8(ascii: "\"") { return Token(kind: .string(string(start)), location: start) }

        if let d = peek(1) {
            let pair = String(decoding: [c, d], as: UTF8.self)
            if Self.twoCharPuncts.contains(pair) {
                index += 2
                return Token(kind: .punct(pair), location: start)
            }
        }
        let single = String(decoding: [c], as: UTF8.self)
        if Self.singlePuncts.contains(c) {
            index += 1
            if single == "(" || single == "[" { nesting += 1 }
            if (single == ")" || single == "]") && nesting > 0 { nesting -= 1 }
            return Token(kind: .punct(single), location: start)
        }
        index += 1
        diagnostics.append(Diagnostic(start, "unexpected character '\(single)'"))
        return next()
    }

    private func isIdentifierStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || c == UInt8(ascii: "_")
    }

    private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    private mutating func identifier() -> String {
        let begin = index
        while let c = peek(), isIdentifierStart(c) || isDigit(c) { index += 1 }
        return String(decoding: bytes[begin..<index], as: UTF8.self)
    }

    private mutating func number(_ start: SourceLocation) -> Int64 {
        var radix: UInt64 = 10
        if peek() == UInt8(ascii: "0"), let p = peek(1) {
            switch p {
            case UInt8(ascii: "x"), UInt8(ascii: "X"): radix = 16; index += 2
            case UInt8(ascii: "o"), UInt8(ascii: "O"): radix = 8; index += 2
            case UInt8(ascii: "b"), UInt8(ascii: "B"): radix = 2; index += 2
            default: break
            }
        }
        var value: UInt64 = 0
        var digits = 0
        var overflow = false
        while let c = peek() {
            let digit: UInt64
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f") where radix == 16: digit = UInt64(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F") where radix == 16: digit = UInt64(c - UInt8(ascii: "A") + 10)
            case UInt8(ascii: "_"): index += 1; continue
            default: digit = 99
            }
            if digit >= radix { break }
            let (m, o1) = value.multipliedReportingOverflow(by: radix)
            let (s, o2) = m.addingReportingOverflow(digit)
            overflow = overflow || o1 || o2
            value = s
            digits += 1
            index += 1
        }
        if digits == 0 { diagnostics.append(Diagnostic(start, "a number needs digits")) }
        var shift: UInt64 = 0
        if let c = peek() {
            switch c {
            case UInt8(ascii: "K"): shift = 10
            case UInt8(ascii: "M"): shift = 20
            case UInt8(ascii: "G"): shift = 30
            default: break
            }
            if shift > 0, !(peek(1).map { isIdentifierStart($0) || isDigit($0) } ?? false) {
                index += 1
                if value > (UInt64.max >> shift) { overflow = true }
                value <<= shift
            } else {
                shift = 0
            }
        }
        if let c = peek(), isIdentifierStart(c) || isDigit(c) {
            diagnostics.append(Diagnostic(location, "unexpected '\(String(decoding: [c], as: UTF8.self))' after a number"))
            _ = identifier()
        }
        if overflow { diagnostics.append(Diagnostic(start, "number does not fit in 64 bits")) }
        return Int64(bitPattern: value)
    }

    private mutating func character(_ start: SourceLocation) -> Int64 {
        index += 1
        guard let c = peek(), c != UInt8(ascii: "'"), c != UInt8(ascii: "\n") else {
            diagnostics.append(Diagnostic(start, "empty character literal"))
            return 0
        }
        var value = Int64(c)
        index += 1
        if c == UInt8(ascii: "\\"), let e = peek() {
            index += 1
            switch e {
            case UInt8(ascii: "n"): value = 10
            case UInt8(ascii: "t"): value = 9
            case UInt8(ascii: "0"): value = 0
            default: value = Int64(e)
            }
        }
        if peek() == UInt8(ascii: "'") {
            index += 1
        } else {
            diagnostics.append(Diagnostic(start, "character literal needs a closing '"))
        }
        return value
    }

    private mutating func string(_ start: SourceLocation) -> String {
        index += 1
        var out: [UInt8] = []
        while let c = peek() {
            if c == UInt8(ascii: "\"") { index += 1; return String(decoding: out, as: UTF8.self) }
            if c == UInt8(ascii: "\n") { break }
            if c == UInt8(ascii: "\\"), let e = peek(1) { out.append(e); index += 2; continue }
            out.append(c)
            index += 1
        }
        diagnostics.append(Diagnostic(start, "string needs a closing \""))
        return String(decoding: out, as: UTF8.self)
    }
}
