// Hearth's FleetTransport over URLSession: the platform's HTTPS stack (TLS,
// proxies, App Transport Security). Foundation only: the console twin builds
// and exercises this same file on Linux (FoundationNetworking).
import Foundation
import Hearth

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// POSTs each Fleet API message to `baseURL` joined with the path Hearth
/// gives, within the timeout Hearth gives (the whole exchange, not only the
/// idle time URLSession's own timeout bounds), and maps every failure to a
/// `TransportFailure`. Hearth calls `post` on its own threads and waits: it is
/// synchronous, over a semaphore, and must never be called on the main thread.
public final class URLSessionFleetTransport: FleetTransport {
    private let base: String
    private let session: URLSession
    private let maxReplyBytes: Int

    /// nil unless `baseURL` is `https://` (or `http://` with `allowCleartext`,
    /// for a coordinator on localhost in a test).
    public init?(baseURL: URL, session: URLSession = .shared, maxReplyBytes: Int = 64 << 20, allowCleartext: Bool = false) {
        guard baseURL.scheme == "https" || (allowCleartext && baseURL.scheme == "http") else { return nil }
        var base = baseURL.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        self.base = base
        self.session = session
        self.maxReplyBytes = maxReplyBytes
    }

    public func post(path: String, headers: [HttpHeader], body: Data, timeoutMs: UInt64) throws -> Data {
        guard let url = URL(string: base + path) else { throw TransportFailure.Io(reason: "bad URL") }
        let timeout = TimeInterval(max(timeoutMs, 1)) / 1000
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        request.httpMethod = "POST"
        request.httpBody = body
        request.setValue("application/protobuf", forHTTPHeaderField: "content-type")
        request.setValue("application/protobuf", forHTTPHeaderField: "accept")
        for header in headers { request.setValue(header.value, forHTTPHeaderField: header.name) }

        guard let reply = BlockingExchange.run(request, on: session, seconds: timeout) else {
            throw TransportFailure.Timeout
        }
        return try replyBody(of: reply)
    }

    /// The reply's body, or the failure it is.
    private func replyBody(of reply: BlockingExchange) throws -> Data {
        let (data, response, error) = (reply.data, reply.response, reply.error)
        if let error = error as? URLError {
            if error.code == .timedOut { throw TransportFailure.Timeout }
            throw TransportFailure.Io(reason: "URLError \(error.code.rawValue)")
        }
        if let error { throw TransportFailure.Io(reason: String(describing: type(of: error))) }
        guard let http = response as? HTTPURLResponse else { throw TransportFailure.Io(reason: "not an HTTP reply") }
        guard (200..<300).contains(http.statusCode) else {
            // Retry-After in seconds on 429 / 503: Hearth waits that long (within its bound).
            if http.statusCode == 429 || http.statusCode == 503,
               let value = http.value(forHTTPHeaderField: "Retry-After"),
               let seconds = UInt64(value.trimmingCharacters(in: .whitespaces)) {
                throw TransportFailure.Throttled(code: UInt16(clamping: http.statusCode), retryAfterMs: min(seconds, 86_400) * 1_000)
            }
            throw TransportFailure.Status(code: UInt16(clamping: http.statusCode))
        }
        let body = data ?? Data()
        // URLSession has buffered the whole body by now; the bound still keeps it from Hearth.
        if body.count > maxReplyBytes || http.expectedContentLength > Int64(maxReplyBytes) { throw TransportFailure.TooLarge }
        return body
    }
}
