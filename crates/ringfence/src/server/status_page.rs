//! The public status page: `/status` (an index), `/status/{name}` (HTML) and
//! `/status/{name}/feed.atom`, for the workloads whose spec sets `[status_page] public`. No
//! token (users read it), no JavaScript, plain words only (no versions unless the spec says
//! so), every text escaped. A workload that is not public is answered as one that does not
//! exist.

use std::fmt::Write;

use ringfence_core::incident::{self, Incident};
use ringfence_core::{Timestamp, WorkloadState};

use super::prelude::*;

/// Days the page shows at a glance.
const DAYS: u32 = incident::STATUS_PAGE_DAYS;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn title(ws: &WorkloadState) -> String {
    let t = &ws.spec.status_page.title;
    if t.is_empty() { ws.name.clone() } else { t.clone() }
}

fn public(ws: &WorkloadState) -> bool {
    ws.spec.status_page.public && !ws.deleted
}

fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "no public status page here")
}

fn html(body: String) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // A page of text: no script, no frame, nothing loaded from elsewhere.
            (axum::http::header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
        ],
        body,
    )
        .into_response()
}

fn page(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{t}</title><style>body{{font:16px system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}\
.ok{{color:#1a7f37}}.bad{{color:#b3261e}}.days{{display:flex;gap:2px}}.days span{{flex:1;height:2rem;background:#1a7f37}}\
.days span.s1,.days span.s2{{background:#b3261e}}.days span.s3,.days span.s4{{background:#d4a000}}</style></head>\
<body><header><h1>{t}</h1></header><main>{main}</main><footer><p>Times are UTC.</p></footer></body></html>\n",
        t = esc(title)
    )
}

fn when(t: Timestamp) -> String {
    let s = t.to_string();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

fn incident_html(ws: &WorkloadState, i: &Incident) -> String {
    let mut o = String::new();
    let what =
        if ws.spec.status_page.show_versions { format!(" (release {})", esc(&i.release)) } else { String::new() };
    let _ = write!(o, "<article><h3>Incident of {}{what}: {}</h3><ol>", when(i.detected_at), esc(i.state.as_str()));
    // The updates users were sent (each naming the next); the states alone before any.
    if i.updates.is_empty() {
        for t in i.transitions.iter().rev() {
            let _ = write!(
                o,
                "<li><time datetime=\"{}\">{}</time>: <strong>{}</strong> {}</li>",
                t.at,
                when(t.at),
                esc(t.state.as_str()),
                esc(incident::public_words(t.state))
            );
        }
    }
    for u in i.updates.iter().rev() {
        let _ = write!(
            o,
            "<li><time datetime=\"{}\">{}</time>: <strong>{}</strong> {}</li>",
            u.at,
            when(u.at),
            esc(u.state.as_str()),
            esc(&u.users)
        );
    }
    o.push_str("</ol></article>");
    o
}

/// `GET /status`: every public workload and whether it is operational.
pub(super) async fn index(State(sh): St) -> Response {
    let rows = sh.world(|w| {
        let mut o = String::new();
        for ws in w.workloads.values().filter(|ws| public(ws)) {
            let open = ws.incidents.values().any(|i| i.is_open());
            let _ = write!(
                o,
                "<li><a href=\"/status/{}\">{}</a>: <span class=\"{}\">{}</span></li>",
                crate::http::encode_component(&ws.name),
                esc(&title(ws)),
                if open { "bad" } else { "ok" },
                if open { "incident in progress" } else { "operational" }
            );
        }
        o
    });
    let main = if rows.is_empty() {
        "<p>No service publishes its status here.</p>".to_string()
    } else {
        format!("<h2>Services</h2><ul>{rows}</ul>")
    };
    html(page("Status", &main))
}

/// `GET /status/{name}`: current status, open incidents with their updates, the last 90 days.
pub(super) async fn workload_page(State(sh): St, Path(name): Path<String>) -> Result<Response, ApiError> {
    let now = now();
    let body = sh.world(|w| {
        let ws = w.workload(&name).filter(|ws| public(ws)).ok_or_else(not_found)?;
        let mut open: Vec<&Incident> = ws.incidents.values().map(|i| &**i).filter(|i| i.is_open()).collect();
        open.sort_by_key(|i| std::cmp::Reverse(i.detected_at));
        let mut main = String::new();
        let _ = write!(
            main,
            "<section aria-labelledby=\"now\"><h2 id=\"now\">Now</h2><p class=\"{}\">{}</p></section>",
            if open.is_empty() { "ok" } else { "bad" },
            if open.is_empty() { "All systems operational." } else { "An incident is in progress." }
        );
        if !open.is_empty() {
            main.push_str("<section aria-labelledby=\"open\"><h2 id=\"open\">Open incidents</h2>");
            for i in &open {
                main.push_str(&incident_html(ws, i));
            }
            main.push_str("</section>");
        }
        let days = incident::by_day(ws, now, DAYS);
        let clear = days.iter().filter(|d| d.is_none()).count();
        let _ = write!(
            main,
            "<section aria-labelledby=\"days\"><h2 id=\"days\">The last {DAYS} days</h2><p>{clear} of {DAYS} days without an incident.</p><div class=\"days\" role=\"img\" aria-label=\"{clear} of {DAYS} days without an incident\">"
        );
        for d in &days {
            match d {
                Some(s) => {
                    let _ = write!(main, "<span class=\"s{s}\" title=\"incident\"></span>");
                }
                None => main.push_str("<span></span>"),
            }
        }
        main.push_str("</div></section>");
        let mut past: Vec<&Incident> = ws.incidents.values().map(|i| &**i).filter(|i| !i.is_open()).collect();
        past.sort_by_key(|i| std::cmp::Reverse(i.detected_at));
        if !past.is_empty() {
            main.push_str("<section aria-labelledby=\"past\"><h2 id=\"past\">Past incidents</h2>");
            for i in past.iter().take(20) {
                main.push_str(&incident_html(ws, i));
            }
            main.push_str("</section>");
        }
        let _ = write!(
            main,
            "<p><a href=\"/status/{}/feed.atom\">Subscribe (Atom feed)</a></p>",
            crate::http::encode_component(&ws.name)
        );
        Ok::<_, ApiError>(page(&title(ws), &main))
    })?;
    Ok(html(body))
}

/// `GET /status/{name}/feed.atom`: every update, newest first.
pub(super) async fn feed(State(sh): St, Path(name): Path<String>) -> Result<Response, ApiError> {
    let body = sh.world(|w| {
        let ws = w.workload(&name).filter(|ws| public(ws)).ok_or_else(not_found)?;
        let mut updates: Vec<(&Incident, &incident::Update)> =
            ws.incidents.values().map(|i| &**i).flat_map(|i| i.updates.iter().map(move |u| (i, u))).collect();
        updates.sort_by_key(|(_, t)| std::cmp::Reverse(t.at));
        let updated = updates.first().map_or(Timestamp(0), |(_, t)| t.at);
        let mut o = String::new();
        let _ = write!(
            o,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>{} status</title><id>urn:ringfence:status:{}</id><updated>{}</updated>",
            esc(&title(ws)),
            esc(&ws.name),
            updated
        );
        for (i, t) in updates.iter().take(100) {
            let _ = write!(
                o,
                "<entry><title>{}: {}</title><id>urn:ringfence:status:{}:{}:{}</id><updated>{}</updated><content type=\"text\">{}</content></entry>",
                esc(&title(ws)),
                esc(t.state.as_str()),
                esc(&ws.name),
                esc(&i.id),
                t.at.millis(),
                t.at,
                esc(&t.users)
            );
        }
        o.push_str("</feed>\n");
        Ok::<_, ApiError>(o)
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")], body).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_escaped() {
        assert_eq!(
            super::esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn states_in_plain_words() {
        use ringfence_core::incident::{IncidentState, public_words};
        for s in [
            IncidentState::Investigating,
            IncidentState::Identified,
            IncidentState::Monitoring,
            IncidentState::Resolved,
        ] {
            assert!(!public_words(s).contains("rollout") && !public_words(s).contains("version"));
        }
    }
}
