//! The page of `--report FILE.html`: one self-contained file (inline CSS and SVG; no script, no
//! font, nothing fetched) with the latency by percentile HdrHistogram-style, throughput and
//! latency second by second, and for `ramp` the p99 against subscribers beside the bound.
//! Every string that goes into the page goes through [`escape`].

use crate::stats::timeline::Point;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// What a ramp's step measured, for its plot and table.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// Subscribers of the step.
    pub subscribers: usize,
    /// Deliveries per second over the step.
    pub deliveries_per_sec: f64,
    /// The step's publish-to-receive p99 in microseconds (`None`: nothing was delivered).
    pub p99_us: Option<u64>,
    /// No loss, reordering, slow consumer or connection error.
    pub ok: bool,
    /// Ok, and its p99 within the bound.
    pub within: bool,
}

/// A ramp's steps and its bound.
#[derive(Debug, Clone)]
pub(crate) struct Ramp {
    /// The p99 bound, in microseconds.
    pub slo_us: u64,
    /// The steps run, in order.
    pub steps: Vec<Step>,
    /// The largest step within the bound.
    pub capacity: Option<usize>,
}

/// Everything the page shows.
pub(crate) struct Page<'a> {
    /// The subcommand.
    pub scenario: &'a str,
    /// The gateway, as given with `--url`.
    pub target: &'a str,
    /// The command line of the run (its parameters).
    pub command: &'a str,
    /// When the run ended, in UTC.
    pub date: &'a str,
    /// Whether the run failed.
    pub failed: bool,
    /// The text summary, line by line.
    pub summary: &'a [String],
    /// Latency histograms to draw by percentile, named.
    pub curves: Vec<(String, &'a Histogram<u64>)>,
    /// What the latency is of ("round trip", "handshake", ...).
    pub latency_of: &'a str,
    /// The per-second series.
    pub series: &'a [Point],
    /// What the series counts, per second ("echoes/s", "deliveries/s", ...).
    pub series_unit: &'a str,
    /// A ramp's steps.
    pub ramp: Option<&'a Ramp>,
}

/// `s` with `&`, `<`, `>`, `"` and `'` written as character references: safe as HTML text and
/// inside a quoted attribute.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:820px;\
color:#222;padding:0 12px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}\
.meta{color:#555;margin:2px 0}code{font:12px ui-monospace,monospace;background:#f3f3f3;\
padding:1px 4px;word-break:break-all}pre{background:#f7f7f7;padding:10px;font-size:12px;\
overflow-x:auto}.ok{color:#1a7f37}.failed{color:#c62828}svg{display:block;max-width:100%;\
height:auto;background:#fff;border:1px solid #ddd}table{border-collapse:collapse;font-size:12px;\
margin:8px 0}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}\
.none{color:#777;font-style:italic}";

/// The page.
pub(crate) fn render(p: &Page<'_>) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("loadtest {}: {}, {}", p.scenario, p.target, p.date);
    let caption = Caption {
        line: format!("loadtest {} \u{2192} {}, {}", p.scenario, p.target, p.date),
        command: p.command.to_string(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = write!(
        h,
        "<h1>loadtest {} <span class=\"{}\">{}</span></h1>\n\
         <p class=\"meta\">target <code class=\"target\">{}</code></p>\n\
         <p class=\"meta\">command <code class=\"command\">{}</code></p>\n\
         <p class=\"meta\">date <span class=\"date\">{}</span></p>\n",
        escape(p.scenario),
        if p.failed { "failed" } else { "ok" },
        if p.failed { "FAILED" } else { "ok" },
        escape(p.target),
        escape(p.command),
        escape(p.date)
    );
    let _ = write!(
        h,
        "<h2>Summary</h2>\n<pre class=\"summary\">{}</pre>\n",
        escape(&p.summary.join("\n"))
    );

    h.push_str("<h2>Latency by percentile</h2>\n");
    h.push_str(&or_none(percentile_chart(p, &caption)));
    if let Some(r) = p.ramp {
        h.push_str("<h2>p99 against subscribers</h2>\n");
        h.push_str(&or_none(ramp_chart(r, &caption)));
        h.push_str(&ramp_table(r));
    }
    h.push_str("<h2>Throughput over time</h2>\n");
    h.push_str(&or_none(throughput_chart(p, &caption)));
    h.push_str("<h2>Latency over time</h2>\n");
    h.push_str(&or_none(latency_chart(p, &caption)));
    h.push_str(&series_table(p));
    h.push_str("</body>\n</html>\n");
    h
}

fn or_none(chart: Option<String>) -> String {
    chart.unwrap_or_else(|| "<p class=\"none\">No samples were measured.</p>\n".to_string())
}

/// The lines under each chart's title, so a chart copied alone still says what it shows.
struct Caption {
    line: String,
    command: String,
}

/// Microseconds shown in ms when the largest is 2 ms or more, else in us.
fn latency_unit(max_us: u64) -> (&'static str, f64) {
    if max_us >= 2000 {
        ("ms", 1e-3)
    } else {
        ("us", 1.0)
    }
}

/// The percentile of tick k of the percentile axis: 0%, 90%, 99%, 99.9%, ...
fn percentile_label(k: u32) -> String {
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

fn percentile_chart(p: &Page<'_>, caption: &Caption) -> Option<String> {
    let curves: Vec<_> = p.curves.iter().filter(|(_, h)| !h.is_empty()).collect();
    if curves.is_empty() {
        return None;
    }
    let max_us = curves.iter().map(|(_, h)| h.max()).max().unwrap_or(1);
    let (unit, scale) = latency_unit(max_us);
    // the axis reaches the resolution of the largest histogram: 1 - 1/count
    let decades = curves
        .iter()
        .map(|(_, h)| (h.len() as f64).log10())
        .fold(0.0f64, f64::max)
        .clamp(0.0, 7.0);
    let x_max = decades.ceil().max(1.0);
    let mut lines = Vec::new();
    for (i, (name, h)) in curves.iter().enumerate() {
        let end = (h.len() as f64).log10().clamp(0.0, 7.0);
        let mut points = Vec::new();
        let steps = (end * 50.0).ceil() as u32;
        for s in 0..=steps {
            let x = (f64::from(s) / 50.0).min(end);
            let v = h.value_at_quantile(1.0 - 10f64.powf(-x));
            let tip = (s % 50 == 0 && f64::from(s) / 50.0 <= end).then(|| {
                format!(
                    "{name}: {} at {}",
                    fmt_latency(v),
                    percentile_label((x.round()) as u32)
                )
            });
            points.push(Some(Mark {
                x,
                y: v as f64 * scale,
                tip,
                color: None,
            }));
        }
        points.push(Some(Mark {
            x: end,
            y: h.max() as f64 * scale,
            tip: Some(format!("{name}: max {}", fmt_latency(h.max()))),
            color: None,
        }));
        lines.push(Line {
            name: format!("{name} ({} samples)", h.len()),
            color: PALETTE[i % PALETTE.len()],
            points,
            dashed: false,
        });
    }
    let (y_max, y_ticks) = nice_ticks(max_us as f64 * scale);
    Some(chart(&Chart {
        class: "percentiles",
        title: format!("{} latency by percentile", p.latency_of),
        caption,
        x_label: "percentile (log scale: each tick one more nine)".into(),
        y_label: format!("latency ({unit})"),
        x_range: (0.0, x_max),
        x_ticks: (0..=x_max as u32)
            .map(|k| (f64::from(k), percentile_label(k)))
            .collect(),
        y_range: (0.0, y_max),
        y_ticks,
        lines,
        rules: Vec::new(),
    }))
}

fn throughput_chart(p: &Page<'_>, caption: &Caption) -> Option<String> {
    if p.series.is_empty() {
        return None;
    }
    let x_max = p.series.last().map_or(1.0, |s| s.at + s.covered).max(1.0);
    let max_rate = p.series.iter().map(|s| s.rate).fold(0.0, f64::max);
    let (y_max, y_ticks) = nice_ticks(max_rate);
    let points = p
        .series
        .iter()
        .map(|s| {
            Some(Mark {
                x: s.at + s.covered / 2.0,
                y: s.rate,
                tip: Some(format!(
                    "{:.1} s to {:.1} s: {} ({} {})",
                    s.at,
                    s.at + s.covered,
                    s.count,
                    fmt_num(s.rate),
                    p.series_unit
                )),
                color: None,
            })
        })
        .collect();
    Some(chart(&Chart {
        class: "throughput",
        title: format!("Throughput, {} second by second", p.series_unit),
        caption,
        x_label: "seconds since the first sample".into(),
        y_label: p.series_unit.to_string(),
        x_range: (0.0, x_max),
        x_ticks: time_ticks(x_max),
        y_range: (0.0, y_max),
        y_ticks,
        lines: vec![Line {
            name: p.series_unit.to_string(),
            color: PALETTE[0],
            points,
            dashed: false,
        }],
        rules: Vec::new(),
    }))
}

fn latency_chart(p: &Page<'_>, caption: &Caption) -> Option<String> {
    let max_us = p.series.iter().filter_map(|s| s.p99).max()?;
    let (unit, scale) = latency_unit(max_us);
    let x_max = p.series.last().map_or(1.0, |s| s.at + s.covered).max(1.0);
    let (y_max, y_ticks) = nice_ticks(max_us as f64 * scale);
    let line = |name: &str, color: &'static str, pick: fn(&Point) -> Option<u64>| Line {
        name: name.to_string(),
        color,
        points: p
            .series
            .iter()
            .map(|s| {
                pick(s).map(|v| Mark {
                    x: s.at + s.covered / 2.0,
                    y: v as f64 * scale,
                    tip: Some(format!(
                        "{:.1} s to {:.1} s: {name} {}",
                        s.at,
                        s.at + s.covered,
                        fmt_latency(v)
                    )),
                    color: None,
                })
            })
            .collect(),
        dashed: false,
    };
    Some(chart(&Chart {
        class: "latency-per-second",
        title: format!("{} latency, p50 and p99 second by second", p.latency_of),
        caption,
        x_label: "seconds since the first sample".into(),
        y_label: format!("latency ({unit})"),
        x_range: (0.0, x_max),
        x_ticks: time_ticks(x_max),
        y_range: (0.0, y_max),
        y_ticks,
        lines: vec![
            line("p50", PALETTE[0], |s| s.p50),
            line("p99", PALETTE[1], |s| s.p99),
        ],
        rules: Vec::new(),
    }))
}

fn ramp_chart(r: &Ramp, caption: &Caption) -> Option<String> {
    let last = r.steps.iter().map(|s| s.subscribers).max()?;
    let max_us = r
        .steps
        .iter()
        .filter_map(|s| s.p99_us)
        .max()
        .unwrap_or(0)
        .max(r.slo_us);
    let (unit, scale) = latency_unit(max_us);
    let (y_max, y_ticks) = nice_ticks(max_us as f64 * scale * 1.1);
    let (x_max, x_ticks) = nice_ticks(last as f64 * 1.05);
    let points = r
        .steps
        .iter()
        .map(|s| {
            s.p99_us.map(|v| Mark {
                x: s.subscribers as f64,
                y: v as f64 * scale,
                tip: Some(format!(
                    "{} subscribers: p99 {}, {} deliveries/s{}",
                    s.subscribers,
                    fmt_latency(v),
                    fmt_num(s.deliveries_per_sec),
                    if !s.ok {
                        ", FAILED"
                    } else if s.within {
                        ""
                    } else {
                        ", over the bound"
                    }
                )),
                color: Some(if !s.ok {
                    "#c62828"
                } else if s.within {
                    "#1a7f37"
                } else {
                    "#ef6c00"
                }),
            })
        })
        .collect();
    let mut rules = vec![Rule {
        horizontal: true,
        at: r.slo_us as f64 * scale,
        label: format!("bound: p99 {}", fmt_latency(r.slo_us)),
        color: "#c62828",
    }];
    if let Some(c) = r.capacity {
        rules.push(Rule {
            horizontal: false,
            at: c as f64,
            label: format!("capacity {c}"),
            color: "#1a7f37",
        });
    }
    Some(chart(&Chart {
        class: "ramp",
        title: "Publish-to-receive p99 against subscribers, step by step".into(),
        caption,
        x_label: "subscribers".into(),
        y_label: format!("p99 ({unit})"),
        x_range: (0.0, x_max),
        x_ticks: x_ticks.into_iter().map(|(v, _)| (v, fmt_num(v))).collect(),
        y_range: (0.0, y_max),
        y_ticks,
        lines: vec![Line {
            name: "p99 per step (green within the bound, orange over it, red failed)".into(),
            color: "#555",
            points,
            dashed: false,
        }],
        rules,
    }))
}

fn ramp_table(r: &Ramp) -> String {
    let mut t = String::from(
        "<table class=\"steps\">\n<tr><th>subscribers</th><th>deliveries/s</th><th>p99</th>\
         <th>result</th></tr>\n",
    );
    for s in &r.steps {
        let _ = writeln!(
            t,
            "<tr class=\"step\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.subscribers,
            escape(&fmt_num(s.deliveries_per_sec)),
            escape(&s.p99_us.map_or("none delivered".into(), fmt_latency)),
            escape(if !s.ok {
                "FAILED"
            } else if s.within {
                "within the bound"
            } else {
                "over the bound"
            })
        );
    }
    t.push_str("</table>\n");
    t
}

fn series_table(p: &Page<'_>) -> String {
    if p.series.is_empty() {
        return String::new();
    }
    let mut t = format!(
        "<details>\n<summary>The {} per-second samples</summary>\n<table class=\"seconds\">\n\
         <tr><th>from (s)</th><th>to (s)</th><th>samples</th><th>{}</th><th>p50</th>\
         <th>p99</th></tr>\n",
        p.series.len(),
        escape(p.series_unit)
    );
    for s in p.series {
        let _ = writeln!(
            t,
            "<tr class=\"second\"><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{:.0}</td>\
             <td>{}</td><td>{}</td></tr>",
            s.at,
            s.at + s.covered,
            s.count,
            s.rate,
            escape(&s.p50.map_or("-".into(), fmt_latency)),
            escape(&s.p99.map_or("-".into(), fmt_latency)),
        );
    }
    t.push_str("</table>\n</details>\n");
    t
}

/// A latency in microseconds, in the unit that reads best.
fn fmt_latency(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} us")
    }
}

/// A number for an axis or a tooltip: no needless decimals, k and M past ten thousand.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 10e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 10e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Ticks from 0 to a round number at or above `max`, 4 to 10 of them, with labels.
fn nice_ticks(max: f64) -> (f64, Vec<(f64, String)>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let top = (max / step).ceil() * step;
    let n = (top / step).round() as u32;
    let ticks = (0..=n)
        .map(|k| {
            let v = f64::from(k) * step;
            (v, fmt_num(v))
        })
        .collect();
    (top, ticks)
}

fn time_ticks(max: f64) -> Vec<(f64, String)> {
    let (_, ticks) = nice_ticks(max);
    ticks
        .into_iter()
        .filter(|(v, _)| *v <= max + 1e-9)
        .collect()
}

/// One point of a line: where, its tooltip, its own colour if not the line's.
struct Mark {
    x: f64,
    y: f64,
    tip: Option<String>,
    color: Option<&'static str>,
}

/// A line through points; `None` breaks it.
struct Line {
    name: String,
    color: &'static str,
    points: Vec<Option<Mark>>,
    dashed: bool,
}

/// A labelled straight rule across the plot: a bound, a capacity.
struct Rule {
    horizontal: bool,
    at: f64,
    label: String,
    color: &'static str,
}

struct Chart<'a> {
    class: &'static str,
    title: String,
    caption: &'a Caption,
    x_label: String,
    y_label: String,
    x_range: (f64, f64),
    x_ticks: Vec<(f64, String)>,
    y_range: (f64, f64),
    y_ticks: Vec<(f64, String)>,
    lines: Vec<Line>,
    rules: Vec<Rule>,
}

const W: f64 = 780.0;
const H: f64 = 380.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 36.0;
const TOP: f64 = 78.0;
const BOTTOM: f64 = 50.0;

/// `s` cut to `n` characters, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('\u{2026}');
        c
    }
}

fn chart(c: &Chart<'_>) -> String {
    let (x0, x1) = c.x_range;
    let (y0, y1) = c.y_range;
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0).max(1e-12) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0).max(1e-12) * (H - TOP - BOTTOM);
    let mut s = String::with_capacity(16 * 1024);
    let _ = writeln!(
        s,
        "<svg class=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         font-family=\"system-ui,sans-serif\" font-size=\"11\">",
        c.class
    );
    let _ = writeln!(s, "<title>{}</title>", escape(&c.title));
    let _ = writeln!(
        s,
        "<text x=\"12\" y=\"20\" font-size=\"15\" font-weight=\"600\">{}</text>",
        escape(&c.title)
    );
    let _ = writeln!(
        s,
        "<text x=\"12\" y=\"37\" fill=\"#444\">{}</text>",
        escape(&clip(&c.caption.line, 120))
    );
    let _ = writeln!(
        s,
        "<text x=\"12\" y=\"52\" fill=\"#666\" font-family=\"ui-monospace,monospace\" \
         font-size=\"10\">{}</text>",
        escape(&clip(&c.caption.command, 125))
    );
    // the legend, right to left along the top of the plot
    let mut lx = W - RIGHT;
    for l in c.lines.iter().rev() {
        let w = 7.0 * l.name.chars().count() as f64 * 0.85 + 26.0;
        lx -= w;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"3\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx,
            TOP - 12.0,
            l.color,
            lx + 18.0,
            TOP - 8.0,
            escape(&l.name)
        );
    }
    // grid and axes
    for (v, label) in &c.y_ticks {
        let y = py(*v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(label)
        );
    }
    for (v, label) in &c.x_ticks {
        let x = px(*v);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            H - BOTTOM,
            H - BOTTOM + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        "<path d=\"M{LEFT} {TOP}V{:.1}H{:.1}\" fill=\"none\" stroke=\"#888\"/>",
        H - BOTTOM,
        W - RIGHT
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">{}</text>",
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 12.0,
        escape(&c.x_label)
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\" \
         fill=\"#333\">{}</text>",
        TOP + (H - TOP - BOTTOM) / 2.0,
        escape(&c.y_label)
    );
    for r in &c.rules {
        if r.horizontal {
            let y = py(r.at);
            let _ = writeln!(
                s,
                "<line class=\"rule\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" \
                 stroke=\"{}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" \
                 text-anchor=\"end\" fill=\"{}\">{}</text>",
                W - RIGHT,
                r.color,
                W - RIGHT - 4.0,
                y - 5.0,
                r.color,
                escape(&r.label)
            );
        } else {
            let x = px(r.at);
            let _ = writeln!(
                s,
                "<line class=\"rule\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" \
                 stroke=\"{}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" \
                 fill=\"{}\">{}</text>",
                H - BOTTOM,
                r.color,
                x + 4.0,
                TOP + 12.0,
                r.color,
                escape(&r.label)
            );
        }
    }
    for l in &c.lines {
        // the line, in pieces between the gaps
        for piece in l.points.split(Option::is_none) {
            if piece.is_empty() {
                continue;
            }
            let mut d = String::new();
            for (k, m) in piece.iter().flatten().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if k == 0 { "M" } else { "L" },
                    px(m.x),
                    py(m.y)
                );
            }
            let _ = writeln!(
                s,
                "<path class=\"line\" d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{}>\
                 <title>{}</title></path>",
                l.color,
                if l.dashed {
                    " stroke-dasharray=\"5 3\""
                } else {
                    ""
                },
                escape(&l.name)
            );
        }
        for m in l.points.iter().flatten() {
            if let Some(tip) = &m.tip {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}</title></circle>",
                    px(m.x),
                    py(m.y),
                    m.color.unwrap_or(l.color),
                    escape(tip)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Now in UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// A Unix time in UTC, as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian calendar).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// This process's command line, as a shell would take it back.
pub(crate) fn command_line() -> String {
    let mut args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let mut out = String::from("loadtest");
    args.next();
    for a in args {
        out.push(' ');
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
        if plain {
            out.push_str(&a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("ws://h/echo?a=1&b=<script>\"x\"'y'"),
            "ws://h/echo?a=1&amp;b=&lt;script&gt;&quot;x&quot;&#39;y&#39;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599), "2024-12-31 23:59:59 UTC");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn ticks_are_round() {
        let (top, t) = nice_ticks(87.0);
        assert_eq!(top, 100.0);
        assert_eq!(t.len(), 6);
        assert_eq!(t[1].1, "20");
        let (top, t) = nice_ticks(0.0);
        assert_eq!((top, t.len()), (1.0, 6));
        assert_eq!(nice_ticks(123_456.0).1[1].1, "50k");
        assert_eq!(percentile_label(4), "99.99%");
        assert_eq!(fmt_latency(1234), "1.23 ms");
        assert_eq!(fmt_latency(45_600), "45.6 ms");
        assert_eq!(fmt_latency(10_000_000), "10.00 s");
    }

    fn page<'a>(
        curves: Vec<(String, &'a Histogram<u64>)>,
        series: &'a [Point],
        ramp: Option<&'a Ramp>,
        summary: &'a [String],
    ) -> Page<'a> {
        Page {
            scenario: "echo",
            target: "ws://127.0.0.1:1/echo?a=1&b=<i>",
            command: "loadtest echo --url 'ws://127.0.0.1:1/echo?a=1&b=<i>'",
            date: "2024-12-31 23:59:59 UTC",
            failed: false,
            summary,
            curves,
            latency_of: "round trip",
            series,
            series_unit: "echoes/s",
            ramp,
        }
    }

    #[test]
    fn a_page_is_self_contained_and_escaped() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for v in 1..=10_000u64 {
            h.record(100 + v % 900).expect("in range");
        }
        let series: Vec<Point> = (0..3)
            .map(|k| Point {
                at: f64::from(k),
                covered: 1.0,
                count: 1000,
                rate: 1000.0,
                p50: Some(500),
                p99: Some(990),
            })
            .collect();
        let ramp = Ramp {
            slo_us: 50_000,
            steps: vec![
                Step {
                    subscribers: 100,
                    deliveries_per_sec: 5000.0,
                    p99_us: Some(2000),
                    ok: true,
                    within: true,
                },
                Step {
                    subscribers: 200,
                    deliveries_per_sec: 9000.0,
                    p99_us: Some(70_000),
                    ok: true,
                    within: false,
                },
            ],
            capacity: Some(100),
        };
        let summary = vec!["echo: 1.0s <ok>".to_string()];
        let html = render(&page(
            vec![("run".into(), &h)],
            &series,
            Some(&ramp),
            &summary,
        ));
        assert!(html.starts_with("<!DOCTYPE html>"));
        for bad in [
            "http://", "https://", "src=", "href=", "<script", "<link", "@import", "url(",
        ] {
            assert!(!html.contains(bad), "{bad}");
        }
        assert!(html.contains("ws://127.0.0.1:1/echo?a=1&amp;b=&lt;i&gt;"));
        assert!(!html.contains("<i>"));
        assert!(html.contains("&lt;ok&gt;"));
        assert!(html.contains("<svg class=\"percentiles\""));
        assert!(html.contains("<svg class=\"ramp\""));
        assert!(html.contains("99.99%"));
        assert_eq!(html.matches("<tr class=\"second\">").count(), 3);
        assert_eq!(html.matches("<tr class=\"step\">").count(), 2);
        assert!(html.contains("bound: p99 50.0 ms"));
        assert!(html.contains("capacity 100"));
    }

    #[test]
    fn a_page_without_samples_says_so() {
        let h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let html = render(&page(vec![("run".into(), &h)], &[], None, &[]));
        assert_eq!(html.matches("No samples were measured.").count(), 3);
        assert!(!html.contains("<svg"));
    }
}
