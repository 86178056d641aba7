extension String {
    /// Without leading and trailing spaces, tabs and newlines (no Foundation).
    public var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" || c == "\n" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\n" { s.removeLast() }
        return String(s)
    }
}

/// A number with two decimals (no Foundation).
public func format2(_ v: Double) -> String {
    let scaled = (v * 100).rounded()
    let whole = Int(scaled) / 100
    let frac = abs(Int(scaled)) % 100
    return "\(whole).\(frac < 10 ? "0" : "")\(frac)"
}

/// The text padded with spaces to a column width (at least one space after it).
public func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }
