import CBOR
import CoordinateClient

/// What a task sees of the unit it runs.
public struct TaskContext: Sendable {
    /// The leased unit. Its `data` is the unit's data as handed out.
    public let unit: WorkUnit
    /// The work spec's stored data.
    public let spec: CBORMap
    /// The child worker id running the task.
    public var workerID: String { unit.workerID }
    /// The unit's key.
    public var key: CBORValue { unit.key }
    /// The unit's data.
    public var data: CBORValue { unit.data }
}

/// Task code: runs one unit. Return new data to store with the finished unit (for example with an `output`
/// entry that creates units in the `then` spec), or `nil` to keep the data. Throwing fails the unit, with the
/// error's description as its traceback. Tasks should honour cancellation: the runtime cancels a task whose
/// lease was lost, that ran past `max_task_seconds`, or that outlived a drain.
public typealias TaskHandler = @Sendable (TaskContext) async throws -> CBORValue?

/// Which handler runs which work spec.
///
/// A spec is matched, in this order, by its name, by the value of its `task` key, and — when
/// ``runsShellCommands`` is set — by having a `command` key (see ``ShellCommandTask``).
public struct TaskRegistry: Sendable {
    private var bySpecName: [String: TaskHandler] = [:]
    private var byTaskName: [String: TaskHandler] = [:]
    /// Whether specs with a `command` key run as child processes.
    public var runsShellCommands: Bool

    public init(runsShellCommands: Bool = false) {
        self.runsShellCommands = runsShellCommands
    }

    /// Runs every unit of the work spec named `spec` with `handler`.
    public mutating func register(spec: String, _ handler: @escaping TaskHandler) {
        bySpecName[spec] = handler
    }

    /// Runs every unit of any spec whose `task` key equals `task` with `handler`.
    public mutating func register(task: String, _ handler: @escaping TaskHandler) {
        byTaskName[task] = handler
    }

    /// The handler for a spec, if any.
    public func handler(specName: String, spec: CBORMap) -> TaskHandler? {
        if let handler = bySpecName[specName] { return handler }
        if let task = spec["task"]?.stringValue, let handler = byTaskName[task] { return handler }
        if runsShellCommands, let command = spec["command"], let task = ShellCommandTask(command: command) {
            return { context in try await task.run(context) }
        }
        return nil
    }
}
