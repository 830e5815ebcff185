/// Byte counts as people write them: `2`, `4k`, `1.5m`, `1g` (k, m, g are powers of 1024).
public enum ByteCount {
    /// The largest single size loadgen accepts anywhere (1 TiB).
    public static let maximum: UInt64 = 1 << 40

    /// Parses a byte count; `nil` when the text is not one.
    public static func parse(_ text: String) -> UInt64? {
        var body = Substring(text.trimmingWhitespace().lowercased())
        for unitSuffix in ["ib", "b"] where body.hasSuffix(unitSuffix) && body.count > unitSuffix.count {
            body = body.dropLast(unitSuffix.count)
            break
        }
        var multiplier: Double = 1
        if let last = body.last, let power = ["k": 1, "m": 2, "g": 3, "t": 4][String(last)] {
            multiplier = Double(UInt64(1) << UInt64(10 * power))
            body = body.dropLast()
        }
        guard !body.isEmpty, body.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              let number = Double(body), number.isFinite, number >= 0
        else { return nil }
        let bytes = (number * multiplier).rounded()
        guard bytes <= Double(maximum) else { return nil }
        return UInt64(bytes)
    }

    /// `1536` → `1.5 KiB`; exact values below 1 KiB print as bytes.
    public static func format(_ bytes: UInt64) -> String {
        if bytes < 1024 { return "\(bytes) B" }
        let units = ["KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes) / 1024
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return value == value.rounded() ? "\(Int(value)) \(units[unit])" : "\(value.formatted(decimals: 1)) \(units[unit])"
    }
}

/// The size of each file in a write run: one size, or a range drawn uniformly per file, both bounds included.
public struct SizeRange: Hashable, Sendable, Codable, CustomStringConvertible {
    public var lowerBytes: UInt64
    public var upperBytes: UInt64

    public init(lowerBytes: UInt64, upperBytes: UInt64) {
        self.lowerBytes = lowerBytes
        self.upperBytes = upperBytes
    }

    public init(exactly bytes: UInt64) {
        self.init(lowerBytes: bytes, upperBytes: bytes)
    }

    /// Parses `2`, `4k` or `1k-64k`, naming the text in the error.
    public static func parse(_ text: String) throws(LoadgenError) -> SizeRange {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        let advice = "use a number of bytes with an optional k, m or g suffix (powers of 1024), or a range such as 1k-64k"
        guard parts.count == 1 || parts.count == 2 else {
            throw .usage("The size '\(text)' is not a byte count: \(advice).")
        }
        guard let lower = ByteCount.parse(String(parts[0])) else {
            throw .usage("The size '\(text)' is not a byte count: \(advice).")
        }
        guard parts.count == 2 else { return SizeRange(exactly: lower) }
        guard let upper = ByteCount.parse(String(parts[1])) else {
            throw .usage("The size '\(text)' is not a byte count: \(advice).")
        }
        guard lower <= upper else {
            throw .usage("The size range '\(text)' runs backwards: its lower bound must not exceed its upper bound.")
        }
        return SizeRange(lowerBytes: lower, upperBytes: upper)
    }

    public var isFixed: Bool { self.lowerBytes == self.upperBytes }

    /// The mean size of a file, for estimates.
    public var meanBytes: Double { (Double(self.lowerBytes) + Double(self.upperBytes)) / 2 }

    public var description: String {
        self.isFixed ? ByteCount.format(self.lowerBytes)
            : "\(ByteCount.format(self.lowerBytes))-\(ByteCount.format(self.upperBytes))"
    }
}

/// Durations as people write them: `500ms`, `30s`, `2m`, `1h`, `1.5s`; a bare number means seconds.
public enum DurationText {
    public static func parseNanos(_ text: String) -> UInt64? {
        let body = text.trimmingWhitespace().lowercased()
        let units: [(String, Double)] = [("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        var number = Substring(body)
        var scale = 1e9
        for (suffix, factor) in units where body.hasSuffix(suffix) {
            number = number.dropLast(suffix.count)
            scale = factor
            break
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              let value = Double(number), value.isFinite, value >= 0
        else { return nil }
        let nanos = value * scale
        guard nanos < 1e18 else { return nil }
        return UInt64(nanos.rounded())
    }

    /// `1.5e9` → `1.5s`, `2e6` → `2ms`.
    public static func format(nanos: UInt64) -> String {
        let n = Double(nanos)
        if n >= 3600e9 { return "\((n / 3600e9).formatted(decimals: 1))h" }
        if n >= 60e9 { return "\((n / 60e9).formatted(decimals: 1))m" }
        if n >= 1e9 { return "\((n / 1e9).formatted(decimals: 2))s" }
        if n >= 1e6 { return "\((n / 1e6).formatted(decimals: 1))ms" }
        return "\((n / 1e3).formatted(decimals: 1))us"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let first = s.first, first.isWhitespace { s = s.dropFirst() }
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

extension Double {
    /// Fixed-point text without Foundation's locale machinery: `12.345.formatted(decimals: 1)` → `12.3`.
    public func formatted(decimals: Int) -> String {
        guard self.isFinite else { return self.isNaN ? "nan" : (self > 0 ? "inf" : "-inf") }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(self) * scale).rounded()
        let sign = self < 0 && scaled > 0 ? "-" : ""
        guard scaled < 9.2e18 else { return "\(self)" }
        let whole = UInt64(scaled) / UInt64(scale)
        let fraction = UInt64(scaled) % UInt64(scale)
        guard decimals > 0 else { return "\(sign)\(whole)" }
        var fractionText = String(fraction)
        while fractionText.count < decimals { fractionText = "0" + fractionText }
        return "\(sign)\(whole).\(fractionText)"
    }
}
