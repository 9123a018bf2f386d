import CBOR
import CoordinateEngine
import CoordinateJSON
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The dashboard's optional operator actions (rest-api.md §8.1), available only when `http_token` is set:
/// login, and pause / resume / retry failed / change priority, each a GET confirmation page whose form POSTs
/// back to the same path with a CSRF token issued for that page.
extension Dashboard {
    /// The actions of a spec, by the last path segment.
    enum Action: String {
        case pause, resume
        case retryFailed = "retry_failed"
        case priority
    }

    /// Who is asking, when the request carries the bearer token or a live session cookie.
    func authenticate(_ request: Request) -> DashboardPrincipal? {
        guard let token else { return nil }
        if let header = request.headers[.authorization], header.hasPrefix("Bearer "),
            HTTPAPI.constantTimeEqual(Array(header.dropFirst(7).utf8), Array(token.utf8))
        {
            return .bearer
        }
        if let session = request.cookies[DashboardSessions.cookieName]?.value, sessions.isValidSession(session) {
            return .session(session)
        }
        return nil
    }

    // MARK: - Login

    func loginPage(status: HTTPResponse.Status = .ok, error: String? = nil) -> Response {
        var context: [String: Any] = [:]
        if let error { context["error"] = error }
        return html(status, title: "Log in", body: render("login", context), refresh: nil, noStore: true)
    }

    /// `POST /ui/login`: the right token starts a session (the cookie holds a random value, never the token).
    func login(_ request: RESTRequest) -> Response {
        guard let token else { return notFoundPage("No such page.") }
        guard Self.isForm(request) else { return formRequired() }
        let fields = Self.formFields(request)
        guard let offered = fields["token"], HTTPAPI.constantTimeEqual(Array(offered.utf8), Array(token.utf8)) else {
            return loginPage(status: .forbidden, error: "Wrong token.")
        }
        let cookie = sessionCookie(sessions.createSession())
        return Response(status: .seeOther, headers: [.location: "/ui", .setCookie: cookie, .cacheControl: "no-store"])
    }

    /// `POST /ui/logout`: ends the session whose cookie and logout token the form carries.
    func logout(_ request: RESTRequest) -> Response {
        guard Self.isForm(request) else { return formRequired() }
        let fields = Self.formFields(request)
        guard let session = request.request.cookies[DashboardSessions.cookieName]?.value, let csrf = fields["csrf"],
            sessions.endSession(session, logoutToken: csrf)
        else { return forbidden("You are not logged in, or this form has expired. Nothing was changed.") }
        let cookie = sessionCookie("", attributes: "Max-Age=0; ")
        return Response(
            status: .seeOther, headers: [.location: "/ui/login", .setCookie: cookie, .cacheControl: "no-store"])
    }

    /// The `Set-Cookie` value for the session cookie (rest-api.md §8.1); `Secure` under TLS.
    private func sessionCookie(_ value: String, attributes: String = "") -> String {
        "\(DashboardSessions.cookieName)=\(value); \(attributes)HttpOnly; SameSite=Strict; Path=/ui"
            + (secureTransport ? "; Secure" : "")
    }

    static func formFields(_ request: RESTRequest) -> [String: String] {
        FormFields.parse(request.body.map { Array($0.readableBytesView) } ?? [])
    }

    static func redirect(to location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }

    // MARK: - Confirmation pages

    /// `GET …/work_spec/{spec}/{action}`: states what will change and carries the form.
    func confirmationPage(
        _ ns: Identifier, _ specName: Identifier, _ action: Action, principal: DashboardPrincipal,
        query: QueryParameters
    ) async throws -> (String, String) {
        let unitSegment = query.first("unit") ?? ""
        if action == .priority, unitSegment.isEmpty {
            throw PageError.badRequest("Which unit? The link needs ?unit=NAME.")
        }
        let unitKey = action == .priority ? try Self.name(unitSegment) : nil
        let page = try await engine.perform(.read) { tx -> PageContext? in
            guard let spec = try tx.spec(namespace: ns, named: specName) else { return nil }
            let specText = Self.text(specName)
            var context: [String: Any] = [
                "namespace": Self.label(ns), "nsLink": Self.nsLink(ns), "spec": specText,
                "specLink": Self.specLink(ns, specName), "action": action.rawValue,
            ]
            let paused = spec.effective.paused
            let (heading, effect, button): (String, String, String)
            switch action {
            case .pause:
                heading = "Pause work spec \(specText)?"
                effect =
                    paused
                    ? "The work spec is already paused; pausing again changes nothing."
                    : "Workers get no new units from this work spec until it is resumed. Units already running "
                        + "continue and can finish."
                button = "Pause"
            case .resume:
                heading = "Resume work spec \(specText)?"
                effect =
                    paused
                    ? "Workers get units from this work spec again."
                    : "The work spec is not paused; resuming changes nothing."
                button = "Resume"
            case .retryFailed:
                let failed = try tx.unitCounts(of: spec).failed
                let units = failed == 1 ? "1 failed unit becomes" : "\(failed) failed units become"
                heading = "Retry the failed units of \(specText)?"
                effect =
                    "\(units) available again, as update_work_unit with status AVAILABLE (their attempt history "
                    + "is kept)."
                button = "Retry \(failed) unit\(failed == 1 ? "" : "s")"
            case .priority:
                guard let unitKey, let unit = try tx.workUnit(namespace: ns, spec: specName, key: unitKey) else {
                    return PageContext(["missingUnit": true])
                }
                heading = "Change the priority of \(Self.repr(unit.key.value))?"
                effect =
                    "Its priority is \(PythonRepr.formatFloat(unit.priority)). Units with a higher priority are "
                    + "handed out first."
                button = "Set priority"
                context["unit"] = unitSegment
                context["priority"] = PythonRepr.formatFloat(unit.priority)
            }
            context["heading"] = heading
            context["effect"] = effect
            context["button"] = button
            return PageContext(context)
        }
        guard var values = page?.values else { throw PageError.notFound("No such work spec.") }
        if values["missingUnit"] != nil { throw PageError.notFound("No such work unit.") }
        values["csrf"] = sessions.issueToken(for: principal)
        return (values["heading"] as? String ?? "", render("confirm", values))
    }

    // MARK: - POST

    /// `POST /ui/…`: login, or one action with a valid session (or bearer token) and CSRF token.
    func post(_ request: RESTRequest) async throws -> Response {
        let rest = (request.parameters["rest"] ?? "").split(separator: "/").map(String.init)
        let action =
            rest.count == 5 && rest[0] == "namespace" && rest[2] == "work_spec" ? Action(rawValue: rest[4]) : nil
        // Pages take no POST; the action routes exist only with a token.
        guard action != nil || rest == ["login"] || rest == ["logout"] else {
            var error = RESTError(.methodNotAllowed, "ErrMethodNotAllowed", "method POST not allowed")
            error.headers = [(.allow, "GET, HEAD")]
            throw error
        }
        guard token != nil else { return notFoundPage("No such page.") }
        if rest == ["login"] { return login(request) }
        if rest == ["logout"] { return logout(request) }
        guard let principal = authenticate(request.request) else {
            return forbidden("You are not logged in, or your session has ended. Log in and try again.")
        }
        guard Self.isForm(request) else { return formRequired() }
        let fields = Self.formFields(request)
        guard let csrf = fields["csrf"], sessions.consumeToken(csrf, for: principal) else {
            return forbidden(
                "This form has expired, was already used, or was not issued to you. Nothing was changed. "
                    + "Go back, reload the page and try again.")
        }
        guard let action else { return notFoundPage("No such page.") }
        do {
            let (ns, specName) = (try Self.name(rest[1]), try Self.name(rest[3]))
            try await perform(action, ns, specName, fields: fields)
            return Self.redirect(to: Self.specLink(ns, specName))
        } catch let error as PageError {
            return errorPage(error)
        }
    }

    /// Applies one action with the same effects as the corresponding CBOR-RPC operation, in one transaction.
    private func perform(
        _ action: Action, _ ns: Identifier, _ specName: Identifier, fields: [String: String]
    )
        async throws
    {
        switch action {
        case .pause, .resume:
            var change = SpecControl()
            change.status = .unsigned(action == .pause ? 2 : 1)
            let control = change
            let outcome = try await engine.perform(.write) { tx in
                try tx.controlWorkSpec(namespace: ns, named: specName, control)
            }
            if outcome == .noSuchSpec { throw PageError.notFound("No such work spec.") }
        case .retryFailed:
            let found = try await engine.perform(.write) { tx -> Bool in
                guard let failed = try tx.queryUnits(namespace: ns, spec: specName, UnitQuery(buckets: [.failed]))
                else { return false }
                for unit in failed {
                    _ = try tx.updateWorkUnit(namespace: ns, spec: specName, key: unit.key, UnitUpdate(status: 1))
                }
                return true
            }
            if !found { throw PageError.notFound("No such work spec.") }
        case .priority:
            guard let segment = fields["unit"], !segment.isEmpty else {
                throw PageError.badRequest("The form has no unit.")
            }
            let key = try Self.name(segment)
            guard let text = fields["priority"], let priority = Double(text.trimmingCharacters(in: .whitespaces)),
                priority.isFinite
            else { throw PageError.badRequest("The priority must be a finite number.") }
            let outcome = try await engine.perform(.write) { tx -> String? in
                guard try tx.spec(namespace: ns, named: specName) != nil else { return "No such work spec." }
                guard try tx.workUnit(namespace: ns, spec: specName, key: key) != nil else {
                    return "No such work unit."
                }
                _ = try tx.changePriorities(
                    namespace: ns, spec: specName, UnitQuery(names: [key]), value: priority, adjust: false)
                return nil
            }
            if let outcome { throw PageError.notFound(outcome) }
        }
    }

    // MARK: - Responses

    static func isForm(_ request: RESTRequest) -> Bool {
        request.request.headers[.contentType].map(MediaTypes.essence) == "application/x-www-form-urlencoded"
    }

    func forbidden(_ message: String) -> Response {
        html(.forbidden, title: "Forbidden", body: render("notFound", ["message": message]), refresh: nil)
    }

    func formRequired() -> Response {
        html(
            .unsupportedMediaType, title: "Unsupported form",
            body: render("notFound", ["message": "Expected an application/x-www-form-urlencoded form."]),
            refresh: nil)
    }

    func notFoundPage(_ message: String) -> Response {
        html(.notFound, title: "Not found", body: render("notFound", ["message": message]), refresh: nil)
    }

    func errorPage(_ error: PageError) -> Response {
        switch error {
        case .notFound(let message): return notFoundPage(message)
        case .badRequest(let message):
            return html(.badRequest, title: "Bad request", body: render("notFound", ["message": message]), refresh: nil)
        }
    }
}
