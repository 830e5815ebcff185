import LoadgenCore

/// What both HTTP clients do with a redirect: follow 301, 302, 303, 307 and 308 to their `Location` (303 turns the
/// method into GET), at most ``maxRedirects`` times in one request.
enum Redirect {
    static let maxRedirects = 10

    struct Hop {
        var target: TargetURL
        var method: HTTPMethod
        var request: [UInt8]
        var redirects: Int
    }

    /// The next hop after `response`, nil when the response is final, or the failure that ends the request.
    static func next(after response: HTTPResponseParser.Response, from target: TargetURL, method: HTTPMethod,
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
        let nextMethod: HTTPMethod = response.status == 303 ? .get : method
        return .success(Hop(target: next, method: nextMethod, request: HTTPRequestBytes.make(method: nextMethod, target: next),
                            redirects: count))
    }
}
