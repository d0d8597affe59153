//! The scale curves as SVG (plotters' SVG backend): one figure per file, the number of
//! Services on a log axis, one line per mode.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::{Point, ms};

/// One figure: file, title, y axis, the value of a point, log y.
struct Figure {
    file: &'static str,
    title: &'static str,
    y: &'static str,
    value: fn(&Point) -> f64,
    log: bool,
}

const FIGURES: [Figure; 5] = [
    Figure {
        file: "one-change.svg",
        title: "One Service changed: partial sync (p50)",
        y: "ms (log)",
        value: |p| ms(p.one_change),
        log: true,
    },
    Figure {
        file: "cold-sync.svg",
        title: "Cold sync (the proxy's first sync)",
        y: "ms (log)",
        value: |p| ms(p.cold_sync),
        log: true,
    },
    Figure {
        file: "rss.svg",
        title: "Resident memory after the changes",
        y: "MiB",
        value: |p| p.rss_mib,
        log: false,
    },
    Figure {
        file: "idle-cpu.svg",
        title: "Idle CPU (one periodic full resync included)",
        y: "% of one core",
        value: |p| p.idle_cpu * 100.0,
        log: false,
    },
    Figure {
        file: "conn-ratio.svg",
        title: "Connection set-up rate, ClusterIP / pod IP",
        y: "ratio",
        value: |p| p.conn_ratio,
        log: false,
    },
];

/// Writes every figure into `dir`.
pub(super) fn all(dir: &Path, points: &[Point]) -> anyhow::Result<()> {
    for f in &FIGURES {
        let mut modes: Vec<&str> = points.iter().map(|p| p.mode.as_str()).collect();
        modes.dedup();
        let series: Vec<(&str, Vec<(f64, f64)>)> = (modes.iter())
            .map(|m| {
                let pts = (points.iter().filter(|p| p.mode == *m))
                    .map(|p| (f64::from(p.services), (f.value)(p)))
                    .collect();
                (*m, pts)
            })
            .collect();
        let path = dir.join(f.file);
        let values = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1));
        let max = values.clone().fold(f64::MIN, f64::max).max(1e-3);
        let min = values.fold(f64::MAX, f64::min).max(1e-3);
        let xs = points.iter().map(|p| f64::from(p.services));
        let x = (xs.clone().fold(f64::MAX, f64::min) / 1.5)..(xs.fold(0.0, f64::max) * 1.5);
        let result = if f.log {
            draw(&path, f, x, ((min / 2.0)..(max * 2.0)).log_scale(), &series)
        } else {
            draw(&path, f, x, 0.0..(max * 1.2), &series)
        };
        result.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn draw<Y>(
    path: &Path,
    f: &Figure,
    x: std::ops::Range<f64>,
    y: Y,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(f.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.log_scale(), y)?;
    chart
        .configure_mesh()
        .x_desc("Services (3 endpoints each, log)")
        .y_desc(f.y)
        .draw()?;
    for (i, (mode, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(*mode)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
