//! A metric series as an SVG line plot, drawn on the server with
//! `plotters`: time (UTC) along the bottom, the value and its unit up the
//! side, so the page needs no script to show a graph.

use super::text;
use plotters::prelude::*;

pub const WIDTH: u32 = 560;
pub const HEIGHT: u32 = 220;

/// The unit a metric's name suggests: statsd timers are milliseconds,
/// names ending in a unit say so; anything else is a plain value.
pub fn unit(name: &str) -> &'static str {
    let last = name
        .rsplit(['.', '_'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    match last.as_str() {
        "ms" | "mean" | "p90" | "min" | "max" | "latency" => "ms",
        "s" | "secs" | "seconds" | "uptime" => "s",
        "bytes" | "b" => "bytes",
        "pct" | "percent" | "pc" => "%",
        "count" | "total" | "received" | "sent" | "forwarded" => "count",
        _ => "value",
    }
}

/// The plot of `points` (Unix seconds, value) from `start` to `end`. An
/// empty series gives a plot with its axes and "no samples".
pub fn svg(name: &str, points: &[(f64, f64)], start: f64, end: f64) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
                (lo.min(*v), hi.max(*v))
            });
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(1e-9);
            (
                if lo >= 0.0 {
                    (lo - pad).max(0.0)
                } else {
                    lo - pad
                },
                hi + pad,
            )
        } else {
            (0.0, 1.0)
        };
        let end = end.max(start + 1.0);
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(64)
            .build_cartesian_2d(start..end, lo..hi)
            .map_err(|e| e.to_string())?;
        let unit = unit(name);
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(5)
            .x_label_formatter(&|t| text::hh_mm(*t))
            .y_label_formatter(&|v| short_number(*v))
            .x_desc("time (UTC)")
            .y_desc(unit)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        if points.is_empty() {
            let style =
                TextStyle::from(("sans-serif", 14).into_font()).color(&RGBColor(120, 120, 120));
            root.draw_text(
                "no samples in this window",
                &style,
                (WIDTH as i32 / 2 - 80, HEIGHT as i32 / 2),
            )
            .map_err(|e| e.to_string())?;
        } else {
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    RGBColor(31, 119, 180).stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
            if points.len() == 1 {
                chart
                    .draw_series(
                        points
                            .iter()
                            .map(|p| Circle::new(*p, 3, RGBColor(31, 119, 180).filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `1.5k`, `12M`, `0.25`: labels that fit the axis.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 1.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.3}")
    };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_axes_and_a_line() {
        let points: Vec<(f64, f64)> = (0..60)
            .map(|i| (1_764_625_200.0 + i as f64 * 60.0, i as f64))
            .collect();
        let svg = svg("load.1m", &points, 1_764_625_200.0, 1_764_628_800.0).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("time (UTC)"));
        assert!(
            svg.contains("21:4") || svg.contains("21:5") || svg.contains("22:"),
            "time labels"
        );
        assert!(svg.contains("<polyline"), "a line");
        let empty = svg_empty();
        assert!(empty.contains("no samples"));
    }

    fn svg_empty() -> String {
        svg("x", &[], 0.0, 3600.0).unwrap()
    }

    #[test]
    fn units_and_numbers() {
        assert_eq!(unit("api.latency.p90"), "ms");
        assert_eq!(unit("disk_root./"), "value");
        assert_eq!(unit("mem_bytes"), "bytes");
        assert_eq!(short_number(1500.0), "1500");
        assert_eq!(short_number(15_000.0), "15k");
        assert_eq!(short_number(0.25), "0.250");
        assert_eq!(short_number(2.5), "2.5");
    }
}
