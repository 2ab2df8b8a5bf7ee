//! Training curves to PNG: one panel per metric, one line per run, from `metrics.jsonl` logs.
//!
//! Text needs a font file at run time (plotters' `ab_glyph` backend has no system font lookup):
//! `$VQRAE_FONT`, else DejaVu Sans where Debian's `fonts-dejavu-core` puts it. Without one the
//! curves are still drawn, without captions, axis labels and legend, and a warning says why.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::chart::SeriesAnno;
use plotters::prelude::*;
use serde_json::Value;

use crate::error::{Result, TrainError};

/// One line of a panel: `(step, value)` points of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// The `(step, key)` points of a log's records that have a finite number under `key`.
pub fn series(records: &[Value], key: &str, label: &str) -> Series {
    let points = records
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    Series {
        label: label.to_string(),
        points,
    }
}

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a sans-serif font once per process; `false` when none could be loaded.
pub(crate) fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var_os("VQRAE_FONT").map(PathBuf::from);
        let candidates = env.into_iter().chain(FONT_PATHS.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts for the whole process: leaking the one copy is the point
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no font found (set VQRAE_FONT to a .ttf): plotting without text");
        false
    })
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Creates the folder a PNG is written to.
fn create_parent(out: &Path) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(TrainError::io(parent))?;
    }
    Ok(())
}

fn draw_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("plotting: {e}"))
}

/// The smallest and largest x and y of `points`: `(x0, x1, y0, y1)`.
fn bounds<'a>(points: impl IntoIterator<Item = &'a (f64, f64)>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    (x0, x1, y0, y1)
}

/// The margin above and below the y range `y0..y1`: 5% of it.
fn y_pad(y0: f64, y1: f64) -> f64 {
    ((y1 - y0) * 0.05).max(1e-9)
}

/// Names a drawn series in the legend, by a short line in its colour.
fn legend_entry(drawn: &mut SeriesAnno<'_, BitMapBackend<'_>>, label: &str, color: RGBColor) {
    drawn
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
}

/// Draws the legend box of `chart`'s labelled series at `position`.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)
}

/// Draws `panels` (a title and its lines each) stacked vertically into a PNG at `out`,
/// `width` pixels wide and 260 pixels per panel. Panels without points are skipped.
pub(crate) fn plot_panels(panels: &[(String, Vec<Series>)], out: &Path, width: u32) -> Result<()> {
    let panels: Vec<_> = panels
        .iter()
        .filter(|(_, s)| s.iter().any(|s| !s.points.is_empty()))
        .collect();
    if panels.is_empty() {
        return Err(TrainError::Config(
            "nothing to plot: no panel has points".into(),
        ));
    }
    create_parent(out)?;
    let text = font_ready();
    let height = 260 * panels.len() as u32;
    let root = BitMapBackend::new(out, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    for (area, (title, lines)) in root.split_evenly((panels.len(), 1)).iter().zip(&panels) {
        let (x0, mut x1, y0, y1) = bounds(lines.iter().flat_map(|s| s.points.iter()));
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = y_pad(y0, y1);
        let mut builder = ChartBuilder::on(area);
        builder.margin(10);
        if text {
            builder
                .caption(title.as_str(), ("sans-serif", 18))
                .x_label_area_size(30)
                .y_label_area_size(60);
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(draw_err)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("step")
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(draw_err)?;
        }
        // colours follow the run's position, so a run keeps its colour across panels
        for (i, s) in lines
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.points.is_empty())
        {
            let color = PALETTE[i % PALETTE.len()];
            let drawn = chart
                .draw_series(LineSeries::new(s.points.iter().copied(), &color))
                .map_err(draw_err)?;
            if text {
                legend_entry(drawn, &s.label, color);
            }
        }
        if text && lines.len() > 1 {
            // plotters' default place
            draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        }
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// How a series of [`plot_log_x`] is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Connected points in the series' colour (a training curve).
    Line,
    /// Unconnected dots (measurements).
    Points,
    /// A dashed black line (a fitted law).
    Fit,
}

/// One series of [`plot_log_x`].
#[derive(Clone, Debug, PartialEq)]
pub struct XySeries {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
}

/// Titles of [`plot_log_x`].
#[derive(Clone, Debug, PartialEq)]
pub struct Axes {
    pub title: String,
    pub x: String,
    pub y: String,
}

/// One chart with a logarithmic x axis (parameters, FLOPs, tokens span decades) and a linear
/// y axis, `size` pixels, to a PNG at `out`. Points with x <= 0 or a non-finite value are left
/// out. Colours follow the series' position among the non-fit series.
pub fn plot_log_x(axes: &Axes, series: &[XySeries], out: &Path, size: (u32, u32)) -> Result<()> {
    let finite = |&(x, y): &(f64, f64)| x > 0.0 && x.is_finite() && y.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(finite))
        .collect();
    if all.is_empty() {
        return Err(TrainError::Config(
            "nothing to plot: no finite points".into(),
        ));
    }
    create_parent(out)?;
    let (x0, x1, y0, y1) = bounds(&all);
    // a margin of a fifth of a decade on x and 5% on y keeps end points off the frame
    let (x0, x1) = (x0 / 1.6, x1 * 1.6);
    let pad = y_pad(y0, y1);
    let text = font_ready();
    let root = BitMapBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if text {
        builder
            .caption(axes.title.as_str(), ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d((x0..x1).log_scale(), (y0 - pad)..(y1 + pad))
        .map_err(draw_err)?;
    if text {
        chart
            .configure_mesh()
            .x_desc(axes.x.as_str())
            .y_desc(axes.y.as_str())
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
    }
    let mut colour = 0;
    for s in series {
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(finite).collect();
        if points.is_empty() {
            continue;
        }
        let color = if s.mark == Mark::Fit {
            BLACK
        } else {
            colour += 1;
            PALETTE[(colour - 1) % PALETTE.len()]
        };
        let drawn = match s.mark {
            Mark::Line => chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(draw_err)?,
            Mark::Points => chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 5, color.filled())),
                )
                .map_err(draw_err)?,
            Mark::Fit => chart
                .draw_series(DashedLineSeries::new(points, 6, 4, color.stroke_width(1)))
                .map_err(draw_err)?,
        };
        if text && !s.label.is_empty() {
            legend_entry(drawn, &s.label, color);
        }
    }
    if text {
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_skip_records_without_the_key() {
        let recs: Vec<Value> = serde_json::from_str(
            r#"[{"step": 1, "loss": 2.0}, {"step": 2}, {"step": 3, "loss": 1.0}]"#,
        )
        .unwrap();
        let s = series(&recs, "loss", "run");
        assert_eq!(s.points, vec![(1.0, 2.0), (3.0, 1.0)]);
    }

    #[test]
    fn panels_become_a_png_of_the_asked_size() -> Result<()> {
        let dir = tempfile::tempdir().map_err(TrainError::io("tempdir"))?;
        let out = dir.path().join("curves.png");
        let line = |label: &str, k: f64| Series {
            label: label.into(),
            points: (0..50).map(|i| (i as f64, k / (1.0 + i as f64))).collect(),
        };
        let panels = vec![
            ("loss".to_string(), vec![line("a", 1.0), line("b", 2.0)]),
            ("empty".to_string(), vec![]),
            ("l2".to_string(), vec![line("a", 0.5)]),
        ];
        plot_panels(&panels, &out, 640)?;
        let bytes = std::fs::read(&out).map_err(TrainError::io(&out))?;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian; the empty panel is skipped
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        assert_eq!((w, h), (640, 520));
        assert!(plot_panels(&[("x".into(), vec![])], &out, 640).is_err());
        Ok(())
    }

    #[test]
    fn log_x_charts_take_decades_and_skip_what_a_log_cannot_show() -> Result<()> {
        let dir = tempfile::tempdir().map_err(TrainError::io("tempdir"))?;
        let out = dir.path().join("law.png");
        let axes = Axes {
            title: "loss vs N".into(),
            x: "N".into(),
            y: "loss".into(),
        };
        let measured = XySeries {
            label: "runs".into(),
            points: vec![
                (1e4, 3.0),
                (1e5, 2.5),
                (1e6, 2.2),
                (0.0, 9.0),
                (1e7, f64::NAN),
            ],
            mark: Mark::Points,
        };
        let fit = XySeries {
            label: "fit".into(),
            points: (0..20)
                .map(|i| (1e4 * 1.5f64.powi(i), 2.0 + 10.0 * 1.5f64.powi(-i)))
                .collect(),
            mark: Mark::Fit,
        };
        plot_log_x(&axes, &[measured, fit], &out, (640, 400))?;
        let bytes = std::fs::read(&out).map_err(TrainError::io(&out))?;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let empty = XySeries {
            label: "none".into(),
            points: vec![(-1.0, 1.0)],
            mark: Mark::Line,
        };
        assert!(plot_log_x(&axes, &[empty], &out, (640, 400)).is_err());
        Ok(())
    }
}
