/// `--tree DEPTH:FANOUT`: a directory tree of DEPTH levels under the run directory, each directory holding FANOUT
/// children, so FANOUT^DEPTH leaf directories; the files are spread over the leaves round-robin (file `i` in leaf
/// `i mod leaves`), so no two leaves differ by more than one file. mdtest's `-z` (depth) and `-b` (branching).
///
/// Every directory is named `dNNNNNN` after its position among its siblings; leaf `L`'s path is the base-FANOUT
/// digits of `L`, most significant first (`d000001/d000000/d000002` in a 3:3 tree). The tree is made in its own
/// timed phase (`mkdir`) in preorder, a parent before its children; each worker makes whole top-level subtrees, so
/// no worker waits on another's directory. The remove phase removes the tree after the files, children first.
public struct TreeShape: Hashable, Sendable, Codable {
    public var depth: Int
    public var fanout: Int

    public static let maxDepth = 8

    public init(depth: Int, fanout: Int) {
        self.depth = depth
        self.fanout = fanout
    }

    /// Leaf directories: fanout^depth (saturating).
    public var leaves: Int {
        var n = 1
        for _ in 0..<max(0, self.depth) {
            let (product, overflow) = n.multipliedReportingOverflow(by: max(0, self.fanout))
            if overflow { return Int.max }
            n = product
        }
        return n
    }

    /// The directories in one top-level subtree, its root included: 1 + fanout + ... + fanout^(depth-1).
    public var subtreeNodes: Int {
        var total = 0
        var level = 1
        for _ in 0..<self.depth {
            total += level
            level *= self.fanout
        }
        return total
    }

    /// Every directory of the tree: fanout subtrees of ``subtreeNodes`` each.
    public var nodes: Int { self.fanout * self.subtreeNodes }

    /// Parses `DEPTH:FANOUT`, e.g. `3:10`.
    public static func parse(_ text: String) throws(LoadgenError) -> TreeShape {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let depth = Int(parts[0]), let fanout = Int(parts[1]) else {
            throw .usage("--tree '\(text)' is not DEPTH:FANOUT, such as 3:10 (three levels of ten directories each).")
        }
        let shape = TreeShape(depth: depth, fanout: fanout)
        try shape.validate()
        return shape
    }

    public func validate() throws(LoadgenError) {
        let text = "\(self.depth):\(self.fanout)"
        guard self.depth >= 1 else {
            throw .usage("--tree \(text) has depth \(self.depth): a tree has at least one level of directories (--tree 1:N is --dirs N).")
        }
        guard self.depth <= Self.maxDepth else {
            throw .usage("--tree \(text) is deeper than loadgen's limit of \(Self.maxDepth) levels.")
        }
        guard self.fanout >= 1 else {
            throw .usage("--tree \(text) has fanout \(self.fanout): each directory needs at least one child.")
        }
        guard self.leaves <= RunRequest.Limits.maxDirs else {
            throw .usage("--tree \(text) makes \(self.leaves == Int.max ? "more than \(Int.max)" : "\(self.leaves)") leaf directories, more than loadgen's limit of \(RunRequest.Limits.maxDirs).")
        }
    }

    /// Writes the path of leaf `leaf` (each level `dNNNNNN/`, slash included) into `buffer` and returns its length:
    /// 8 bytes a level.
    @inline(__always)
    public func writeLeafPath(_ leaf: Int, into buffer: UnsafeMutablePointer<UInt8>) -> Int {
        var rest = leaf
        var level = self.depth - 1
        while level >= 0 {
            Self.writeComponent(rest % self.fanout, into: buffer + level * 8)
            rest /= self.fanout
            level -= 1
        }
        return self.depth * 8
    }

    /// Writes the NUL-terminated path of directory `node` (0 ..< ``nodes``, in preorder: each top-level directory,
    /// then its subtree) into `buffer` (``maxDepth`` * 8 bytes) and returns its length without the slash or the NUL.
    public func writeNodePath(_ node: Int, into buffer: UnsafeMutablePointer<UInt8>) -> Int {
        var size = self.subtreeNodes
        var rest = node
        var length = 0
        while true {
            // `rest` indexes a forest of `fanout` subtrees of `size` nodes each, in preorder.
            Self.writeComponent(rest / size, into: buffer + length)
            length += 8
            rest %= size
            if rest == 0 { break }
            rest -= 1
            size = (size - 1) / self.fanout
        }
        buffer[length - 1] = 0
        return length - 1
    }

    /// The path of directory `node` as a string (tests and diagnostics).
    public func nodePath(_ node: Int) -> String {
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.maxDepth * 8)
        defer { buffer.deallocate() }
        let length = self.writeNodePath(node, into: buffer)
        return String(decoding: UnsafeBufferPointer(start: buffer, count: length), as: UTF8.self)
    }

    /// `dNNNNNN/` for `number` (below a million).
    @inline(__always)
    static func writeComponent(_ number: Int, into p: UnsafeMutablePointer<UInt8>) {
        var d = number
        p[0] = UInt8(ascii: "d")
        var k = 6
        while k >= 1 {
            p[k] = UInt8(ascii: "0") &+ UInt8(d % 10)
            d /= 10
            k -= 1
        }
        p[7] = UInt8(ascii: "/")
    }
}
