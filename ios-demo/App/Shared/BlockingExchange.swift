// One URLSession exchange, waited for on the calling thread: Hearth calls an
// app's transport on a thread of its own and waits for the answer, so the
// transports (URLSessionFleetTransport, URLSessionSyncTransport) are
// synchronous over a semaphore. Foundation only (the console twin builds it
// on Linux).
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The result of one exchange, handed from URLSession's delegate queue to
/// the waiting thread.
final class BlockingExchange: @unchecked Sendable {
    // Written once by the completion handler before the semaphore is
    // signalled, read after the wait.
    private let done = DispatchSemaphore(value: 0)
    private(set) var data: Data?
    private(set) var response: URLResponse?
    private(set) var error: Error?

    /// Runs `request` on `session` and waits for it: nil when `seconds`
    /// passed first (the task is then cancelled).
    static func run(_ request: URLRequest, on session: URLSession, seconds: TimeInterval) -> BlockingExchange? {
        let exchange = BlockingExchange()
        let task = session.dataTask(with: request) { data, response, error in
            exchange.data = data
            exchange.response = response
            exchange.error = error
            exchange.done.signal()
        }
        task.resume()
        guard exchange.done.wait(timeout: .now() + seconds) == .success else {
            task.cancel()
            return nil
        }
        return exchange
    }
}
