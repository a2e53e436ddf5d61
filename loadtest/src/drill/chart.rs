//! The drill's timeline as an SVG chart: five panels sharing the time axis, the
//! fault window shaded in each.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::timeline::Row;

/// What the chart shows besides the rows.
#[derive(Clone, Debug)]
pub struct ChartSpec {
    /// Title line.
    pub title: String,
    /// Fault window, seconds since the start.
    pub fault: (f64, f64),
    /// Latency limit (1.5 × p99 before), ms.
    pub latency_limit_ms: Option<f64>,
    /// Runtime-lag limit, ms.
    pub lag_limit_ms: f64,
    /// 10-second runtime-lag p99 windows `(start t, ms)`.
    pub lag_windows: Vec<(f64, f64)>,
    /// Breaker state changes from hark's log, `(t, 0 closed / 1 open / 2 half-open)`,
    /// drawn instead of the 1 s gauge samples so a brief half-open shows.
    pub breaker: Vec<(f64, f64)>,
}

const WIDTH: u32 = 1200;
const PANEL: u32 = 250;
const TITLE: u32 = 50;
const FAULT: RGBColor = RGBColor(230, 80, 80);
const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(120, 120, 120);
const RED_: RGBColor = RGBColor(214, 39, 40);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// One line of a panel.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// Renders the chart as an SVG document.
pub fn render(rows: &[Row], spec: &ChartSpec) -> anyhow::Result<String> {
    let mut svg = String::new();
    draw(&mut svg, rows, spec).map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    Ok(svg)
}

fn series(rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    rows.iter().filter_map(|r| f(r).map(|v| (r.t, v))).collect()
}

/// A step line: each value holds until the next sample.
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for pair in points.windows(2) {
        out.push(pair[0]);
        out.push((pair[1].0, pair[0].1));
    }
    if let Some(last) = points.last() {
        out.push(*last);
    }
    out
}

fn draw(
    svg: &mut String,
    rows: &[Row],
    spec: &ChartSpec,
) -> Result<(), Box<dyn std::error::Error>> {
    let height = TITLE + 5 * PANEL;
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(TITLE);
    top.draw_text(&spec.title, &("sans-serif", 22).into_font().color(&BLACK), (20, 14))?;
    let panels = body.split_evenly((5, 1));
    let t_max = rows.last().map_or(1.0, |r| r.t).max(spec.fault.1 + 1.0);

    let hline = |label, color, y: f64| Line {
        label,
        color,
        points: vec![(0.0, y), (t_max, y)],
        dashed: true,
    };

    panel(
        &panels[0],
        "Sessions",
        "sessions",
        t_max,
        None,
        SeriesLabelPosition::MiddleLeft,
        spec,
        vec![
            Line {
                label: "on pusher",
                color: BLUE_,
                points: series(rows, |r| r.pusher_connected),
                dashed: false,
            },
            Line {
                label: "degraded",
                color: ORANGE,
                points: series(rows, |r| r.pusher_degraded),
                dashed: false,
            },
            Line {
                label: "active",
                color: GREY,
                points: series(rows, |r| r.sessions_active),
                dashed: true,
            },
        ],
        None,
    )?;
    let mut breaker = spec.breaker.clone();
    if breaker.is_empty() {
        breaker = series(rows, |r| r.breaker_state);
    } else {
        breaker.insert(0, (0.0, 0.0));
        breaker.push((t_max, breaker.last().map_or(0.0, |b| b.1)));
    }
    panel(
        &panels[1],
        "Pod breaker",
        "state",
        t_max,
        Some(2.3),
        SeriesLabelPosition::UpperRight,
        spec,
        vec![Line {
            label: "breaker state (hark's /metrics)",
            color: PURPLE,
            points: steps(&breaker),
            dashed: false,
        }],
        Some(&|v: &f64| match (v.round() as i64, (v - v.round()).abs() < 1e-6) {
            (0, true) => "closed".into(),
            (1, true) => "open".into(),
            (2, true) => "half-open".into(),
            _ => String::new(),
        }),
    )?;
    panel(
        &panels[2],
        "Dials per second",
        "dials/s",
        t_max,
        None,
        SeriesLabelPosition::UpperRight,
        spec,
        vec![
            Line {
                label: "reaching pusher (TCP accepts)",
                color: RED_,
                points: series(rows, |r| r.pusher_accepts_per_s),
                dashed: false,
            },
            Line {
                label: "hark dial attempts",
                color: GREY,
                points: series(rows, |r| r.hark_dials_per_s),
                dashed: true,
            },
        ],
        None,
    )?;
    let mut latency = vec![Line {
        label: "client word latency p99",
        color: GREEN_,
        points: series(rows, |r| r.latency_p99_ms),
        dashed: false,
    }];
    if let Some(limit) = spec.latency_limit_ms {
        latency.push(hline("limit: 1.5 × p99 before", RED_, limit));
    }
    panel(
        &panels[3],
        "Transcript latency (audio sent → segment received)",
        "ms",
        t_max,
        None,
        SeriesLabelPosition::LowerRight,
        spec,
        latency,
        None,
    )?;
    let mut windows: Vec<(f64, f64)> = spec.lag_windows.clone();
    if let Some(&(t, v)) = windows.last() {
        windows.push((t + 10.0, v));
    }
    panel(
        &panels[4],
        "Runtime lag",
        "ms",
        t_max,
        None,
        SeriesLabelPosition::UpperRight,
        spec,
        vec![
            Line {
                label: "p99 per second",
                color: GREY,
                points: series(rows, |r| r.lag_p99_ms),
                dashed: false,
            },
            Line { label: "p99 per 10 s", color: BLUE_, points: steps(&windows), dashed: false },
            hline("limit 20 ms", RED_, spec.lag_limit_ms),
        ],
        None,
    )?;
    root.present()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn panel(
    area: &Area<'_>,
    title: &str,
    y_desc: &str,
    t_max: f64,
    y_max: Option<f64>,
    legend: SeriesLabelPosition,
    spec: &ChartSpec,
    lines: Vec<Line>,
    y_fmt: Option<&dyn Fn(&f64) -> String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let data_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let y_top = y_max.unwrap_or_else(|| (data_max * 1.15).max(1.0));
    let y_bottom = if y_max.is_some() { -0.2 } else { 0.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(20)
        .margin_top(8)
        .caption(title, ("sans-serif", 16))
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, y_bottom..y_top)?;
    let mut mesh = chart.configure_mesh();
    let whole = |v: &f64| format!("{v:.0}");
    mesh.x_desc("t (s)")
        .y_desc(y_desc)
        .x_label_formatter(&whole)
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 12));
    match y_fmt {
        Some(fmt) => mesh.y_label_formatter(fmt).y_labels(12),
        // Fractions only on small axes (lag in ms), whole numbers elsewhere.
        None if y_top > 10.0 => mesh.y_label_formatter(&whole),
        None => &mut mesh,
    };
    mesh.draw()?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(spec.fault.0, y_bottom), (spec.fault.1, y_top)],
            FAULT.mix(0.12).filled(),
        )))?
        .label("fault")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], FAULT.mix(0.3).filled()));
    for line in lines {
        let color = line.color;
        let style = color.stroke_width(2);
        let anno = if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points, 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(line.points, style))?
        };
        anno.label(line.label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_five_labelled_panels() {
        let rows: Vec<Row> = (0..60)
            .map(|t| Row {
                t: f64::from(t),
                pusher_connected: Some(if (20..40).contains(&t) { 0.0 } else { 50.0 }),
                sessions_active: Some(50.0),
                breaker_state: Some(if (22..40).contains(&t) { 1.0 } else { 0.0 }),
                pusher_accepts_per_s: Some(1.0),
                latency_p99_ms: Some(300.0),
                lag_p99_ms: Some(1.0),
                ..Row::default()
            })
            .collect();
        let spec = ChartSpec {
            title: "incident".into(),
            fault: (20.0, 40.0),
            latency_limit_ms: Some(450.0),
            lag_limit_ms: 20.0,
            lag_windows: vec![(0.0, 1.0), (10.0, 2.0)],
            breaker: vec![(22.0, 1.0), (32.0, 2.0), (32.1, 1.0)],
        };
        let svg = render(&rows, &spec).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in [
            "Sessions",
            "Pod breaker",
            "Dials per second",
            "Transcript latency",
            "Runtime lag",
            "half-open",
            "t (s)",
            "limit 20 ms",
            "fault",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        // Empty rows still render.
        assert!(render(&[], &spec).is_ok());
    }
}
