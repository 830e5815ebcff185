import Foundation

/// A `--targets-file`: either a list of URLs, one per line (`#` starts a comment), or vegeta's `http` targets format,
/// read as vegeta reads it (its `lib/targets.go`, `NewHTTPTargeter`):
///
///     # a comment
///     GET http://goku:9090/path/to/dragon?item=ball
///     X-Account-ID: 8675309
///
///     POST http://goku:9090/things
///     Content-Type: application/json
///     @/path/to/newthing.json
///
/// A target is a request line (an upper-case method, one space, the URL), then header lines `Name: value`, up to a
/// blank line, the next request line, or an `@FILE` line giving its body (read relative to the working directory,
/// as vegeta does), which ends the target. Lines starting with `#` are skipped anywhere. A URL's user information
/// (`http://user:password@host/`) becomes an `Authorization: Basic` header, as Go's client sends it. The file is
/// in vegeta's format when its first line that is not blank or a comment starts with a method.
public enum TargetsFile {
    public struct Entry: Hashable, Sendable {
        public var url: String
        /// Nil in a URL list: the run's `--method`.
        public var method: HTTPMethod?
        public var headers: [HTTPHeader]
        /// The body file an `@FILE` line named.
        public var bodyFile: String?

        public init(url: String, method: HTTPMethod? = nil, headers: [HTTPHeader] = [], bodyFile: String? = nil) {
            self.url = url
            self.method = method
            self.headers = headers
            self.bodyFile = bodyFile
        }
    }

    /// Reads and parses the file at `path`.
    public static func read(_ path: String) throws(LoadgenError) -> [Entry] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw .usage("The targets file '\(path)' cannot be read.")
        }
        return try Self.parse(text, name: path)
    }

    /// Whether the line starts with a method and a space (vegeta's `^[A-Z]+\s`).
    static func startsWithMethod(_ line: Substring) -> Bool {
        let letters = line.utf8.prefix { $0 >= 65 && $0 <= 90 }
        guard !letters.isEmpty, letters.count < line.utf8.count else { return false }
        let next = line.utf8[line.utf8.index(line.utf8.startIndex, offsetBy: letters.count)]
        return next == 32 || next == 9
    }

    public static func parse(_ text: String, name: String) throws(LoadgenError) -> [Entry] {
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces)[...] }
        let first = lines.first { !$0.isEmpty && !$0.hasPrefix("#") }
        guard let first else { throw .usage("The targets file '\(name)' lists no targets.") }
        let entries = Self.startsWithMethod(first) ? try Self.parseHTTPFormat(lines, name: name) : try Self.parseURLList(lines, name: name)
        guard !entries.isEmpty else { throw .usage("The targets file '\(name)' lists no targets.") }
        return entries
    }

    private static func parseURLList(_ lines: [Substring], name: String) throws(LoadgenError) -> [Entry] {
        var entries: [Entry] = []
        for (number, line) in lines.enumerated() {
            let url = (line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                .trimmingCharacters(in: .whitespaces)
            if url.isEmpty { continue }
            guard url.contains("://"), !url.contains(" "), !url.contains("\t") else {
                throw .usage("Line \(number + 1) of the targets file '\(name)' holds '\(url.prefix(80))', which is neither an http:// or https:// URL nor a request line such as 'GET http://host/path' (a method is upper-case letters).")
            }
            do throws(LoadgenError) {
                _ = try TargetURL.parse(url)
            } catch {
                throw .usage("At line \(number + 1) of the targets file '\(name)': \(error.message)")
            }
            entries.append(Entry(url: url))
        }
        return entries
    }

    private static func parseHTTPFormat(_ lines: [Substring], name: String) throws(LoadgenError) -> [Entry] {
        var entries: [Entry] = []
        var i = 0
        func place(_ index: Int) -> String { "line \(index + 1) of the targets file '\(name)'" }
        while i < lines.count {
            let line = lines[i]
            if line.isEmpty || line.hasPrefix("#") {
                i += 1
                continue
            }
            guard Self.startsWithMethod(line), let space = line.firstIndex(where: { $0 == " " || $0 == "\t" }) else {
                throw .usage("At \(place(i)), '\(line.prefix(80))' is not a request line such as 'GET http://host/path'.")
            }
            let methodText = String(line[..<space])
            guard let method = HTTPMethod(rawValue: methodText) else {
                throw .usage("At \(place(i)), the method '\(methodText.prefix(40))' is longer than 20 letters.")
            }
            let rawURL = line[line.index(after: space)...].trimmingCharacters(in: .whitespaces)
            var entry = Entry(url: rawURL, method: method)
            do throws(LoadgenError) {
                let (url, authorization) = try Self.splittingCredentials(rawURL)
                entry.url = url
                if let authorization { entry.headers.append(authorization) }
                _ = try TargetURL.parse(url)
            } catch {
                throw .usage("At \(place(i)): \(error.message)")
            }
            i += 1
            // Headers, comments and a body, up to a blank line or the next request line.
            while i < lines.count {
                let next = lines[i]
                if next.isEmpty { break }
                if next.hasPrefix("#") {
                    i += 1
                    continue
                }
                if Self.startsWithMethod(next) { break }
                if next.hasPrefix("@") {
                    let file = String(next.dropFirst())
                    guard !file.isEmpty else { throw .usage("At \(place(i)), '@' names no body file.") }
                    entry.bodyFile = file
                    i += 1
                    break
                }
                guard let colon = next.firstIndex(of: ":") else {
                    throw .usage("At \(place(i)), '\(next.prefix(80))' is not a header line 'Name: value'.")
                }
                let header = HTTPHeader(name: next[..<colon].trimmingCharacters(in: .whitespaces),
                                        value: next[next.index(after: colon)...].trimmingCharacters(in: .whitespaces))
                guard !header.name.isEmpty, !header.value.isEmpty else {
                    throw .usage("At \(place(i)), the header '\(next.prefix(80))' has an empty name or value.")
                }
                do throws(LoadgenError) {
                    try header.validate()
                } catch {
                    throw .usage("At \(place(i)): \(error.message)")
                }
                entry.headers.append(header)
                i += 1
            }
            entries.append(entry)
        }
        return entries
    }

    /// `http://user:password@host/` as the URL without them and the `Authorization: Basic` header they make
    /// (percent-escapes decoded first, as Go's URL parser does).
    static func splittingCredentials(_ url: String) throws(LoadgenError) -> (String, HTTPHeader?) {
        guard let schemeEnd = url.range(of: "://") else { return (url, nil) }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return (url, nil) }
        let userinfo = authority[..<at]
        guard let decoded = userinfo.removingPercentEncoding else {
            throw .usage("The user information of the URL '\(url.prefix(80))' has a bad percent-escape.")
        }
        let stripped = String(url[..<schemeEnd.upperBound]) + String(authority[authority.index(after: at)...]) + String(rest[authorityEnd...])
        let credentials = decoded.contains(":") ? decoded : decoded + ":"
        return (stripped, HTTPHeader(name: "Authorization", value: "Basic " + Base64.encode(Array(credentials.utf8))))
    }
}
