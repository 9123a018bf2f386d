/// The dashboard's Mustache templates. `{{x}}` HTML-escapes; `{{{body}}}` is only ever another rendered
/// template.
enum DashboardTemplates {
    static let all: [String: String] = [
        "layout": layout, "home": home, "namespace": namespace, "spec": spec, "unit": unit, "worker": worker,
        "notFound": notFound, "login": login, "confirm": confirm,
    ]

    static let layout = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        {{#refresh}}<meta http-equiv="refresh" content="{{refresh}}">{{/refresh}}
        <title>{{title}} · Coordinate</title>
        <style>
        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
        header { background: #23304a; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
        header a { color: #fff; text-decoration: none; font-weight: 600; }
        header .meta { margin-left: auto; font-size: 12px; opacity: .8; }
        main { padding: 16px 24px 48px; max-width: 1400px; }
        h1 { font-size: 20px; margin: 8px 0 16px; }
        h2 { font-size: 16px; margin: 28px 0 8px; }
        table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
        th, td { padding: 5px 12px; border-bottom: 1px solid #e6e8ec; text-align: left; white-space: nowrap; }
        th { background: #eef0f4; font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        tr.total td { font-weight: 600; background: #fafbfc; }
        td.alert { color: #b42318; font-weight: 600; }
        .paused { color: #b54708; font-weight: 600; }
        .failure { background: #fff; border-left: 3px solid #d92d20; margin: 8px 0; padding: 8px 12px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
        pre { background: #fff; padding: 10px 12px; overflow: auto; max-height: 420px; box-shadow: 0 1px 2px rgba(0,0,0,.08); margin: 6px 0; }
        pre.traceback { background: #fff5f4; color: #7a271a; font-size: 12px; }
        .filters a { margin-right: 10px; }
        .filters a.current { font-weight: 700; text-decoration: none; color: #1d2330; }
        dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; background: #fff; padding: 10px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.08); width: max-content; }
        dt { font-weight: 600; } dd { margin: 0; }
        .muted { color: #667085; }
        form.logout { display: inline; } form.logout button { font: inherit; padding: 0 6px; }
        </style>
        </head>
        <body>
        <header><a href="/ui">Coordinate</a><span class="meta">{{now}} · version {{version}} · <a href="?refresh=5">refresh every 5 s</a>{{#logout}} · <form class="logout" method="post" action="/ui/logout"><input type="hidden" name="csrf" value="{{logout}}"><button type="submit">Log out</button></form>{{/logout}}</span></header>
        <main>
        {{{body}}}
        </main>
        </body>
        </html>

        """

    static let home = """
        <h1>Namespaces</h1>
        {{#empty}}<p class="muted">No namespaces yet.</p>{{/empty}}
        <ul>
        {{#namespaces}}<li data-namespace="{{name}}"><a href="{{link}}">{{label}}</a></li>
        {{/namespaces}}
        </ul>

        """

    static let counts = """
        {{#cells}}<td class="num{{#alert}} alert{{/alert}}" data-status="{{status}}">{{count}}</td>{{/cells}}
        """

    static let namespace = """
        <h1>Namespace {{label}}</h1>
        <h2>Work specs</h2>
        <table>
        <thead><tr><th>Work spec</th><th class="num">Available</th><th class="num">Delayed</th><th class="num">Pending</th><th class="num">Finished</th><th class="num">Failed</th><th class="num">Archived</th><th>State</th><th class="num">Done / min</th></tr></thead>
        <tbody>
        {{#specs}}<tr data-spec="{{name}}"><td><a href="{{link}}">{{name}}</a></td>\(counts)<td data-field="state"{{#paused}} class="paused"{{/paused}}>{{state}}</td><td class="num">{{rate}}</td></tr>
        {{/specs}}<tr data-spec="" class="total"><td>Total</td>{{#totals}}<td class="num{{#alert}} alert{{/alert}}" data-status="{{status}}">{{count}}</td>{{/totals}}<td></td><td></td></tr>
        </tbody>
        </table>
        <h2>Live workers</h2>
        {{#noWorkers}}<p class="muted">No live workers.</p>{{/noWorkers}}
        {{^noWorkers}}<table>
        <thead><tr><th>Worker</th><th>Mode</th><th>Parent</th><th class="num">Last heartbeat (s ago)</th><th>Expires</th><th class="num">Units held</th></tr></thead>
        <tbody>
        {{#workers}}<tr data-worker="{{id}}"><td><a href="{{link}}">{{id}}</a></td><td>{{mode}}</td><td>{{parent}}</td><td class="num">{{heard}}</td><td>{{expires}}</td><td class="num">{{held}}</td></tr>
        {{/workers}}
        </tbody>
        </table>{{/noWorkers}}
        <h2>Recent failures</h2>
        {{^failures}}<p class="muted">No failed units.</p>{{/failures}}
        {{#failures}}<div class="failure" data-spec="{{spec}}" data-unit="{{unit}}"><a href="{{link}}">{{spec}} / {{key}}</a> <span class="muted">by {{worker}} at {{completed}}</span><pre class="traceback">{{traceback}}</pre></div>
        {{/failures}}

        """

    static let spec = """
        <p><a href="{{nsLink}}">← namespace {{namespace}}</a></p>
        <h1>Work spec {{spec}}</h1>
        <table>
        <thead><tr><th class="num">Available</th><th class="num">Delayed</th><th class="num">Pending</th><th class="num">Finished</th><th class="num">Failed</th><th class="num">Archived</th></tr></thead>
        <tbody><tr data-spec="{{spec}}">\(counts)</tr></tbody>
        </table>
        {{#actions}}<h2>Actions</h2>
        <p class="actions">{{#paused}}<a href="{{link}}/resume" data-action="resume">Resume</a>{{/paused}}{{^paused}}<a href="{{link}}/pause" data-action="pause">Pause</a>{{/paused}} · <a href="{{link}}/retry_failed" data-action="retry_failed">Retry failed units ({{failed}})</a></p>{{/actions}}
        <h2>Control</h2>
        <dl>{{#control}}<dt>{{field}}</dt><dd data-field="{{field}}">{{value}}</dd>{{/control}}</dl>
        <h2>Work units</h2>
        <p class="filters">Status: {{#filters}}<a href="{{link}}"{{#current}} class="current"{{/current}}>{{status}}</a>{{/filters}}</p>
        {{#noUnits}}<p class="muted">No units.</p>{{/noUnits}}
        {{^noUnits}}<table>
        <thead><tr><th>Key</th><th>Status</th><th class="num">Priority</th><th>Worker</th><th>Expires / completed</th></tr></thead>
        <tbody>
        {{#units}}<tr data-unit="{{name}}"><td><a href="{{link}}">{{key}}</a></td><td data-field="status">{{status}}</td><td class="num">{{priority}}{{#priorityLink}} <a href="{{priorityLink}}" data-action="priority">change</a>{{/priorityLink}}</td><td>{{worker}}</td><td>{{expiration}}</td></tr>
        {{/units}}
        </tbody>
        </table>{{/noUnits}}
        {{#next}}<p><a href="{{next}}">next page →</a></p>{{/next}}
        <h2>Recent failures</h2>
        {{^failures}}<p class="muted">No failed units.</p>{{/failures}}
        {{#failures}}<div class="failure" data-spec="{{spec}}" data-unit="{{unit}}"><a href="{{link}}">{{key}}</a> <span class="muted">by {{worker}} at {{completed}}</span><pre class="traceback">{{traceback}}</pre></div>
        {{/failures}}
        <h2>Data</h2>
        <pre>{{data}}</pre>

        """

    static let unit = """
        <p><a href="{{nsLink}}">← namespace {{namespace}}</a> · <a href="{{specLink}}">work spec {{spec}}</a></p>
        <h1>Work unit {{key}}</h1>
        <dl><dt>status</dt><dd data-field="status">{{status}}</dd><dt>priority</dt><dd>{{priority}}</dd><dt>not before</dt><dd>{{notBefore}}</dd></dl>
        {{#traceback}}<h2>Traceback</h2><pre class="traceback">{{traceback}}</pre>{{/traceback}}
        <h2>Attempts (newest first)</h2>
        {{#noAttempts}}<p class="muted">No attempts yet.</p>{{/noAttempts}}
        {{^noAttempts}}<table>
        <thead><tr><th class="num">Id</th><th>Worker</th><th>Status</th><th>Started</th><th>Lease until</th><th>Ended</th></tr></thead>
        <tbody>
        {{#attempts}}<tr data-attempt="{{id}}"><td class="num">{{id}}</td><td><a href="{{workerLink}}">{{worker}}</a></td><td>{{status}}</td><td>{{start}}</td><td>{{expiration}}</td><td>{{end}}</td></tr>
        {{/attempts}}
        </tbody>
        </table>{{/noAttempts}}
        <h2>Data</h2>
        <pre>{{data}}</pre>

        """

    static let worker = """
        <p><a href="{{nsLink}}">← namespace {{namespace}}</a></p>
        <h1>Worker {{worker}}</h1>
        <dl><dt>live</dt><dd>{{#live}}yes{{/live}}{{^live}}no{{/live}}</dd><dt>mode</dt><dd>{{mode}}</dd>
        <dt>parent</dt><dd>{{#parentLink}}<a href="{{parentLink}}">{{parent}}</a>{{/parentLink}}</dd>
        <dt>first seen</dt><dd>{{firstSeen}}</dd><dt>last heartbeat</dt><dd>{{heard}}</dd><dt>expires</dt><dd>{{expires}}</dd></dl>
        {{#children.0}}<h2>Children</h2>{{/children.0}}
        <ul>{{#children}}<li data-worker="{{id}}"><a href="{{link}}">{{id}}</a></li>{{/children}}</ul>
        <h2>Units held</h2>
        {{#noUnits}}<p class="muted">None.</p>{{/noUnits}}
        {{^noUnits}}<table><thead><tr><th>Work spec</th><th>Key</th><th>Lease until</th></tr></thead><tbody>
        {{#units}}<tr><td>{{spec}}</td><td><a href="{{link}}">{{key}}</a></td><td>{{expires}}</td></tr>
        {{/units}}</tbody></table>{{/noUnits}}
        <h2>Heartbeat data</h2>
        <pre>{{data}}</pre>

        """

    static let login = """
        <h1>Log in</h1>
        {{#error}}<p class="alert">{{error}}</p>{{/error}}
        <form method="post" action="/ui/login">
        <label>Token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
        <button type="submit">Log in</button>
        </form>

        """

    /// A confirmation page: what will change, and the form that does it (rest-api.md §8.1).
    static let confirm = """
        <p><a href="{{nsLink}}">← namespace {{namespace}}</a> · <a href="{{specLink}}">work spec {{spec}}</a></p>
        <h1>{{heading}}</h1>
        <p data-field="effect">{{effect}}</p>
        <form method="post" action="{{specLink}}/{{action}}">
        <input type="hidden" name="csrf" value="{{csrf}}">
        {{#unit}}<input type="hidden" name="unit" value="{{unit}}">
        <p><label>New priority <input type="number" step="any" name="priority" value="{{priority}}" required></label></p>{{/unit}}
        <button type="submit">{{button}}</button> <a href="{{specLink}}">Cancel</a>
        </form>

        """

    static let notFound = """
        <h1>{{message}}</h1>
        <p><a href="/ui">Back to the namespaces</a></p>

        """
}
