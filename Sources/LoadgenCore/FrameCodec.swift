import Foundation

/// Frames on every loadgen byte stream (TCP between coordinator and agents, pipes between an agent and its worker
/// processes): a 4-byte big-endian length, then that many bytes of body holding one ``WireMessage``. Interval reports
/// and heartbeats, nearly all of a big run's traffic, travel as protobuf (`schemas/wire/frames.proto`); the rest as
/// UTF-8 JSON (`schemas/wire/messages.schema.json`), whose first byte is always `{`.
///
///     +--------+--------+--------+--------+--------------------------------------------+
///     |    length (UInt32, big-endian)    |  body: '{' JSON object, or a BinaryFrame   |
///     +--------+--------+--------+--------+--------------------------------------------+
///
/// The length is checked against ``maxFrameBytes`` as soon as its four bytes arrive, before anything is allocated
/// for the body, so a hostile length cannot make a peer reserve memory.
public enum FrameCodec {
    /// The largest body accepted (1 MiB).
    public static let maxFrameBytes = 1 << 20

    /// Encodes one message as a whole frame.
    public static func encode(_ message: WireMessage) throws(LoadgenError) -> [UInt8] {
        if let body = try BinaryFrames.body(message) { return try Self.frame(body, message) }
        let body: Data
        do {
            body = try sharedEncoder.encode(message)
        } catch {
            throw .protocolViolation("A \(message.kind.rawValue) message could not be encoded: \(error).")
        }
        return try Self.frame(body, message)
    }

    private static func frame<Body: Collection>(_ body: Body, _ message: WireMessage) throws(LoadgenError) -> [UInt8]
    where Body.Element == UInt8 {
        guard body.count <= maxFrameBytes else {
            throw .protocolViolation("A \(message.kind.rawValue) message of \(body.count) bytes is over the frame limit of \(maxFrameBytes) bytes.")
        }
        var frame = [UInt8]()
        frame.reserveCapacity(4 + body.count)
        let length = UInt32(body.count)
        frame.append(UInt8(length >> 24))
        frame.append(UInt8((length >> 16) & 0xff))
        frame.append(UInt8((length >> 8) & 0xff))
        frame.append(UInt8(length & 0xff))
        frame.append(contentsOf: body)
        return frame
    }

    /// Decodes one frame body into a message, naming what was wrong.
    public static func decodeBody<Bytes: Collection>(_ body: Bytes) throws(LoadgenError) -> WireMessage
    where Bytes.Element == UInt8 {
        guard let first = body.first else { throw .protocolViolation("A frame is empty: it holds no message.") }
        if first != UInt8(ascii: "{") {
            // Decoded in place where the bytes are contiguous (a frame decoder's buffer, a ByteBuffer's view).
            var decoded: Result<WireMessage, LoadgenError>? = body.withContiguousStorageIfAvailable { bytes in
                Result { () throws(LoadgenError) in try BinaryFrames.decode(UnsafeRawBufferPointer(bytes)) }
            }
            if decoded == nil {
                decoded = Array(body).withUnsafeBytes { bytes in
                    Result { () throws(LoadgenError) in try BinaryFrames.decode(bytes) }
                }
            }
            return try decoded!.get()
        }
        do {
            let message = try sharedDecoder.decode(WireMessage.self, from: Data(body))
            switch message {
            case .interval, .heartbeat:
                throw LoadgenError.protocolViolation("A \(message.kind.rawValue) message arrived as JSON: since protocol 4 it travels as a binary frame (schemas/wire/frames.proto).")
            case .prepare, .work:
                // What an agent is told to run is never partly ignored: a field it does not know is refused.
                try Self.refuseUnknownFields(in: body, decoded: message)
            default:
                break
            }
            return message
        } catch let error as LoadgenError {
            throw error
        } catch let DecodingError.dataCorrupted(context) {
            throw .protocolViolation("A frame could not be decoded\(Self.path(context)): \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw .protocolViolation("A frame lacks the field '\(key.stringValue)'\(Self.path(context)).")
        } catch let DecodingError.typeMismatch(_, context) {
            throw .protocolViolation("A frame has a field of the wrong type\(Self.path(context)).")
        } catch let DecodingError.valueNotFound(_, context) {
            throw .protocolViolation("A frame has a null where a value belongs\(Self.path(context)).")
        } catch {
            throw .protocolViolation("A frame could not be decoded: \(error).")
        }
    }

    /// Throws naming the first field of `body` that decoding dropped: one the decoded message, encoded again, lacks
    /// (a null is as good as absent).
    static func refuseUnknownFields<Bytes: Collection>(in body: Bytes, decoded: WireMessage) throws(LoadgenError)
    where Bytes.Element == UInt8 {
        guard let raw = try? JSONSerialization.jsonObject(with: Data(body)),
              let again = try? JSONSerialization.jsonObject(with: sharedEncoder.encode(decoded))
        else { return }
        func walk(_ raw: Any, _ known: Any, _ path: String) throws(LoadgenError) {
            if let raw = raw as? [String: Any], let known = known as? [String: Any] {
                for key in raw.keys.sorted() where !(raw[key] is NSNull) {
                    let here = path.isEmpty ? key : "\(path).\(key)"
                    guard let value = known[key] else { throw .protocolViolation("A frame has the unknown field '\(here)'.") }
                    try walk(raw[key]!, value, here)
                }
            } else if let raw = raw as? [Any], let known = known as? [Any] {
                for (index, pair) in zip(raw, known).enumerated() { try walk(pair.0, pair.1, "\(path)[\(index)]") }
            }
        }
        try walk(raw, again, "")
    }

    private static func path(_ context: DecodingError.Context) -> String {
        let names = context.codingPath.map(\.stringValue).filter { !$0.isEmpty }
        return names.isEmpty ? "" : " at '\(names.joined(separator: "."))'"
    }

    // One of each, made once: configuring a coder per frame showed in profiles. Both are thread-safe once set up.
    static let sharedEncoder = makeEncoder()
    static let sharedDecoder = makeDecoder()

    public static func makeEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .custom { path in SnakeCaseKey.cached(camel: path.last!.stringValue) }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func makeDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .custom { path in SnakeCaseKey.cached(snake: path.last!.stringValue) }
        return decoder
    }
}

/// Key conversion between Swift's camelCase and the wire's snake_case, with loadgen's acronyms kept whole
/// (`runID` ⇄ `run_id`, `perURL` ⇄ `per_url`). Keys with no lower-case letter (`ENOSPC`) or no underscore are left
/// as they are, because the strategies also see dictionary keys such as error kinds and status classes.
struct SnakeCaseKey: CodingKey {
    static let acronyms: Set<String> = ["id", "url", "tls"]

    // Every frame converts the same few dozen keys: remember each conversion (bounded, in case of hostile keys).
    private static let snakeCache = Locked<[String: String]>([:])
    private static let camelCache = Locked<[String: String]>([:])

    static func cached(snake: String) -> SnakeCaseKey {
        if let hit = snakeCache.withLock({ $0[snake] }) { return SnakeCaseKey(converted: hit) }
        let key = SnakeCaseKey(snake)
        snakeCache.withLock { if $0.count < 4096 { $0[snake] = key.stringValue } }
        return key
    }

    static func cached(camel: String) -> SnakeCaseKey {
        if let hit = camelCache.withLock({ $0[camel] }) { return SnakeCaseKey(converted: hit) }
        let key = SnakeCaseKey(camel: camel)
        camelCache.withLock { if $0.count < 4096 { $0[camel] = key.stringValue } }
        return key
    }

    private init(converted: String) {
        self.stringValue = converted
    }
    var stringValue: String
    var intValue: Int? { nil }

    init(_ snake: String) {
        guard snake.contains("_") else {
            self.stringValue = snake
            return
        }
        let parts = snake.split(separator: "_", omittingEmptySubsequences: false)
        var out = String(parts.first ?? "")
        for part in parts.dropFirst() {
            let word = String(part)
            out += Self.acronyms.contains(word) ? word.uppercased() : word.prefix(1).uppercased() + word.dropFirst()
        }
        self.stringValue = out
    }

    /// camelCase → snake_case (`insecureTLS` → `insecure_tls`).
    init(camel: String) {
        guard camel.contains(where: { $0.isLowercase }) else {
            self.stringValue = camel
            return
        }
        let chars = Array(camel)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase {
                let previous = i > 0 ? chars[i - 1] : nil
                let next = i + 1 < chars.count ? chars[i + 1] : nil
                let startsWord = previous.map { !$0.isUppercase } ?? false
                let endsAcronym = (previous?.isUppercase ?? false) && (next?.isLowercase ?? false)
                if i > 0, startsWord || endsAcronym { out += "_" }
                out += c.lowercased()
            } else {
                out.append(c)
            }
        }
        self.stringValue = out
    }

    init?(stringValue: String) { self.init(stringValue) }
    init?(intValue: Int) { nil }
}

/// Reassembles frames from a byte stream that arrives in pieces of any size (one byte at a time, or many frames at
/// once). Pure: it owns a buffer and knows nothing of sockets or pipes.
public struct FrameDecoder: Sendable {
    private enum State: Sendable {
        case waitingForHeader
        case waitingForBody(length: Int)
    }

    private var buffer: [UInt8] = []
    private var readIndex = 0
    private var state = State.waitingForHeader
    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = FrameCodec.maxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    /// Bytes received but not yet part of a whole frame.
    public var bufferedBytes: Int { self.buffer.count - self.readIndex }

    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        if self.readIndex > 0, self.readIndex >= self.buffer.count / 2 {
            self.buffer.removeFirst(self.readIndex)
            self.readIndex = 0
        }
        self.buffer.append(contentsOf: bytes)
    }

    /// The next whole frame's body, or nil until more bytes arrive; throws on a length over the cap.
    public mutating func nextBody() throws(LoadgenError) -> ArraySlice<UInt8>? {
        while true {
            switch self.state {
            case .waitingForHeader:
                guard self.bufferedBytes >= 4 else { return nil }
                let b = self.buffer
                let i = self.readIndex
                let length = Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
                guard length <= self.maxFrameBytes else {
                    throw .protocolViolation("A frame announced \(length) bytes, over the limit of \(self.maxFrameBytes) bytes.")
                }
                self.readIndex += 4
                self.state = .waitingForBody(length: length)
            case .waitingForBody(let length):
                guard self.bufferedBytes >= length else { return nil }
                let body = self.buffer[self.readIndex..<(self.readIndex + length)]
                self.readIndex += length
                self.state = .waitingForHeader
                return body
            }
        }
    }

    /// The next whole message, or nil until more bytes arrive.
    public mutating func nextMessage() throws(LoadgenError) -> WireMessage? {
        guard let body = try self.nextBody() else { return nil }
        return try FrameCodec.decodeBody(body)
    }
}
