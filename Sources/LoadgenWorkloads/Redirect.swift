import LoadgenCore

/// What both HTTP clients do with a redirect: follow 301, 302, 303, 307 and 308 to their `Location`, at most
/// ``maxRedirects`` times in one request, changing the request as ``RequestBlueprint/redirected(status:from:to:)``
/// says (Go's rules).
enum Redirect {
    static let maxRedirects = 10

    struct Hop {
        var target: TargetURL
        var blueprint: RequestBlueprint
        var request: [UInt8]
        var redirects: Int
    }

    /// The next hop after `response`, nil when the response is final, or the failure that ends the request.
    static func next(after response: HTTPResponseParser.Response, from target: TargetURL, blueprint: RequestBlueprint,
                     redirects: Int) -> Result<Hop, FetchFailure>? {
        // A switch, not an array literal's contains: this runs on every response.
        switch response.status {
        case 301, 302, 303, 307, 308: break
        default: return nil
        }
        guard let location = response.location else { return nil }
        let count = redirects + 1
        guard count <= Self.maxRedirects else {
            return .failure(FetchFailure(.redirects, "more than \(Self.maxRedirects) redirects, the last to \(location)"))
        }
        let next: TargetURL
        do {
            next = try target.resolving(location: location)
        } catch {
            return .failure(FetchFailure(.protocol, "a redirect to an unusable location: \(error.message)"))
        }
        let hop = blueprint.redirected(status: response.status, from: target, to: next)
        return .success(Hop(target: next, blueprint: hop, request: hop.bytes(for: next), redirects: count))
    }
}

/// `--expect-status` and `--expect-body`, applied to each final response.
struct ResponseChecks: Sendable {
    let statuses: StatusExpectation?
    let body: BodyExpectation?

    init(spec: FetchSpec) throws(LoadgenError) {
        self.statuses = try spec.expectStatus.map { text throws(LoadgenError) in try StatusExpectation(parsing: text) }
        self.body = try spec.expectBody.map { text throws(LoadgenError) in try BodyExpectation(text) }
    }

    /// The completed request, with the check it failed when it failed one.
    @inline(__always)
    func judge(_ response: HTTPResponseParser.Response, redirects: Int, isHead: Bool) -> FetchResponse {
        var result = FetchResponse(status: response.status, bodyBytes: response.bodyBytes, redirects: redirects)
        if let statuses = self.statuses, !statuses.accepts(response.status) {
            result.rejection = FetchFailure(.status, "the status \(response.status) is not one of \(statuses.text)")
        } else if let body = self.body, !isHead, !response.bodyMatched {
            let text = String(decoding: body.needle.prefix(60), as: UTF8.self)
            result.rejection = FetchFailure(.body, "the first 64 KiB of a \(response.status) response's \(response.bodyBytes)-byte body lack '\(text)'")
        }
        return result
    }
}
