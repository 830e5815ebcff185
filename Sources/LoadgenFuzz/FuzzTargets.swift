import Foundation
import LoadgenCore

/// loadgen's fuzz targets: the code that reads bytes from peers and users. Each takes any input without crashing
/// and checks what it decoded (a decoded value must survive encoding and decoding again unchanged). `loadgen-fuzz`
/// runs one under libFuzzer; the ordinary tests replay the committed corpora and crash reproducers through the
/// same functions (`Tests/Fuzz/`).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The frame decoder: length prefixes and bodies arriving in arbitrary pieces.
    case frames
    /// The wire messages' decoder (JSON bodies, and the binary frames of intervals with their histograms).
    case messages
    /// The HTTP/1.1 response parser, fed in arbitrary pieces.
    case http
    /// Run requests as an agent receives them: decoded, then validated.
    case request
    /// The parsers for URLs, sizes, durations, modes, networks, histogram buckets, targets files, status lists and
    /// headers.
    case parsers

    public func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .frames: Self.frames(data)
        case .messages: Self.messages(Array(data))
        case .http: Self.http(data)
        case .request: Self.request(Array(data))
        case .parsers: Self.parsers(Array(data))
        }
    }

    public func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { self.run($0) }
    }

    /// The first byte chooses how the rest is cut into pieces (1 to 256 bytes each).
    static func pieces(_ data: UnsafeRawBufferPointer) -> [UnsafeRawBufferPointer] {
        guard let first = data.first else { return [] }
        let step = Int(first) + 1
        var out: [UnsafeRawBufferPointer] = []
        var start = 1
        while start < data.count {
            let end = min(data.count, start + step)
            out.append(UnsafeRawBufferPointer(rebasing: data[start..<end]))
            start = end
        }
        return out
    }

    static func frames(_ data: UnsafeRawBufferPointer) {
        var decoder = FrameDecoder(maxFrameBytes: 64 * 1024)
        for piece in Self.pieces(data) {
            decoder.append(piece)
            do {
                while let message = try decoder.nextMessage() { Self.check(message) }
            } catch {
                return
            }
        }
    }

    static func messages(_ bytes: [UInt8]) {
        guard let message = try? FrameCodec.decodeBody(bytes) else { return }
        Self.check(message)
    }

    /// What a decoded message must satisfy: it round-trips, and an interval's histogram, if it decodes, can be used.
    static func check(_ message: WireMessage) {
        Self.checkRoundTrip(message)
        if case .interval(let interval) = message, let tally = try? interval.tally() {
            // A histogram that decoded is well formed: made sparse again and decoded, it holds as many values.
            let again = try? SparseHistogram(tally.latency).histogram()
            precondition(again?.totalCount == tally.latency.totalCount, "a histogram lost values through the sparse form")
        }
    }

    /// A message that decoded encodes, and decodes back to itself.
    static func checkRoundTrip(_ message: WireMessage) {
        guard let frame = try? FrameCodec.encode(message) else { return }
        guard let again = try? FrameCodec.decodeBody(frame.dropFirst(4)) else {
            preconditionFailure("a decoded \(message.kind.rawValue) message did not decode after encoding")
        }
        precondition(again == message, "a \(message.kind.rawValue) message changed through encoding")
    }

    static func http(_ data: UnsafeRawBufferPointer) {
        // The first byte also picks a body search (--expect-body), so the KMP scan runs over the same cuts.
        let expectation = data.first.map { $0 & 0x40 != 0 } == true ? try? BodyExpectation("abab") : nil
        var parser = HTTPResponseParser(isHead: data.first.map { $0 & 0x80 != 0 } ?? false, expectation: expectation)
        for var piece in Self.pieces(data) {
            while !piece.isEmpty {
                guard let (consumed, response) = try? parser.feed(piece) else { return }
                precondition(consumed <= piece.count, "the parser consumed more than it was given")
                if let response {
                    precondition((100...999).contains(response.status), "status \(response.status)")
                    precondition(!response.bodyMatched || (expectation != nil && response.bodyBytes >= 4), "a match in too short a body")
                    parser = HTTPResponseParser(expectation: expectation)
                }
                if consumed == 0 { break }
                piece = UnsafeRawBufferPointer(rebasing: piece[consumed...])
            }
        }
        _ = try? parser.end()
    }

    static func request(_ bytes: [UInt8]) {
        guard let request = try? FrameCodec.makeDecoder().decode(RunRequest.self, from: Data(bytes)) else { return }
        guard (try? request.validate()) != nil else { return }
        // A valid request travels to worker processes and the store: it must come back the same.
        guard let encoded = try? FrameCodec.makeEncoder().encode(request),
              let again = try? FrameCodec.makeDecoder().decode(RunRequest.self, from: encoded)
        else { preconditionFailure("a valid request did not survive encoding") }
        precondition(again == request, "a valid request changed through encoding")
    }

    static func parsers(_ bytes: [UInt8]) {
        guard let selector = bytes.first else { return }
        let text = String(decoding: bytes.dropFirst(), as: UTF8.self)
        switch selector % 10 {
        case 0:
            if let url = try? TargetURL.parse(text) {
                precondition((1...65535).contains(url.port), "port \(url.port)")
                precondition(!url.host.isEmpty, "an empty host")
            }
        case 1:
            _ = ByteCount.parse(text)
        case 2:
            if let range = try? SizeRange.parse(text) { precondition(range.lowerBytes <= range.upperBytes) }
        case 3:
            _ = DurationText.parseNanos(text)
        case 4:
            for workload in WorkloadKind.allCases {
                if let modes = try? ExecutionMode.parseList(text, workload: workload) { precondition(!modes.isEmpty) }
            }
        case 5:
            if let cidr = CIDR(text) {
                precondition(CIDR(cidr.description) == cidr, "\(cidr) does not parse back to itself")
            }
        case 7:
            // A targets file: every entry it accepts is a request loadgen can send.
            if let entries = try? TargetsFile.parse(text, name: "fuzz") {
                precondition(!entries.isEmpty, "an accepted file with no targets")
                for entry in entries {
                    precondition((try? TargetURL.parse(entry.url)) != nil, "an accepted URL that does not parse: \(entry.url)")
                    for header in entry.headers { precondition((try? header.validate()) != nil, "an accepted bad header") }
                }
            }
        case 8:
            if let statuses = try? StatusExpectation(parsing: text) {
                precondition((100...999).contains { statuses.accepts($0) }, "an accepted list that accepts nothing")
                precondition(!statuses.accepts(99) && !statuses.accepts(1000))
            }
        case 9:
            // A header that validates cannot break the request's framing: its line is one line.
            if let header = try? HTTPHeader.parse(text) {
                let bytes = RequestBlueprint(method: .get, headers: [header]).bytes(for: TargetURL(isTLS: false, host: "h", port: 80, pathAndQuery: "/"))
                let lines = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n")
                let replacesOwn = ["host", "user-agent", "accept"].contains(header.name.lowercased())
                precondition(lines.count == (replacesOwn ? 6 : 7) && lines.contains("\(header.name): \(header.value)"),
                             "a header broke the request's lines")
            }
        default:
            if let buckets = SparseHistogram.parseBuckets(text) {
                precondition(buckets.values.count == buckets.counts.count)
                precondition(zip(buckets.values, buckets.values.dropFirst()).allSatisfy { $0 < $1 }, "values do not ascend")
            }
        }
    }
}
