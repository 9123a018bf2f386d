import CoordinateEngine
import CoordinateJSON
import HTTPTypes

/// An HTTP error with the body of rest-api.md §1.6: `{"error": CODE, "message": TEXT, "value": NAME?}`.
public struct RESTError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// The missing name, for the `NoSuch` codes.
    public var value: String?
    /// Extra response headers (`Allow`, `WWW-Authenticate`).
    public var headers: [(HTTPField.Name, String)] = []

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, value: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.value = value
    }

    public static func == (lhs: RESTError, rhs: RESTError) -> Bool {
        lhs.status == rhs.status && lhs.code == rhs.code && lhs.message == rhs.message && lhs.value == rhs.value
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    var body: JSONValue {
        var members: [(String, JSONValue)] = [("error", .string(code)), ("message", .string(message))]
        if let value { members.append(("value", .string(value))) }
        return .object(members)
    }

    static func badRequest(_ message: String) -> RESTError { RESTError(.badRequest, "ErrBadRequest", message) }

    static func noSuchWorkSpec(_ name: Identifier) -> RESTError {
        RESTError(.notFound, "ErrNoSuchWorkSpec", "No such work spec \(name)", value: name.description)
    }

    static func noSuchWorkUnit(_ name: Identifier) -> RESTError {
        RESTError(.notFound, "ErrNoSuchWorkUnit", "No such work unit \"\(name)\"", value: name.description)
    }

    static let noSuchAttempt = RESTError(.notFound, "ErrNoSuchAttempt", "No such attempt")
    /// An attempt deleted with its unit, spec or namespace: go-coordinate's `ErrGone`, which its client maps to
    /// `coordinate.ErrGone` (it reads the code, whatever the status).
    static let gone = RESTError(.gone, "ErrGone", "The attempt's work unit was deleted")
    static let notFound = RESTError(.notFound, "ErrNotFound", "Not found")
    static let notPending = RESTError(.conflict, "ErrNotPending", "Attempt is not pending")
    static let lostLease = RESTError(.conflict, "ErrLostLease", "No longer the active attempt")

    /// The REST form of an engine refusal (rest-api.md §1.6).
    static func from(_ error: EngineError) -> RESTError {
        switch error {
        case .noWorkSpecName: return RESTError(.badRequest, "ErrNoWorkSpecName", error.message)
        case .workSpecNameNotString: return RESTError(.badRequest, "ErrBadWorkSpecName", error.message)
        case .changedName: return RESTError(.badRequest, "ErrChangedName", error.message)
        case .invalidWorkSpec: return RESTError(.badRequest, "ErrInvalidWorkSpec", error.message)
        case .invalidUnitItem(let problem): return RESTError(.badRequest, code(of: problem), error.message)
        default: return .badRequest(error.message)
        }
    }

    /// The REST code of an invalid unit item (rest-api.md §1.6).
    static func code(of problem: UnitItemProblem) -> String {
        switch problem {
        case .notAList: return "ErrWorkUnitNotList"
        case .tooFewParameters: return "ErrWorkUnitTooShort"
        case .priorityNotNumber: return "ErrBadPriority"
        default: return "ErrBadRequest"
        }
    }
}
