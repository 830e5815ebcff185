/// Standard base64 (RFC 4648, with padding) without Foundation's `Data` round trips.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let reverseTable: [UInt8] = {
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
        var text = text
        return text.withUTF8 { input -> [UInt8]? in
            guard input.count % 4 == 0 else { return nil }
            var out = [UInt8]()
            out.reserveCapacity(input.count / 4 * 3)
            var i = 0
            while i < input.count {
                let a = reverseTable[Int(input[i])], b = reverseTable[Int(input[i + 1])]
                let c3 = input[i + 2], d3 = input[i + 3]
                guard a != 0xff, b != 0xff else { return nil }
                let last = i + 4 == input.count
                if c3 == UInt8(ascii: "=") {
                    guard last, d3 == UInt8(ascii: "=") else { return nil }
                    out.append(a << 2 | b >> 4)
                } else {
                    let c = reverseTable[Int(c3)]
                    guard c != 0xff else { return nil }
                    if d3 == UInt8(ascii: "=") {
                        guard last else { return nil }
                        out.append(a << 2 | b >> 4)
                        out.append(b << 4 | c >> 2)
                    } else {
                        let d = reverseTable[Int(d3)]
                        guard d != 0xff else { return nil }
                        out.append(a << 2 | b >> 4)
                        out.append(b << 4 | c >> 2)
                        out.append(c << 6 | d)
                    }
                }
                i += 4
            }
            return out
        }
    }
}
