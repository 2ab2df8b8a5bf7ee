//! A sweep's outputs: `runs.csv` (one row per run), `report.json` (everything), the plots, and
//! `report.md` (the table, the fits, the prediction against the measured point).

use std::fmt::Write as _;
use std::path::Path;

use vqrae_train::plot::{plot_log_x, Axes, Mark, XySeries};

use super::fit::PowerLawFit;
use super::run::RunResult;
use super::sweep::SweepReport;
use crate::error::{Result, ScalingError};
use vqrae_eval::scene_judge::SkillRates;

const PLOT_SIZE: (u32, u32) = (900, 560);

/// Quotes a CSV field when it needs it (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per run: the family, the held-out size and the codebook sweep.
pub(crate) fn csv(report: &SweepReport) -> String {
    let mut out = String::from(
        "group,name,tokenizer,codebook_size,hidden_size,layers,heads,params,non_embedding_params,\
         steps,tokens,flops,val_loss,referee_both,referee_color,referee_shape,scene_count,\
         scene_color,scene_position,scene_all,seconds\n",
    );
    let rows = report
        .runs
        .iter()
        .map(|r| ("family", r))
        .chain([("held_out", &report.held_out)])
        .chain(report.codebook.iter().map(|c| ("codebook", &c.run)));
    for (group, r) in rows {
        let q = r.quality.as_ref();
        let score = |f: fn(&vqrae_eval::referee::RefereeReport) -> f64| {
            q.map(|q| format!("{:.4}", f(q))).unwrap_or_default()
        };
        let skill = |f: fn(&SkillRates) -> f64| {
            r.scenes
                .as_ref()
                .map(|q| format!("{:.4}", f(q)))
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "{group},{},{},{},{},{},{},{},{},{},{:.0},{:.4e},{:.5},{},{},{},{},{},{},{},{:.1}",
            field(&r.name),
            field(&r.tokenizer.display().to_string()),
            r.codebook_size,
            r.size.hidden_size,
            r.size.num_hidden_layers,
            r.size.num_attention_heads,
            r.params,
            r.non_embedding_params,
            r.steps,
            r.tokens,
            r.flops,
            r.val_loss,
            score(|q| q.both),
            score(|q| q.color),
            score(|q| q.shape),
            skill(|q| q.count),
            skill(|q| q.color),
            skill(|q| q.position),
            skill(|q| q.all),
            r.seconds,
        );
    }
    out
}

fn law(f: &PowerLawFit, var: &str) -> String {
    let se = |v: Option<f64>| v.map(|v| format!(" ± {v:.3}")).unwrap_or_default();
    format!(
        "L({var}) = {:.4e} · {var}^-({:.4}{}) + {:.4}{}  (R² = {:.4}, {} points)",
        f.a,
        f.alpha,
        se(f.alpha_se),
        f.l_inf,
        se(f.l_inf_se),
        f.r2,
        f.points
    )
}

/// Points of a fitted law across `[lo, hi]`, evenly in log.
fn curve(f: &PowerLawFit, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    (0..=60)
        .map(|i| {
            let x = lo * (hi / lo).powf(i as f64 / 60.0);
            (x, f.predict(x))
        })
        .collect()
}

fn quality(r: &RunResult) -> String {
    r.quality
        .as_ref()
        .map(|q| format!("{:.1}%", 100.0 * q.both))
        .unwrap_or_else(|| "-".into())
}

/// "count / colour / position / all" in percent.
fn skills(q: Option<&SkillRates>) -> String {
    q.map(|q| {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}%",
            100.0 * q.count,
            100.0 * q.color,
            100.0 * q.position,
            100.0 * q.all
        )
    })
    .unwrap_or_else(|| "-".into())
}

/// The markdown report.
pub fn markdown(r: &SweepReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Scaling sweep `{}`\n", r.name);
    let _ = writeln!(
        s,
        "Tokenizer `{}`; {} training sequences, validation loss on {} held-out images \
         (nats per image token, captions given); generation quality = the referee's \
         colour+shape rate at guidance {}, its ceiling on the tokenizer's reconstructions of \
         the held-out images {:.1}%. Training time of all runs: {:.1} min (this invocation \
         {:.1} min).\n",
        r.tokenizer.display(),
        r.train_sequences,
        r.val_images,
        r.guidance,
        100.0 * r.ceiling.both,
        r.train_seconds / 60.0,
        r.seconds / 60.0
    );
    if let Some(c) = &r.scene_ceiling {
        let _ = writeln!(
            s,
            "Scenes: the captions of {} held-out procedural scenes, as many images each, judged \
             per skill by the exact scene judge (count / colour / position / all right); its \
             ceiling on the tokenizer's reconstructions of the same scenes: {}.\n",
            r.scene_prompts,
            skills(Some(c))
        );
    }
    s.push_str(
        "| run | d | layers | heads | N (non-emb.) | params | tokens D | C = 6ND | val loss | \
         referee | scenes | min |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in r.runs.iter().chain([&r.held_out]) {
        let held = if run.name == r.held_out.name {
            " (held out)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "| {}{held} | {} | {} | {} | {} | {} | {:.3e} | {:.3e} | {:.4} | {} | {} | {:.1} |",
            run.name,
            run.size.hidden_size,
            run.size.num_hidden_layers,
            run.size.num_attention_heads,
            run.non_embedding_params,
            run.params,
            run.tokens,
            run.flops,
            run.val_loss,
            quality(run),
            skills(run.scenes.as_ref()),
            run.seconds / 60.0
        );
    }
    let p = &r.prediction;
    let pm = |v: f64, se: Option<f64>| match se {
        Some(se) => format!("{v:.4} ± {se:.4}"),
        None => format!("{v:.4}"),
    };
    let _ = writeln!(
        s,
        "\n## Fits\n\n- {}\n- {} on the {} frontier points (validation points from {:.0}% of \
         each run on)\n",
        law(&r.fit_n, "N"),
        law(&r.fit_c, "C"),
        r.frontier.len(),
        100.0 * r.fit_from
    );
    let _ = writeln!(
        s,
        "## Prediction for the next size up\n\n`{}` (N = {}), predicted before it trained: \
         L(N) = {}, L(C) = {}; measured **{:.4}** (off by {:+.4} from L(N)).\n",
        p.size,
        p.non_embedding_params,
        pm(p.from_n, p.from_n_se),
        pm(p.from_c, p.from_c_se),
        p.measured,
        p.measured - p.from_n
    );
    if !r.codebook.is_empty() {
        s.push_str(
            "## Codebook sweep\n\n| tokenizer | codebook | dim | val loss (nats/token) | \
             bits / image | referee | referee ceiling | scenes | scene ceiling |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &r.codebook {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {:.4} | {:.1} | {} | {:.1}% | {} | {} |",
                c.tokenizer.display(),
                c.codebook_size,
                c.codebook_dim,
                c.run.val_loss,
                c.bits_per_image,
                quality(&c.run),
                100.0 * c.ceiling.both,
                skills(c.run.scenes.as_ref()),
                skills(c.scene_ceiling.as_ref())
            );
        }
        s.push('\n');
    }
    s.push_str(
        "![loss vs N](loss-vs-n.png)\n![loss vs C](loss-vs-c.png)\n![curves](curves.png)\n\
         ![quality vs N](quality-vs-n.png)\n",
    );
    s
}

/// Writes `runs.csv`, `report.json`, `report.md` and the plots into `out`.
pub(crate) fn write_all(r: &SweepReport, out: &Path) -> Result<()> {
    let write =
        |name: &str, text: String| vqrae_data::fs::write_atomic(&out.join(name), text.as_bytes());
    write("runs.csv", csv(r))?;
    let json = serde_json::to_string_pretty(r).map_err(|source| ScalingError::Json {
        path: out.join("report.json"),
        source,
    })?;
    write("report.json", json + "\n")?;
    write("report.md", markdown(r))?;
    let plots = Plots::new(r);
    plots.loss_vs_n(&out.join("loss-vs-n.png"))?;
    plots.loss_vs_c(&out.join("loss-vs-c.png"))?;
    plots.curves(&out.join("curves.png"))?;
    plots.quality_vs_n(&out.join("quality-vs-n.png"))
}

/// The report's plots, over the family's range of N and under a loss cap.
struct Plots<'a> {
    r: &'a SweepReport,
    /// The smallest and largest N, held-out size included.
    n_range: (f64, f64),
    /// The first steps fall from ~ln(vocab); points above twice the worst final loss are cut
    /// so that the law's range is readable.
    cap: f64,
}

fn n(run: &RunResult) -> f64 {
    run.non_embedding_params as f64
}

fn pts(label: &str, points: Vec<(f64, f64)>) -> XySeries {
    XySeries {
        label: label.into(),
        points,
        mark: Mark::Points,
    }
}

fn fit(label: &str, points: Vec<(f64, f64)>) -> XySeries {
    XySeries {
        label: label.into(),
        points,
        mark: Mark::Fit,
    }
}

impl<'a> Plots<'a> {
    fn new(r: &'a SweepReport) -> Self {
        let n_range = r
            .runs
            .iter()
            .map(|run| (n(run), 0.0))
            .chain([(n(&r.held_out), 0.0)])
            .fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| {
                (lo.min(x), hi.max(x))
            });
        let cap = 2.0
            * r.runs
                .iter()
                .chain([&r.held_out])
                .map(|run| run.val_loss)
                .fold(0.0, f64::max);
        Self { r, n_range, cap }
    }

    /// `(N, y)` of every run of the family that has a `y`.
    fn family(&self, f: &dyn Fn(&RunResult) -> Option<(f64, f64)>) -> Vec<(f64, f64)> {
        self.r.runs.iter().filter_map(f).collect()
    }

    fn under_cap(&self, points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
        points.into_iter().filter(|p| p.1 <= self.cap).collect()
    }

    fn loss_vs_n(&self, path: &Path) -> Result<()> {
        let (r, (lo, hi)) = (self.r, self.n_range);
        plot_log_x(
            &Axes {
                title: "validation loss vs non-embedding parameters".into(),
                x: "N".into(),
                y: "val loss (nats / image token)".into(),
            },
            &[
                pts("family", self.family(&|run| Some((n(run), run.val_loss)))),
                pts("held out", vec![(n(&r.held_out), r.held_out.val_loss)]),
                fit("fit L(N)", curve(&r.fit_n, lo, hi)),
            ],
            path,
            PLOT_SIZE,
        )?;
        Ok(())
    }

    fn loss_vs_c(&self, path: &Path) -> Result<()> {
        let r = self.r;
        let mut series: Vec<XySeries> = r
            .runs
            .iter()
            .map(|run| XySeries {
                label: run.name.clone(),
                points: self.under_cap(run.curve.iter().map(|p| (p.flops, p.val_loss)).collect()),
                mark: Mark::Line,
            })
            .collect();
        let (c_lo, c_hi) = r
            .frontier
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &(x, _)| {
                (lo.min(x), hi.max(x))
            });
        series.push(pts("frontier", r.frontier.clone()));
        series.push(fit("fit L(C)", curve(&r.fit_c, c_lo, c_hi)));
        plot_log_x(
            &Axes {
                title: format!(
                    "validation loss vs training compute, and the frontier (loss <= {:.2})",
                    self.cap
                ),
                x: "C = 6 N D (FLOPs)".into(),
                y: "val loss".into(),
            },
            &series,
            path,
            PLOT_SIZE,
        )?;
        Ok(())
    }

    fn curves(&self, path: &Path) -> Result<()> {
        let curves: Vec<XySeries> = self
            .r
            .runs
            .iter()
            .chain([&self.r.held_out])
            .map(|run| XySeries {
                label: run.name.clone(),
                points: self.under_cap(run.curve.iter().map(|p| (p.tokens, p.val_loss)).collect()),
                mark: Mark::Line,
            })
            .collect();
        plot_log_x(
            &Axes {
                title: format!(
                    "validation loss over training, per size (loss <= {:.2})",
                    self.cap
                ),
                x: "tokens D".into(),
                y: "val loss".into(),
            },
            &curves,
            path,
            PLOT_SIZE,
        )?;
        Ok(())
    }

    fn quality_vs_n(&self, path: &Path) -> Result<()> {
        let (r, (lo, hi)) = (self.r, self.n_range);
        let q = |run: &RunResult| run.quality.as_ref().map(|q| (n(run), 100.0 * q.both));
        let mut series = vec![
            pts("easy-VQA, referee", self.family(&|run| q(run))),
            pts("easy-VQA, held out", q(&r.held_out).into_iter().collect()),
            fit(
                "easy-VQA ceiling (reconstructions)",
                vec![(lo, 100.0 * r.ceiling.both), (hi, 100.0 * r.ceiling.both)],
            ),
        ];
        if let Some(c) = &r.scene_ceiling {
            let sq = |run: &RunResult| run.scenes.as_ref().map(|q| (n(run), 100.0 * q.all));
            series.push(pts("scenes, all skills", self.family(&|run| sq(run))));
            series.push(pts(
                "scenes, held out",
                sq(&r.held_out).into_iter().collect(),
            ));
            series.push(fit(
                "scene ceiling (reconstructions)",
                vec![(lo, 100.0 * c.all), (hi, 100.0 * c.all)],
            ));
        }
        plot_log_x(
            &Axes {
                title:
                    "generation quality vs N (referee: colour and shape; scene judge: all skills)"
                        .into(),
                x: "N".into(),
                y: "% right".into(),
            },
            &series,
            path,
            PLOT_SIZE,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("q\",x"), "\"q\"\",x\"");
    }
}
