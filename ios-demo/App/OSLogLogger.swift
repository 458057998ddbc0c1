import Hearth
import os

/// Hearth's log lines to the unified log (subsystem org.hearth.demo, category
/// Hearth). Hearth's messages carry no item id, title, category or timestamp,
/// so they are logged as public. Called on whatever thread logs, possibly
/// while Hearth holds its lock: quick, and never calls back into Hearth.
final class OSLogLogger: HearthLogger {
    private let osLog = os.Logger(subsystem: "org.hearth.demo", category: "Hearth")

    func log(level: LogLevel, target: String, message: String) {
        let type: OSLogType
        switch level {
        case .error: type = .error
        case .warn: type = .default
        case .info: type = .info
        case .debug, .trace: type = .debug
        }
        osLog.log(level: type, "\(target, privacy: .public): \(message, privacy: .public)")
    }
}
