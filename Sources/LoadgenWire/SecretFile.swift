import COpenSSL
import Foundation
import LoadgenCore

/// The shared secret agents and coordinators prove they hold, read from a file only its owner can read.
public struct SharedSecret: SecretProver {
    private let key: [UInt8]

    public init(bytes: [UInt8]) {
        self.key = bytes
    }

    /// Reads a secret file, refusing one that is missing, not a regular file, empty, or readable by group or
    /// others (as ssh and Erlang's cookie do): a secret anyone on the host can read protects nothing.
    ///
    /// One exception: a file directly in `credentialsDirectory`, systemd's `$CREDENTIALS_DIRECTORY` for the service
    /// (`LoadCredential=`), may show group read. systemd makes that directory for the service alone, read-only; on
    /// tmpfs (systemd after 252) it grants the service's user read through an ACL, and `stat` shows the ACL's mask
    /// as the group bits (0440), which nobody in the file's group holds.
    public static func load(path: String, credentialsDirectory: String? = nil) throws(LoadgenError) -> SharedSecret {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw .usage("The secret file '\(path)' cannot be read: \(errnoDescription(errno)).")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .usage("The secret file '\(path)' is not a regular file.")
        }
        let mode = info.st_mode & 0o777
        let credential = credentialsDirectory.map { directory in
            URL(fileURLWithPath: path).deletingLastPathComponent().standardizedFileURL.path
                == URL(fileURLWithPath: directory).standardizedFileURL.path
        } ?? false
        guard mode & (credential ? 0o027 : 0o077) == 0 else {
            throw .usage("The secret file '\(path)' is readable by group or others (mode \(String(mode, radix: 8))); run chmod 600 '\(path)'.")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .usage("The secret file '\(path)' cannot be read.")
        }
        var bytes = [UInt8](data)
        while let last = bytes.last, last == 10 || last == 13 || last == 32 || last == 9 { bytes.removeLast() }
        guard !bytes.isEmpty else {
            throw .usage("The secret file '\(path)' is empty; put at least 16 random bytes in it (e.g. openssl rand -hex 32 > '\(path)').")
        }
        guard bytes.count >= 16 else {
            throw .usage("The secret in '\(path)' is only \(bytes.count) bytes; use at least 16 (e.g. openssl rand -hex 32 > '\(path)').")
        }
        return SharedSecret(bytes: bytes)
    }

    /// HMAC-SHA256 over `label ‖ 0 ‖ first ‖ 0 ‖ second`, from the system's libcrypto.
    func mac(label: String, first: String, second: String) -> [UInt8] {
        var message = Array(label.utf8)
        message.append(0)
        message += Array(first.utf8)
        message.append(0)
        message += Array(second.utf8)
        return self.macOfBytes(message)
    }

    /// HMAC-SHA256 of exactly `message`.
    func macOfBytes(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        _ = self.key.withUnsafeBytes { key in
            message.withUnsafeBytes { data in
                HMAC(EVP_sha256(), key.baseAddress, Int32(key.count), data.baseAddress?.assumingMemoryBound(to: UInt8.self),
                     data.count, &out, &length)
            }
        }
        return Array(out.prefix(Int(length)))
    }

    public func proof(label: String, first: String, second: String) -> String {
        self.mac(label: label, first: first, second: second).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    public func verify(_ proof: String, label: String, first: String, second: String) -> Bool {
        let expected = Array(self.proof(label: label, first: first, second: second).utf8)
        let given = Array(proof.utf8)
        guard given.count == expected.count else { return false }
        return expected.withUnsafeBytes { e in given.withUnsafeBytes { g in CRYPTO_memcmp(e.baseAddress, g.baseAddress, e.count) == 0 } }
    }
}
