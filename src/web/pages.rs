//! The HTML pages: what each shows, read from the store through
//! `store::fleet` and `store::metrics`, made into view rows of cleaned,
//! formatted text, and rendered by the askama templates under
//! `src/web/templates/` (which escape every value; the only raw HTML is
//! the plots' SVG, which holds numbers and fixed labels, never client
//! text).

use super::http::{percent_encode, Target};
use super::plot;
use super::routers::RouterSample;
use super::text::{self, ago, clean, first_line};
use crate::status::snapshot::{ClientRow, NotificationRow, PluginRow};
use crate::store::fleet::{self, NotificationDetail, Summary};
use crate::store::metrics;
use crate::store::{DbError, Tx};
use askama::Template;

/// Longest plugin output shown, in characters.
const OUTPUT_MAX: usize = 2_000;
/// Longest host, plugin or metric name shown.
const NAME_MAX: usize = 200;
/// Problems and down hosts per page on the overview.
pub const OVERVIEW_ROWS: usize = 50;
/// State changes kept per plugin in its strip.
const STRIP: usize = 20;
/// Plots per host page.
const PLOTS_PER_PAGE: usize = 12;
/// Points per plot, at most.
const PLOT_POINTS: usize = 720;
/// The windows a host page can plot.
pub const RANGES: &[(&str, f64)] = &[("1h", 3_600.0), ("6h", 21_600.0), ("24h", 86_400.0)];

/// What every page needs from the request and the server.
pub struct Context<'a> {
    pub now: f64,
    pub grace: f64,
    pub refresh: u64,
    pub page_size: usize,
    pub db: &'a str,
    pub target: &'a Target,
}

impl Context<'_> {
    fn layout(&self, title: impl Into<String>) -> Layout {
        Layout {
            title: clean(&title.into(), false, NAME_MAX),
            refresh: self.refresh,
            generated: text::utc(self.now),
            db: self.db.to_string(),
            search: clean(self.target.param("q").unwrap_or(""), false, NAME_MAX),
        }
    }
}

pub struct Layout {
    pub title: String,
    pub refresh: u64,
    pub generated: String,
    pub db: String,
    pub search: String,
}

pub struct HostView {
    pub uuid: String,
    pub link: String,
    pub name: String,
    pub state: String,
    pub last_heartbeat: String,
    pub last_heartbeat_utc: String,
    pub last_seen: String,
    pub router: String,
    pub interval: String,
}

impl HostView {
    fn new(c: &ClientRow, now: f64) -> HostView {
        HostView {
            uuid: clean(&c.uuid, false, NAME_MAX),
            link: percent_encode(&c.uuid),
            name: host_name(c.hostname.as_deref(), &c.uuid),
            state: c.state.clone(),
            last_heartbeat: ago(now, c.last_heartbeat),
            last_heartbeat_utc: c.last_heartbeat.map(text::utc).unwrap_or_default(),
            last_seen: ago(now, Some(c.last_seen)),
            router: clean(c.last_router.as_deref().unwrap_or("-"), false, NAME_MAX),
            interval: c.heartbeat_interval_s.map_or("-".into(), text::duration),
        }
    }
}

pub struct CheckView {
    pub host_link: String,
    pub host_name: String,
    pub plugin: String,
    pub state: String,
    pub output: String,
    pub since: String,
    pub last: String,
}

impl CheckView {
    fn new(p: &PluginRow, now: f64) -> CheckView {
        CheckView {
            host_link: percent_encode(&p.uuid),
            host_name: host_name(p.hostname.as_deref(), &p.uuid),
            plugin: clean(&p.plugin, false, NAME_MAX),
            state: p.state.clone(),
            output: clean(p.output.as_deref().unwrap_or(""), true, OUTPUT_MAX),
            since: ago(now, p.changed_at),
            last: ago(now, p.ts),
        }
    }
}

pub struct NoteView {
    pub when: String,
    pub when_utc: String,
    pub host_link: Option<String>,
    pub host_name: String,
    pub severity: String,
    pub severity_class: &'static str,
    pub origin: String,
    pub source: String,
    pub message: String,
    pub state: String,
    pub state_class: &'static str,
    pub attempts: i64,
    pub handlers_done: String,
    pub last_error: String,
}

impl NoteView {
    fn new(n: &NotificationRow, now: f64) -> NoteView {
        NoteView {
            when: ago(now, Some(n.created_at)),
            when_utc: text::utc(n.created_at),
            host_link: n.uuid.as_deref().map(percent_encode),
            host_name: host_name(n.hostname.as_deref(), n.uuid.as_deref().unwrap_or("-")),
            severity: clean(&n.severity, false, 40),
            severity_class: severity_class(&n.severity),
            origin: clean(&n.origin, false, 40),
            source: clean(n.source.as_deref().unwrap_or(""), false, NAME_MAX),
            message: clean(n.message.as_deref().unwrap_or(""), true, OUTPUT_MAX),
            state: clean(&n.state, false, 40),
            state_class: match n.state.as_str() {
                "handled" => "handled",
                "failed" => "failed",
                _ => "pending",
            },
            attempts: n.attempts,
            handlers_done: String::new(),
            last_error: String::new(),
        }
    }

    fn detailed(d: &NotificationDetail, now: f64) -> NoteView {
        let mut v = NoteView::new(&d.row, now);
        v.handlers_done = clean(&d.handlers_done.join(", "), false, NAME_MAX);
        v.last_error = d
            .last_error
            .as_deref()
            .map(|e| first_line(e, 300))
            .unwrap_or_default();
        v
    }
}

/// A fixed class for a severity (client text never becomes a class).
fn severity_class(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "warning" => "warning",
        "info" => "info",
        _ => "unknown",
    }
}

fn host_name(hostname: Option<&str>, uuid: &str) -> String {
    let name = hostname.filter(|h| !h.trim().is_empty()).unwrap_or(uuid);
    clean(name, false, NAME_MAX)
}

/// Previous/next links of a list.
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub total: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `link(n)` is the URL of page n.
    fn new(page: usize, per_page: usize, total: i64, link: impl Fn(usize) -> String) -> Pager {
        let pages = (total.max(0) as usize).div_ceil(per_page).max(1);
        Pager {
            page,
            pages,
            total,
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
        }
    }
}

/// Page `n`'s offset, for `per_page` rows.
fn offset(page: usize, per_page: usize) -> usize {
    (page - 1).saturating_mul(per_page)
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct Overview {
    pub layout: Layout,
    pub s: Summary,
    pub down: Vec<HostView>,
    pub down_pager: Pager,
    pub problems: Vec<CheckView>,
    pub problems_pager: Pager,
    pub unhandled: Vec<NoteView>,
}

pub fn overview(cx: &Context, conn: &Tx) -> crate::store::Result<Overview> {
    let s = fleet::summary(conn, cx.now, cx.grace)?;
    let down_page = cx.target.page("down");
    let problem_page = cx.target.page("problems");
    let down = fleet::down_hosts(
        conn,
        cx.now,
        cx.grace,
        OVERVIEW_ROWS,
        offset(down_page, OVERVIEW_ROWS),
    )?;
    let problems = fleet::problem_checks(conn, OVERVIEW_ROWS, offset(problem_page, OVERVIEW_ROWS))?;
    let unhandled = fleet::unhandled_notifications(conn, OVERVIEW_ROWS)?;
    Ok(Overview {
        layout: cx.layout("overview"),
        down_pager: Pager::new(down_page, OVERVIEW_ROWS, s.hosts_down, |n| {
            format!("/?down={n}&problems={problem_page}")
        }),
        problems_pager: Pager::new(
            problem_page,
            OVERVIEW_ROWS,
            s.checks_critical + s.checks_warning + s.checks_unknown,
            |n| format!("/?down={down_page}&problems={n}"),
        ),
        s,
        down: down.iter().map(|c| HostView::new(c, cx.now)).collect(),
        problems: problems.iter().map(|p| CheckView::new(p, cx.now)).collect(),
        unhandled: unhandled.iter().map(|n| NoteView::new(n, cx.now)).collect(),
    })
}

#[derive(Template)]
#[template(path = "hosts.html")]
pub struct Hosts {
    pub layout: Layout,
    pub hosts: Vec<HostView>,
    pub pager: Pager,
}

pub fn hosts(cx: &Context, conn: &Tx) -> crate::store::Result<Hosts> {
    let search = cx
        .target
        .param("q")
        .map(str::trim)
        .filter(|q| !q.is_empty());
    let page = cx.target.page("page");
    let (rows, total) = fleet::hosts(
        conn,
        cx.now,
        cx.grace,
        search,
        cx.page_size,
        offset(page, cx.page_size),
    )?;
    let q = percent_encode(search.unwrap_or(""));
    Ok(Hosts {
        layout: cx.layout("hosts"),
        hosts: rows.iter().map(|c| HostView::new(c, cx.now)).collect(),
        pager: Pager::new(page, cx.page_size, total, |n| {
            format!("/hosts?q={q}&page={n}")
        }),
    })
}

pub struct StripItem {
    pub class: &'static str,
    pub title: String,
}

pub struct PluginView {
    pub check: CheckView,
    pub strip: Vec<StripItem>,
}

pub struct PlotView {
    pub name: String,
    pub api: String,
    pub svg: String,
}

#[derive(Template)]
#[template(path = "host.html")]
pub struct Host {
    pub layout: Layout,
    pub host: HostView,
    pub plugins: Vec<PluginView>,
    pub notifications: Vec<NoteView>,
    pub plots: Vec<PlotView>,
    pub plots_pager: Pager,
    pub range_label: &'static str,
    pub ranges: Vec<&'static str>,
}

/// The window `?range=` asks for (1h by default).
pub fn range(target: &Target) -> (&'static str, f64) {
    let asked = target.param("range").unwrap_or("1h");
    RANGES
        .iter()
        .copied()
        .find(|(n, _)| *n == asked)
        .unwrap_or(RANGES[0])
}

/// One host's page; `None` when the store does not know it.
pub fn host(cx: &Context, conn: &Tx, uuid: &str) -> Result<Option<Host>, String> {
    let db = |e: DbError| e.to_string();
    let Some(client) = fleet::host(conn, cx.now, cx.grace, uuid).map_err(db)? else {
        return Ok(None);
    };
    let changes = fleet::host_notifications(conn, uuid, Some("result"), 500).map_err(db)?;
    let plugins = fleet::host_plugins(conn, uuid)
        .map_err(db)?
        .iter()
        .map(|p| {
            // Oldest first, so the strip reads left to right.
            let mut strip: Vec<StripItem> = changes
                .iter()
                .filter(|n| n.source.as_deref() == Some(p.plugin.as_str()))
                .take(STRIP)
                .map(|n| StripItem {
                    class: severity_class(&n.severity),
                    title: format!(
                        "{}: {}",
                        text::utc(n.created_at),
                        first_line(n.message.as_deref().unwrap_or(""), 200)
                    ),
                })
                .collect();
            strip.reverse();
            PluginView {
                check: CheckView::new(p, cx.now),
                strip,
            }
        })
        .collect();
    let notifications = fleet::host_notifications(conn, uuid, None, 20)
        .map_err(db)?
        .iter()
        .map(|n| NoteView::new(n, cx.now))
        .collect();
    let (range_label, window) = range(cx.target);
    let since = cx.now - window;
    let names = metrics::names(conn, uuid, since).map_err(db)?;
    let page = cx.target.page("plots");
    let link = percent_encode(uuid);
    let mut plots = Vec::new();
    for name in names
        .iter()
        .skip(offset(page, PLOTS_PER_PAGE))
        .take(PLOTS_PER_PAGE)
    {
        let points = metrics::series(conn, uuid, name, since, PLOT_POINTS).map_err(db)?;
        plots.push(PlotView {
            name: clean(name, false, NAME_MAX),
            api: format!(
                "/api/hosts/{link}/metrics?name={}&range={range_label}",
                percent_encode(name)
            ),
            svg: plot::svg(name, &points, since, cx.now)?,
        });
    }
    Ok(Some(Host {
        layout: cx.layout(host_name(client.hostname.as_deref(), &client.uuid)),
        plots_pager: Pager::new(page, PLOTS_PER_PAGE, names.len() as i64, |n| {
            format!("/hosts/{link}?range={range_label}&plots={n}")
        }),
        host: HostView::new(&client, cx.now),
        plugins,
        notifications,
        plots,
        range_label,
        ranges: RANGES.iter().map(|(n, _)| *n).collect(),
    }))
}

#[derive(Template)]
#[template(path = "notifications.html")]
pub struct Notifications {
    pub layout: Layout,
    pub notes: Vec<NoteView>,
    pub pager: Pager,
}

pub fn notifications(cx: &Context, conn: &Tx) -> crate::store::Result<Notifications> {
    let page = cx.target.page("page");
    let (rows, total) = fleet::notifications(conn, cx.page_size, offset(page, cx.page_size))?;
    Ok(Notifications {
        layout: cx.layout("notifications"),
        notes: rows.iter().map(|n| NoteView::detailed(n, cx.now)).collect(),
        pager: Pager::new(page, cx.page_size, total, |n| {
            format!("/notifications?page={n}")
        }),
    })
}

pub struct TypeView {
    pub name: String,
    pub forwarded: String,
    pub rate: String,
    pub queued: String,
}

pub struct RouterView {
    pub endpoint: String,
    pub name: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub error: Option<String>,
    pub uptime: String,
    pub clients: String,
    pub counters: Vec<(String, String)>,
    pub types: Vec<TypeView>,
}

#[derive(Template)]
#[template(path = "routers.html")]
pub struct Routers {
    pub layout: Layout,
    pub asked: String,
    pub window: String,
    pub routers: Vec<RouterView>,
}

pub fn routers(cx: &Context, sample: &RouterSample) -> Routers {
    let num = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.to_string(),
        _ => "-".to_string(),
    };
    let routers = sample
        .rows
        .iter()
        .map(|r| {
            let status = r
                .status
                .as_ref()
                .filter(|_| r.reachable && r.error.is_none());
            let rates = sample
                .rates
                .iter()
                .find(|(e, _)| *e == r.endpoint)
                .map(|(_, m)| m);
            let mut types = Vec::new();
            if let Some(by_type) = status.and_then(|s| s["forwarded_by_type"].as_object()) {
                for (name, count) in by_type {
                    types.push(TypeView {
                        name: clean(name, false, 64),
                        forwarded: num(count),
                        rate: rates
                            .and_then(|m| m.get(name))
                            .map_or("-".into(), |r| format!("{r:.1}")),
                        queued: status.map_or("-".into(), |s| num(&s["queue_depth"][name])),
                    });
                }
            }
            RouterView {
                endpoint: clean(&r.endpoint, false, NAME_MAX),
                name: clean(
                    status
                        .and_then(|s| s["router"].as_str())
                        .unwrap_or("(no answer)"),
                    false,
                    NAME_MAX,
                ),
                state: if status.is_some() {
                    "up"
                } else {
                    "unreachable"
                },
                state_class: if status.is_some() { "up" } else { "down" },
                error: r.error.as_deref().map(|e| first_line(e, 300)),
                uptime: status
                    .and_then(|s| s["uptime_s"].as_u64())
                    .map_or("-".into(), |u| text::duration(u as f64)),
                clients: status.map_or("-".into(), |s| num(&s["clients"])),
                counters: status
                    .and_then(|s| s["counters"].as_object())
                    .map(|c| {
                        c.iter()
                            .map(|(k, v)| (clean(k, false, 64), num(v)))
                            .collect()
                    })
                    .unwrap_or_default(),
                types,
            }
        })
        .collect();
    Routers {
        layout: cx.layout("routers"),
        asked: if sample.at > 0.0 {
            ago(cx.now, Some(sample.at))
        } else {
            "not yet".into()
        },
        window: sample.window.map_or("-".into(), text::duration),
        routers,
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub heading: String,
    pub detail: String,
}

pub fn error(cx: &Context, heading: &str, detail: &str) -> ErrorPage {
    ErrorPage {
        layout: cx.layout(heading),
        heading: heading.to_string(),
        detail: clean(detail, false, 1_000),
    }
}
