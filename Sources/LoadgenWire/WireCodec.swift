import LoadgenCore
import NIOCore

/// Frames on a NIO channel (see ``FrameCodec`` for the layout). The length is checked against the cap as soon as
/// its four bytes arrive, before any byte of the body is buffered for it.
public final class WireFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = WireMessage
    private let maxFrameBytes: Int

    public init(maxFrameBytes: Int = FrameCodec.maxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    public func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return .needMoreData
        }
        guard Int(length) <= self.maxFrameBytes else {
            throw LoadgenError.protocolViolation("A frame announced \(length) bytes, over the limit of \(self.maxFrameBytes) bytes.")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        let body = buffer.readSlice(length: Int(length))!
        let message = try FrameCodec.decodeBody(body.readableBytesView)
        context.fireChannelRead(self.wrapInboundOut(message))
        return .continue
    }

    public func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try self.decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

@available(*, unavailable)
extension WireFrameDecoder: Sendable {}

public final class WireFrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = WireMessage

    public init() {}

    public func encode(data: WireMessage, out: inout ByteBuffer) throws {
        out.writeBytes(try FrameCodec.encode(data))
    }
}

@available(*, unavailable)
extension WireFrameEncoder: Sendable {}

extension ChannelPipeline.SynchronousOperations {
    /// Adds loadgen's frame decoder and encoder.
    public func addWireCodec() throws {
        try self.addHandler(ByteToMessageHandler(WireFrameDecoder()))
        try self.addHandler(MessageToByteHandler(WireFrameEncoder()))
    }
}
