/// Proves and checks knowledge of a shared secret: HMAC-SHA256 over a label and two nonces, compared in constant
/// time. Both sides prove: the agent first (covering the coordinator's nonce), then the coordinator (covering the
/// agent's), so neither can be replayed and neither side acts before the other has proved itself.
public protocol SecretProver: Sendable {
    /// HMAC-SHA256(secret, label ‖ 0 ‖ first ‖ 0 ‖ second), as lowercase hex.
    func proof(label: String, first: String, second: String) -> String
    /// Whether `proof` is the right proof, compared in constant time.
    func verify(_ proof: String, label: String, first: String, second: String) -> Bool
}

public enum Handshake {
    public static let agentLabel = "loadgen-agent"
    public static let coordinatorLabel = "loadgen-coordinator"

    /// 32 random bytes as hex, from the system's secure generator.
    public static func makeNonce() -> String {
        var generator = SystemRandomNumberGenerator()
        var text = ""
        text.reserveCapacity(64)
        for _ in 0..<4 {
            let word = generator.next() as UInt64
            var hex = String(word, radix: 16)
            while hex.count < 16 { hex = "0" + hex }
            text += hex
        }
        return text
    }

    /// Whether a nonce is the 64 lowercase hex digits ``makeNonce()`` makes.
    public static func isWellFormedNonce(_ nonce: String) -> Bool {
        nonce.utf8.count == 64 && nonce.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
