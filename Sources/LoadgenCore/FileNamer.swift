/// Names and sizes of a write run's files, each a pure function of (seed, index).
///
/// Names are 86 random URL-safe characters plus `.txt`, like the tutorial's `token_urlsafe(64)`. Because a name
/// is computed from its index rather than drawn from a stream, nothing is remembered per file: any worker (thread
/// or process) can make any share, and cleanup recomputes exactly the names its share created. A run of ten
/// million files costs the memory of a run of ten.
public struct FileNamer: Sendable, Hashable {
    public static let nameCharacters = 86
    /// Bytes of a name including `.txt` (no terminator).
    public static let nameBytes = nameCharacters + 4
    /// Bytes of the `dNNNNNN/` prefix when files are spread over subdirectories.
    public static let directoryPrefixBytes = 8
    /// Room for the longest relative path (a `--tree` of the deepest shape) and its NUL terminator.
    public static let bufferBytes = TreeShape.maxDepth * directoryPrefixBytes + nameBytes + 1

    public let seed: UInt64
    public let size: SizeRange
    public let dirs: Int
    /// `--dir-per-worker`: the run's file count, and the directory of a file is its worker's (the one whose
    /// contiguous share holds it) rather than its index modulo `dirs`.
    public let blockFiles: UInt64?
    /// `--tree`: file `i` in leaf `i mod leaves`, under one `dNNNNNN/` per level (`dirs` is then the leaf count).
    public let tree: TreeShape?
    /// `--shared-target`: the agent's place, written as the name's first three characters (base64 digits, most
    /// significant first), so that agents sharing a directory never make one name.
    public let tag: Int?
    /// `--dir-per-worker` in a shared target: directories are numbered from here, and there is one even for a
    /// single worker.
    public let firstDirectory: Int?

    public init(seed: UInt64, size: SizeRange, dirs: Int, blockFiles: UInt64? = nil, tree: TreeShape? = nil, tag: Int? = nil,
                firstDirectory: Int? = nil) {
        self.seed = seed
        self.tag = tag
        self.firstDirectory = tree == nil ? firstDirectory : nil
        self.size = size
        self.tree = tree.flatMap { $0.depth > 0 ? $0 : nil }
        self.dirs = self.tree?.leaves ?? max(1, dirs)
        self.blockFiles = self.tree == nil ? blockFiles : nil
    }

    /// The URL-safe base64 alphabet, in a table that lives for the process.
    // Written once at initialization and only read after: safe to share.
    nonisolated(unsafe) public static let alphabet: UnsafePointer<UInt8> = {
        let chars = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let table = UnsafeMutablePointer<UInt8>.allocate(capacity: 64)
        table.initialize(from: chars, count: 64)
        return UnsafePointer(table)
    }()

    /// SplitMix64's finalizer: a fast bijective mix with good avalanche.
    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The subdirectory (with `--tree`, the leaf) of file `index` (0 when the run has one directory).
    @inline(__always)
    public func directory(of index: UInt64) -> Int {
        if self.dirs == 1 { return 0 }
        if self.tree != nil { return Int(index % UInt64(self.dirs)) }
        guard let total = self.blockFiles else { return Int(index % UInt64(self.dirs)) }
        // The inverse of ``share(of:workers:worker:)``: the first `extra` shares hold base + 1 files.
        let n = UInt64(self.dirs)
        let base = total / n, extra = total % n
        let big = extra * (base + 1)
        if index < big { return Int(index / (base + 1)) }
        return base == 0 ? Int(n - 1) : Int(extra + (index - big) / base)
    }

    /// The name of subdirectory `number`: `d000042`.
    public static func directoryName(_ number: Int) -> String {
        var digits = String(number)
        while digits.count < 6 { digits = "0" + digits }
        return "d" + digits
    }

    /// Writes the NUL-terminated path of file `index`, relative to the run directory, into `buffer`
    /// (``bufferBytes`` long) and returns its length without the terminator.
    @inline(__always)
    public func writePath(of index: UInt64, into buffer: UnsafeMutablePointer<UInt8>, alphabet: UnsafePointer<UInt8>) -> Int {
        var p = buffer
        var prefix = 0
        if let tree = self.tree {
            prefix = tree.writeLeafPath(Int(index % UInt64(self.dirs)), into: p)
            p += prefix
        } else if let first = self.firstDirectory {
            TreeShape.writeComponent(first + self.directory(of: index), into: p)
            p += Self.directoryPrefixBytes
            prefix = Self.directoryPrefixBytes
        } else if self.dirs > 1 {
            TreeShape.writeComponent(self.directory(of: index), into: p)
            p += Self.directoryPrefixBytes
            prefix = Self.directoryPrefixBytes
        }
        // Nine 64-bit words give 90 six-bit characters; the name keeps 86 of them.
        let base = self.seed ^ (index &* 0xD1B5_4A32_D192_ED03)
        var written = 0
        var word: UInt64 = 0
        while written < Self.nameCharacters {
            if written % 10 == 0 {
                word = Self.mix(base &+ UInt64(written / 10) &* 0x9E37_79B9_7F4A_7C15)
            }
            p[written] = alphabet[Int(word & 63)]
            word >>= 6
            written += 1
        }
        if let tag = self.tag {
            p[0] = alphabet[(tag >> 12) & 63]
            p[1] = alphabet[(tag >> 6) & 63]
            p[2] = alphabet[tag & 63]
        }
        p[86] = UInt8(ascii: ".")
        p[87] = UInt8(ascii: "t")
        p[88] = UInt8(ascii: "x")
        p[89] = UInt8(ascii: "t")
        p[90] = 0
        return prefix + Self.nameBytes
    }

    /// The relative path of file `index` as a string (tests and diagnostics).
    public func path(of index: UInt64) -> String {
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.bufferBytes)
        defer { buffer.deallocate() }
        let length = self.writePath(of: index, into: buffer, alphabet: Self.alphabet)
        return String(decoding: UnsafeBufferPointer(start: buffer, count: length), as: UTF8.self)
    }

    /// The size of file `index`: the fixed size, or a uniform draw from the range (both bounds included).
    @inline(__always)
    public func sizeBytes(of index: UInt64) -> UInt64 {
        if self.size.lowerBytes == self.size.upperBytes { return self.size.lowerBytes }
        let span = self.size.upperBytes - self.size.lowerBytes + 1
        let draw = Self.mix(self.seed ^ 0x5851_F42D_4C95_7F2D ^ (index &* 0x2545_F491_4F6C_DD1D))
        return self.size.lowerBytes + draw.multipliedFullWidth(by: span).high
    }

    /// Splits `total` operations into `workers` contiguous shares that differ by at most one.
    public static func share(of total: UInt64, workers: Int, worker: Int) -> (first: UInt64, count: UInt64) {
        let n = UInt64(workers)
        let w = UInt64(worker)
        let base = total / n
        let extra = total % n
        let first = w * base + min(w, extra)
        return (first, base + (w < extra ? 1 : 0))
    }

    /// The seed an agent uses: the run's seed mixed with the agent's identity, so agents never share names.
    public static func agentSeed(runSeed: UInt64, agentID: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in agentID.utf8 {
            h = (h ^ UInt64(byte)) &* 0x100_0000_01B3
        }
        return mix(runSeed ^ h)
    }
}
