import Foundation

/// Charts as inline SVG, for pages that must stand alone (no scripts, fonts or fetches) and print well.
///
/// Every mark carries the data it was drawn from (`data-points` on a line, `data-value` on a bar), so a test can
/// hold the picture to the stored figures, and the drawn coordinates are an affine map of those values (on a log
/// axis, of their logarithms).
public enum SVGChart {
    /// Okabe and Ito's palette: told apart with the common colour-vision deficiencies, and in grey print.
    public static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
    static let dashes = ["", "6 3", "2 2", "8 3 2 3"]

    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var dashed: Bool

        public init(name: String, points: [(x: Double, y: Double)], dashed: Bool = false) {
            self.name = name
            self.points = points
            self.dashed = dashed
        }
    }

    public struct Axis: Sendable {
        public var title: String
        /// How tick values are written.
        public var format: @Sendable (Double) -> String
        public var logarithmic: Bool

        public init(title: String, logarithmic: Bool = false, format: @escaping @Sendable (Double) -> String) {
            self.title = title
            self.format = format
            self.logarithmic = logarithmic
        }
    }

    static let width = 880.0, height = 300.0
    static let left = 78.0, right = 16.0, top = 14.0, bottom = 44.0

    /// Lines over a shared x axis (time), with a legend under the plot.
    public static func lines(_ series: [Series], title: String, x: Axis, y: Axis) -> String {
        let all = series.flatMap(\.points)
        guard !all.isEmpty else { return self.empty(title) }
        let xs = all.map(\.x), ys = all.map(\.y).filter { !y.logarithmic || $0 > 0 }
        let xScale = Scale(low: min(0, xs.min()!), high: xs.max()!, from: left, to: width - right, logarithmic: false)
        let yScale = y.logarithmic
            ? Scale(low: ys.min() ?? 1, high: ys.max() ?? 10, from: height - bottom, to: top, logarithmic: true)
            : Scale(low: 0, high: max(ys.max() ?? 1, 1e-12), from: height - bottom, to: top, logarithmic: false)
        var svg = self.open(title)
        svg += self.grid(x: xScale, y: yScale, xAxis: x, yAxis: y)
        for (i, s) in series.enumerated() {
            let color = palette[i % palette.count]
            let dash = s.dashed ? " stroke-dasharray=\"6 3\"" : (dashes[(i / palette.count) % dashes.count].isEmpty ? "" : " stroke-dasharray=\"\(dashes[(i / palette.count) % dashes.count])\"")
            let drawn = s.points.filter { !y.logarithmic || $0.y > 0 }
            let data = drawn.map { "\(number($0.x)),\(number($0.y))" }.joined(separator: " ")
            let pixels = drawn.map { "\(pixel(xScale.map($0.x))),\(pixel(yScale.map($0.y)))" }.joined(separator: " ")
            svg += "<polyline class=\"series\" data-series=\"\(escape(s.name))\" data-points=\"\(data)\" points=\"\(pixels)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\"\(dash)/>\n"
            if drawn.count == 1 {
                svg += "<circle cx=\"\(pixel(xScale.map(drawn[0].x)))\" cy=\"\(pixel(yScale.map(drawn[0].y)))\" r=\"3\" fill=\"\(color)\"/>\n"
            }
        }
        svg += "</svg>\n"
        return svg + self.legend(series.enumerated().map { (i, s) in (s.name, palette[i % palette.count], s.dashed) })
    }

    /// Bars, one per label, each with its value (and a note, such as a speed-up) written above it.
    public static func bars(_ bars: [(label: String, value: Double, note: String?)], title: String, y: Axis) -> String {
        guard !bars.isEmpty else { return self.empty(title) }
        let yScale = Scale(low: 0, high: max(bars.map(\.value).max() ?? 1, 1e-12), from: height - bottom, to: top + 16, logarithmic: false)
        var svg = self.open(title)
        svg += self.grid(x: nil, y: yScale, xAxis: nil, yAxis: y)
        let slot = (width - left - right) / Double(bars.count)
        let barWidth = min(120, slot * 0.6)
        for (i, bar) in bars.enumerated() {
            let x0 = left + slot * Double(i) + (slot - barWidth) / 2
            let top = yScale.map(bar.value)
            let color = palette[i % palette.count]
            svg += "<rect class=\"bar\" data-label=\"\(escape(bar.label))\" data-value=\"\(number(bar.value))\" x=\"\(pixel(x0))\" y=\"\(pixel(top))\" width=\"\(pixel(barWidth))\" height=\"\(pixel(height - bottom - top))\" fill=\"\(color)\"/>\n"
            let caption = y.format(bar.value) + (bar.note.map { " (\($0))" } ?? "")
            svg += "<text x=\"\(pixel(x0 + barWidth / 2))\" y=\"\(pixel(top - 5))\" text-anchor=\"middle\" class=\"value\">\(escape(caption))</text>\n"
            svg += "<text x=\"\(pixel(x0 + barWidth / 2))\" y=\"\(pixel(height - bottom + 18))\" text-anchor=\"middle\">\(escape(bar.label))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    /// A histogram over a logarithmic x axis: each bin a bar from its lower to its upper bound, its height the count.
    public static func histogram(_ bins: [(lower: Double, upper: Double, count: UInt64)], title: String, x: Axis, y: Axis) -> String {
        let drawn = bins.filter { $0.upper > $0.lower && $0.lower > 0 }
        guard !drawn.isEmpty else { return self.empty(title) }
        let xScale = Scale(low: drawn.map(\.lower).min()!, high: drawn.map(\.upper).max()!, from: left, to: width - right, logarithmic: true)
        let yScale = Scale(low: 0, high: Double(drawn.map(\.count).max() ?? 1), from: height - bottom, to: top, logarithmic: false)
        var svg = self.open(title)
        svg += self.grid(x: xScale, y: yScale, xAxis: x, yAxis: y)
        for bin in drawn {
            let x0 = xScale.map(bin.lower), x1 = xScale.map(bin.upper), top = yScale.map(Double(bin.count))
            svg += "<rect class=\"bin\" data-lower=\"\(number(bin.lower))\" data-upper=\"\(number(bin.upper))\" data-value=\"\(bin.count)\" x=\"\(pixel(x0 + 0.5))\" y=\"\(pixel(top))\" width=\"\(pixel(max(1, x1 - x0 - 1)))\" height=\"\(pixel(height - bottom - top))\" fill=\"\(palette[0])\"/>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    // MARK: - Parts

    /// A linear or logarithmic map from data to pixels.
    struct Scale {
        var low: Double, high: Double, from: Double, to: Double, logarithmic: Bool

        init(low: Double, high: Double, from: Double, to: Double, logarithmic: Bool) {
            self.logarithmic = logarithmic
            self.from = from
            self.to = to
            if logarithmic {
                let l = max(low, 1e-12)
                self.low = pow(10, floor(log10(l)))
                self.high = pow(10, ceil(log10(max(high, l * 10))))
            } else {
                let ticks = SVGChart.ticks(low, high)
                self.low = min(low, ticks.first ?? low)
                self.high = max(high, ticks.last ?? high, self.low + 1e-12)
            }
        }

        func map(_ value: Double) -> Double {
            let t = self.logarithmic ? (log10(value) - log10(self.low)) / (log10(self.high) - log10(self.low))
                                     : (value - self.low) / (self.high - self.low)
            return self.from + t * (self.to - self.from)
        }

        var ticks: [Double] {
            if self.logarithmic {
                var out: [Double] = []
                var v = self.low
                while v <= self.high * 1.0001 { out.append(v); v *= 10 }
                return out
            }
            return SVGChart.ticks(self.low, self.high)
        }
    }

    /// About five round tick values covering low...high (steps of 1, 2, 2.5 or 5 times a power of ten).
    static func ticks(_ low: Double, _ high: Double) -> [Double] {
        let span = high - low
        guard span > 0, span.isFinite else { return [low] }
        let raw = span / 5
        let power = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * power }.first { $0 >= raw } ?? 10 * power
        var v = floor(low / step) * step
        var out: [Double] = []
        while v < high + step * 0.999 {
            out.append(v)
            v += step
        }
        return out
    }

    static func open(_ title: String) -> String {
        "<svg class=\"chart\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escape(title))\">\n<title>\(escape(title))</title>\n"
    }

    static func grid(x: Scale?, y: Scale, xAxis: Axis?, yAxis: Axis) -> String {
        var svg = ""
        for t in y.ticks {
            let py = pixel(y.map(t))
            svg += "<line class=\"grid\" x1=\"\(pixel(left))\" x2=\"\(pixel(width - right))\" y1=\"\(py)\" y2=\"\(py)\"/>\n"
            svg += "<text x=\"\(pixel(left - 6))\" y=\"\(py)\" dy=\"0.32em\" text-anchor=\"end\">\(escape(yAxis.format(t)))</text>\n"
        }
        if let x, let xAxis {
            for t in x.ticks {
                let px = pixel(x.map(t))
                svg += "<line class=\"tick\" x1=\"\(px)\" x2=\"\(px)\" y1=\"\(pixel(height - bottom))\" y2=\"\(pixel(height - bottom + 4))\"/>\n"
                svg += "<text x=\"\(px)\" y=\"\(pixel(height - bottom + 16))\" text-anchor=\"middle\">\(escape(xAxis.format(t)))</text>\n"
            }
            svg += "<text class=\"axis-title\" x=\"\(pixel((left + width - right) / 2))\" y=\"\(pixel(height - 6))\" text-anchor=\"middle\">\(escape(xAxis.title))</text>\n"
        }
        svg += "<line class=\"axis\" x1=\"\(pixel(left))\" x2=\"\(pixel(width - right))\" y1=\"\(pixel(height - bottom))\" y2=\"\(pixel(height - bottom))\"/>\n"
        svg += "<text class=\"axis-title\" transform=\"translate(14 \(pixel((top + height - bottom) / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yAxis.title))</text>\n"
        return svg
    }

    static func legend(_ entries: [(name: String, color: String, dashed: Bool)]) -> String {
        guard entries.count > 1 else { return "" }
        var html = "<ul class=\"legend\">"
        for entry in entries {
            let style = entry.dashed ? "border-top: 3px dashed \(entry.color)" : "border-top: 3px solid \(entry.color)"
            html += "<li><span class=\"swatch\" style=\"\(style)\"></span>\(escape(entry.name))</li>"
        }
        return html + "</ul>\n"
    }

    static func empty(_ title: String) -> String {
        "<p class=\"empty\">\(escape(title)): nothing was recorded.</p>\n"
    }

    /// Pixels to a tenth.
    static func pixel(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }

    /// A value as written in data attributes: exact enough to compare (up to 9 significant digits).
    static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(format: "%.9g", value)
    }

    /// Text safe inside HTML and SVG elements and attributes.
    public static func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
