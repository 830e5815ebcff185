import LoadgenCore

/// Number and unit formatting for people.
enum Format {
    /// `1234567` → `1,234,567`.
    static func count(_ value: UInt64) -> String {
        let digits = String(value)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }

    static func count(_ value: Int) -> String { value < 0 ? "-" + count(UInt64(-value)) : count(UInt64(value)) }

    static func count(_ value: Int64) -> String { count(Int(value)) }

    /// A rate with thousands separators, no decimals above 100.
    static func rate(_ value: Double) -> String {
        guard value.isFinite else { return "-" }
        if value >= 100 { return count(UInt64(value.rounded())) }
        return value.formatted(decimals: value >= 10 ? 1 : 2)
    }

    /// `45123` → `45.1k`.
    static func compact(_ value: Double) -> String {
        if value >= 1e6 { return "\((value / 1e6).formatted(decimals: 2))M" }
        if value >= 1e4 { return "\((value / 1e3).formatted(decimals: 1))k" }
        return value.formatted(decimals: 0)
    }

    /// Microseconds as `38.2us`, `1.23ms`, `1.23s`.
    static func latency(us: Double) -> String {
        if us >= 1e6 { return "\((us / 1e6).formatted(decimals: 2))s" }
        if us >= 1e3 { return "\((us / 1e3).formatted(decimals: 2))ms" }
        return "\(us.formatted(decimals: 1))us"
    }

    static func seconds(_ s: Double) -> String {
        if s >= 100 { return "\(s.formatted(decimals: 0))s" }
        return "\(s.formatted(decimals: s >= 10 ? 1 : 3))s"
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        guard text.count < width else { return text }
        let fill = String(repeating: " ", count: width - text.count)
        return right ? fill + text : text + fill
    }

    /// Lays out rows as aligned columns; columns after the first are right-aligned when they hold numbers.
    static func table(_ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        guard let first = rows.first else { return "" }
        var widths = Array(repeating: 0, count: first.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in pad(cell, widths[i], right: rightAligned.contains(i)) }
                .joined(separator: "  ").trimmingTrailingSpaces()
        }.joined(separator: "\n")
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
