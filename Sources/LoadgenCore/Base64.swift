/// Standard base64 (RFC 4648, with padding) without Foundation's `Data` round trips.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverseTable: [UInt8] = {
        var table = [UInt8](repeating: 0xff, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(n >> 18)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out.append(alphabet[Int(n >> 18)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(rest == 2 ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded base64; nil for anything else.
    public static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count / 4 * 3)
        let ok = Self.decode(text) { piece in
            out.append(contentsOf: piece)
            return true
        }
        return ok ? out : nil
    }

    /// Decodes padded base64 a chunk of up to 3 KB at a time into a stack buffer, handing each chunk to `body`
    /// (which returns false to stop). False when the text is not base64 (after the chunks before the bad quad) or
    /// when `body` stopped. Two tight loops: whole quads, where no padding is allowed, then the last quad.
    @inline(__always)
    public static func decode(_ text: String, chunks body: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        var text = text
        return text.withUTF8 { input -> Bool in
            let end = input.count
            guard end % 4 == 0 else { return false }
            guard end > 0 else { return true }
            let quadsPerChunk = 1024
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 3 * quadsPerChunk) { chunk -> Bool in
                Self.reverseTable.withUnsafeBufferPointer { table -> Bool in
                    let last = end &- 4
                    var i = 0
                    while i < end {
                        var n = 0
                        let stop = Swift.min(last, i &+ 4 &* (quadsPerChunk &- 1))
                        // An invalid character has the table's 0xff, so its high bit marks the quad bad.
                        while i < stop {
                            let a = table[Int(input[i])], b = table[Int(input[i &+ 1])]
                            let c = table[Int(input[i &+ 2])], d = table[Int(input[i &+ 3])]
                            guard (a | b | c | d) & 0x80 == 0 else { return false }
                            chunk[n] = a << 2 | b >> 4
                            chunk[n &+ 1] = b << 4 | c >> 2
                            chunk[n &+ 2] = c << 6 | d
                            n &+= 3
                            i &+= 4
                        }
                        if i == last {
                            // The last quad, which may end in one or two "=".
                            let a = table[Int(input[i])], b = table[Int(input[i &+ 1])]
                            let c3 = input[i &+ 2], d3 = input[i &+ 3]
                            guard (a | b) & 0x80 == 0 else { return false }
                            chunk[n] = a << 2 | b >> 4
                            n &+= 1
                            if c3 == UInt8(ascii: "=") {
                                guard d3 == UInt8(ascii: "=") else { return false }
                            } else {
                                let c = table[Int(c3)]
                                guard c & 0x80 == 0 else { return false }
                                chunk[n] = b << 4 | c >> 2
                                n &+= 1
                                if d3 != UInt8(ascii: "=") {
                                    let d = table[Int(d3)]
                                    guard d & 0x80 == 0 else { return false }
                                    chunk[n] = c << 6 | d
                                    n &+= 1
                                }
                            }
                            i &+= 4
                        }
                        guard body(UnsafeBufferPointer(rebasing: chunk[0..<n])) else { return false }
                    }
                    return true
                }
            }
        }
    }
}
