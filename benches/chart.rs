//! Draws the macro benchmark's CSV (benches/pgbench/macro.py) as a PNG:
//! one panel per (script, protocol), tps against clients on a log scale,
//! one line per target (direct, tidepool, PgBouncer).
//!
//!     cargo bench --bench chart -- bench-results/macro-X.csv docs/performance.png
//!
//! Run without file arguments (as plain `cargo bench` does) it does nothing.
//! Text needs a TrueType font: DejaVu Sans from Debian's fonts-dejavu-core
//! (macro.py installs it), or the file named by TIDEPOOL_CHART_FONT.

use std::collections::BTreeMap;
use std::error::Error;

use plotters::prelude::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const TARGETS: [(&str, RGBColor); 3] = [
    ("direct", RGBColor(120, 120, 120)),
    ("tidepool", RGBColor(0, 120, 200)),
    ("pgbouncer", RGBColor(220, 110, 0)),
];

/// Runs by panel (script, protocol order, protocol) -> target ->
/// [(clients, tps)].
type Runs = BTreeMap<(String, usize, String), BTreeMap<String, Vec<(f64, f64)>>>;

/// Panels in the order the protocols get faster: simple, extended, prepared.
fn order(proto: &str) -> usize {
    ["simple", "extended", "prepared"]
        .iter()
        .position(|p| proto.starts_with(p))
        .unwrap_or(9)
        + usize::from(proto.ends_with("-C")) * 10
}

/// Split one CSV line, honouring double quotes (the error column may hold
/// commas).
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(s) = out.last_mut() {
                    s.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => {
                if let Some(s) = out.last_mut() {
                    s.push(c)
                }
            }
        }
    }
    out
}

fn read(path: &str) -> Result<Runs, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let head = fields(lines.next().ok_or("empty CSV")?);
    let col = |name: &str| {
        head.iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let (t, s, p, c, conn, tps) = (
        col("target")?,
        col("script")?,
        col("proto")?,
        col("clients")?,
        col("connect")?,
        col("tps")?,
    );
    let mut runs = Runs::new();
    for line in lines {
        let f = fields(line);
        if f.len() < head.len() - 1 {
            continue;
        }
        let tps_value: f64 = f[tps].parse()?;
        if tps_value <= 0.0 {
            // A run that failed (PgBouncer with -M prepared) or never got
            // going: no point, rather than a misleading zero.
            continue;
        }
        let proto = if f[conn] == "1" {
            format!("{} -C", f[p])
        } else {
            f[p].clone()
        };
        runs.entry((f[s].clone(), order(&proto), proto))
            .or_default()
            .entry(f[t].clone())
            .or_default()
            .push((f[c].parse()?, tps_value));
    }
    Ok(runs)
}

fn draw(runs: &Runs, png: &str) -> Result<(), Box<dyn Error>> {
    let font = std::env::var("TIDEPOOL_CHART_FONT").unwrap_or_else(|_| FONT.into());
    let bytes: &'static [u8] = Box::leak(std::fs::read(&font)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{font}: not a usable font"))?;

    let cols = 3.min(runs.len()).max(1);
    let rows = runs.len().div_ceil(cols);
    let root = BitMapBackend::new(png, (520 * cols as u32, 380 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, ((script, _, proto), targets)) in root.split_evenly((rows, cols)).iter().zip(runs) {
        let max_c = targets.values().flatten().map(|p| p.0).fold(1.0, f64::max);
        // Ticks at the client counts measured: a log axis's own ticks over
        // 1..50 crowd into each other (2, 3, ... 9, 10, 20, ...).
        let mut ticks: Vec<f64> = targets.values().flatten().map(|p| p.0).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let max_tps = targets.values().flatten().map(|p| p.1).fold(1.0, f64::max);
        let title = format!(
            "{}, -M {proto}",
            if script == "select" {
                "select-only"
            } else {
                "TPC-B-like"
            }
        );
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (0.8f64..max_c * 1.25).log_scale().with_key_points(ticks),
                0f64..max_tps * 1.1,
            )?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("clients")
            .y_desc("tps")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (name, color) in TARGETS {
            let Some(points) = targets.get(name) else {
                continue;
            };
            let mut points = points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [csv, png] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench chart -- RESULTS.csv CHART.png (nothing to do)");
        return;
    };
    if let Err(e) = read(csv).and_then(|runs| draw(&runs, png)) {
        eprintln!("chart: {e}");
        std::process::exit(1);
    }
}
