// Hearth's SyncTransport over URLSession, against the app's own backend: a
// flat store of opaque blobs for the signed-in person. Foundation only: the
// console twin builds and exercises this same file on Linux
// (FoundationNetworking).
import Foundation
import Hearth

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The demo backend's blob API, under `baseURL` (the person's own space,
/// which the bearer `token` of their session with the app opens):
///
/// - `PUT <base>/<name>` stores the body under the name;
/// - `GET <base>/` lists the blobs, one `<name> <size>` per line;
/// - `GET <base>/<name>` returns one (404: none);
/// - `DELETE <base>/<name>` removes one (404 counts as done).
///
/// The backend only ever stores and returns bytes sealed on the person's
/// devices. A failure to connect, a timeout or a 5xx/429 is
/// `SyncTransportError.Unavailable` (Hearth stops the sync and the next one
/// goes on); any other status is `Refused`. Hearth calls it on the thread
/// that called `sync` and waits: it is synchronous, over a semaphore, and
/// must never be called on the main thread.
public final class URLSessionSyncTransport: SyncTransport {
    private let base: String
    private let token: String
    private let session: URLSession
    private let timeout: TimeInterval

    /// nil unless `baseURL` is `https://` (or `http://` with `allowCleartext`,
    /// for a backend on localhost in a test).
    public init?(
        baseURL: URL, token: String, session: URLSession = .shared, timeout: TimeInterval = 15,
        allowCleartext: Bool = false
    ) {
        guard baseURL.scheme == "https" || (allowCleartext && baseURL.scheme == "http") else { return nil }
        var base = baseURL.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        self.base = base
        self.token = token
        self.session = session
        self.timeout = timeout
    }

    public func put(name: String, blob: Data) throws {
        _ = try call("PUT", "/" + name, body: blob)
    }

    public func list() throws -> [SyncBlob] {
        guard let text = try call("GET", "/", body: nil) else { throw SyncTransportError.Refused(reason: "no listing") }
        return try String(decoding: text, as: UTF8.self).split(separator: "\n").map { line in
            let parts = line.split(separator: " ")
            guard parts.count == 2, let size = UInt64(parts[1]) else {
                throw SyncTransportError.Unavailable(reason: "a listing line that is not <name> <size>")
            }
            return SyncBlob(name: String(parts[0]), size: size)
        }
    }

    public func get(name: String) throws -> Data? { try call("GET", "/" + name, body: nil) }

    public func delete(name: String) throws {
        _ = try call("DELETE", "/" + name, body: nil)
    }

    /// The reply body of a 2xx; nil for a 404 (no such blob).
    private func call(_ method: String, _ path: String, body: Data?) throws -> Data? {
        guard let url = URL(string: base + path) else { throw SyncTransportError.Refused(reason: "bad URL") }
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        request.httpMethod = method
        request.setValue("Bearer \(token)", forHTTPHeaderField: "authorization")
        if let body {
            request.httpBody = body
            request.setValue("application/octet-stream", forHTTPHeaderField: "content-type")
        }
        guard let reply = BlockingExchange.run(request, on: session, seconds: timeout) else {
            throw SyncTransportError.Unavailable(reason: "timed out")
        }
        if let error = reply.error as? URLError {
            throw SyncTransportError.Unavailable(reason: "URLError \(error.code.rawValue)")
        }
        if let error = reply.error { throw SyncTransportError.Unavailable(reason: String(describing: type(of: error))) }
        guard let http = reply.response as? HTTPURLResponse else {
            throw SyncTransportError.Unavailable(reason: "not an HTTP reply")
        }
        switch http.statusCode {
        case 200..<300: return reply.data ?? Data()
        case 404 where method != "PUT": return nil
        case 429, 500...: throw SyncTransportError.Unavailable(reason: "HTTP \(http.statusCode)")
        default: throw SyncTransportError.Refused(reason: "HTTP \(http.statusCode)")
        }
    }
}
