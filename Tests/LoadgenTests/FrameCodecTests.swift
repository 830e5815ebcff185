import Foundation
import Testing
@testable import LoadgenCore

struct FrameCodecTests {
    let messages: [WireMessage] = [
        .heartbeat(.init(seq: 1)),
        .prepared(.init(runID: "r-1", runDirectory: "/tmp/x")),
        .abort(.init(runID: "r-1", reason: "stop")),
        .failure(.init(code: .protocolViolation, message: "bad")),
    ]

    @Test func framesCarryABigEndianLengthThenTheBody() throws {
        for message in self.messages {
            let frame = try FrameCodec.encode(message)
            let length = Int(frame[0]) << 24 | Int(frame[1]) << 16 | Int(frame[2]) << 8 | Int(frame[3])
            #expect(length == frame.count - 4)
            // JSON bodies open with '{'; binary ones with a protobuf tag (0x12: BinaryFrame field 2, a heartbeat).
            #expect(frame[4] == (message.kind.travelsAsJSON ? UInt8(ascii: "{") : 0x12), "\(message.kind)")
        }
        #expect(try FrameCodec.encode(.heartbeat(.init(seq: 7))) == [0, 0, 0, 4, 0x12, 0x02, 0x08, 0x07])
    }

    @Test func decodesBytesDrippedOneAtATime() throws {
        var decoder = FrameDecoder()
        var out: [WireMessage] = []
        for message in self.messages {
            for byte in try FrameCodec.encode(message) {
                decoder.append([byte])
                while let m = try decoder.nextMessage() { out.append(m) }
            }
        }
        #expect(out == self.messages)
        #expect(decoder.bufferedBytes == 0)
    }

    @Test func decodesManyFramesInOneBuffer() throws {
        var all: [UInt8] = []
        for message in self.messages { all += try FrameCodec.encode(message) }
        var decoder = FrameDecoder()
        decoder.append(all)
        var out: [WireMessage] = []
        while let m = try decoder.nextMessage() { out.append(m) }
        #expect(out == self.messages)
    }

    @Test func refusesAnOversizedLengthBeforeTheBodyArrives() {
        var decoder = FrameDecoder()
        decoder.append([0xff, 0xff, 0xff, 0xff])
        #expect(throws: LoadgenError.self) { try decoder.nextBody() }
        var small = FrameDecoder(maxFrameBytes: 10)
        small.append([0, 0, 0, 11])
        #expect(throws: LoadgenError.self) { try small.nextBody() }
    }

    @Test func waitsForATruncatedFrame() throws {
        var decoder = FrameDecoder()
        let frame = try FrameCodec.encode(.heartbeat(.init(seq: 1)))
        decoder.append(frame.dropLast())
        #expect(try decoder.nextMessage() == nil)
        decoder.append([frame.last!])
        #expect(try decoder.nextMessage() == .heartbeat(.init(seq: 1)))
    }

    @Test(arguments: [#"{"type":"launch_missiles"}"#, #"{"seq":1}"#, #"not json"#, #"{"type":"heartbeat"}"#,
                      #"{"type":"heartbeat","seq":"one"}"#, #"{"type":"heartbeat","seq":5}"#, ""])
    func refusesMalformedBodies(body: String) {
        #expect(throws: LoadgenError.self) { try FrameCodec.decodeBody(Array(body.utf8)) }
    }

    @Test func intervalsRoundTripWithTheirHistogram() throws {
        var tally = Tally()
        tally.ops = 5
        tally.bytes = 10
        tally.recordError(.noSpace, "full")
        for v: UInt64 in [100, 200, 300, 400, 500] { tally.latency.recordLatency(v) }
        let message = WireMessage.interval(.init(runID: "r", phase: .main, seq: 1, elapsedNanos: 1_000_000_000, tally: tally))
        var decoder = FrameDecoder()
        decoder.append(try FrameCodec.encode(message))
        let back = try decoder.nextMessage()
        #expect(back == message)
        guard case .interval(let interval) = back else { return }
        let t = try interval.tally()
        #expect(t.latency.totalCount == 5)
        #expect(t.errors[.noSpace] == 1)
    }
}
