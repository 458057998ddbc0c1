import BackgroundTasks
import Foundation
import Hearth
import Network
import os

/// One federated round at a time iOS picks: a BGProcessingTask that requires
/// external power and network, run while the device is idle, with the user's
/// opt-in. Hearth checks eligibility again itself (opt-in, conditions, enough
/// new viewing, time since the last round, privacy budget) before contacting
/// anything; the round runs over URLSessionFleetTransport (HTTPS).
enum FederatedTask {
    static let identifier = "org.hearth.demo.federated"  // also in Info.plist's BGTaskSchedulerPermittedIdentifiers
    private static let log = os.Logger(subsystem: "org.hearth.demo", category: "federated")

    /// The coordinator's Fleet API (Info.plist HearthCoordinatorURL, https:// only); nil: never scheduled.
    static var coordinatorURL: URL? {
        guard let text = Bundle.main.object(forInfoDictionaryKey: "HearthCoordinatorURL") as? String,
            let url = URL(string: text), url.scheme == "https"
        else { return nil }
        return url
    }

    /// Registers the launch handler; must run before the app finishes launching (App.init).
    static func register() {
        BGTaskScheduler.shared.register(forTaskWithIdentifier: identifier, using: nil) { task in
            guard let task = task as? BGProcessingTask else {
                task.setTaskCompleted(success: false)
                return
            }
            run(task)
        }
    }

    /// Asks for the next round when the user opted in, withdraws the request otherwise.
    static func schedule(optedIn: Bool) {
        guard optedIn, coordinatorURL != nil else {
            BGTaskScheduler.shared.cancel(taskRequestWithIdentifier: identifier)
            return
        }
        let request = BGProcessingTaskRequest(identifier: identifier)
        request.requiresExternalPower = true
        request.requiresNetworkConnectivity = true
        request.earliestBeginDate = Date(timeIntervalSinceNow: 12 * 3600)
        do {
            try BGTaskScheduler.shared.submit(request)
        } catch {
            log.error("could not schedule the federated task: \(String(describing: error), privacy: .public)")
        }
    }

    private static func run(_ task: BGProcessingTask) {
        let completion = Completion(task)
        // participateVia blocks (a bounded wait for a round, training, the
        // upload: minutes at most), so it gets a thread of its own rather than
        // one of Swift concurrency's few cooperative threads.
        let worker = Thread {
            completion.finish(success: participate())
        }
        // iOS wants the time back: stop the round (Hearth returns within its
        // current network call) and report now; a ledger entry is written
        // before any update leaves.
        task.expirationHandler = {
            (try? SharedStore.shared.open())?.cancelParticipation()
            completion.finish(success: false)
        }
        worker.start()
    }

    private static func participate() -> Bool {
        guard let url = coordinatorURL, let transport = URLSessionFleetTransport(baseURL: url) else { return true }
        do {
            let model = try SharedStore.shared.open()
            let conditions = DeviceConditions(
                charging: true,  // requiresExternalPower: iOS launched the task on power
                unmeteredNetwork: NetworkCheck.isUnmetered(),
                idle: true)  // a BGProcessingTask runs when iOS judges the device idle
            let outcome = try model.participate(transport: transport, conditions: conditions)
            log.info("federated round: \(DemoModel.describe(outcome), privacy: .public)")
            schedule(optedIn: try model.settings().federatedOptIn)
            return true
        } catch {
            // HearthError carries no personal data.
            log.error("federated round failed: \(String(describing: error), privacy: .public)")
            schedule(optedIn: true)
            return false
        }
    }
}

/// setTaskCompleted exactly once, from the worker or the expiration handler.
private final class Completion: @unchecked Sendable {
    private let lock = NSLock()  // guards `done`
    private var done = false
    private let task: BGProcessingTask

    init(_ task: BGProcessingTask) { self.task = task }

    func finish(success: Bool) {
        lock.lock()
        let first = !done
        done = true
        lock.unlock()
        if first { task.setTaskCompleted(success: success) }
    }
}

/// Whether the current network is unmetered: satisfied, and neither
/// expensive (cellular, a hotspot) nor constrained (Low Data Mode).
enum NetworkCheck {
    static func isUnmetered(timeout: TimeInterval = 2) -> Bool {
        let monitor = NWPathMonitor()
        let answer = Answer()
        monitor.pathUpdateHandler = { path in
            answer.set(path.status == .satisfied && !path.isExpensive && !path.isConstrained)
        }
        monitor.start(queue: DispatchQueue(label: "org.hearth.demo.network"))
        defer { monitor.cancel() }
        return answer.wait(timeout) ?? false
    }

    private final class Answer: @unchecked Sendable {
        private let ready = DispatchSemaphore(value: 0)
        private let lock = NSLock()  // guards `value`
        private var value: Bool?

        func set(_ v: Bool) {
            lock.lock()
            let first = value == nil
            value = v
            lock.unlock()
            if first { ready.signal() }
        }

        func wait(_ timeout: TimeInterval) -> Bool? {
            guard ready.wait(timeout: .now() + timeout) == .success else { return nil }
            lock.lock()
            defer { lock.unlock() }
            return value
        }
    }
}
