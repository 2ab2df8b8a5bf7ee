//! Scaling-law fits: loss against parameters N or compute C as `L(x) = a * x^(-alpha) + l_inf`.
//!
//! The fit minimises the squared error of the losses themselves (not of `log L`), because
//! the irreducible term `l_inf` makes the curve non-linear in `log x`, and because the
//! question asked of a scaling law ("what loss at 10x the compute?") is a question in loss
//! units. `l_inf` is kept in `[0, min(y)]`: losses are cross-entropies, and an asymptote
//! above the lowest observed loss would need a negative `a`, which no scaling experiment
//! means.
//!
//! Three parameters are too few to justify a solver crate, and general-purpose solvers need
//! a starting guess that power laws punish (the optimum in `alpha` is narrow and far from
//! wherever one starts). Profiled (variable-projection) least squares needs none: for a
//! fixed `alpha` the model is linear in `a` and `l_inf`, so both have a closed form, and
//! only `alpha` is searched — a coarse grid over `[-2, 5]` (so a second local minimum cannot
//! capture the fit), then golden-section refinement, then a few Levenberg-Marquardt steps on
//! all three parameters as a polish. A grid cannot fail to return something, so every valid
//! input gets a fit, flat or increasing data included (their `alpha` comes out near 0 or
//! negative, with a low R^2).
//!
//! All of it runs on `x / x0`, with `x0` the geometric mean of the x values: compute spans
//! 1e10..1e16, where `x^(-alpha)` in raw units would put `a` and its derivative columns
//! tens of orders of magnitude apart. Only the reported numbers are converted back.

use serde::{Deserialize, Serialize};

/// The bracket searched for `alpha`. Negative exponents are allowed so that increasing
/// data still gets its least-squares curve instead of an error; beyond 5 the curve is a
/// step, which no scaling sweep shows.
const ALPHA_MIN: f64 = -2.0;
const ALPHA_MAX: f64 = 5.0;
/// Grid steps over the bracket (0.02 apart): fine enough that the best grid point has the
/// global minimum within one step on either side, where golden section takes over.
const ALPHA_GRID_STEPS: usize = 350;

/// `L(x) = a * x^(-alpha) + l_inf`, fitted by least squares on the losses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    pub a: f64,
    pub alpha: f64,
    pub l_inf: f64,
    /// Standard errors from the Jacobian at the optimum: `s^2 (J^T J)^-1` with
    /// `s^2 = RSS / (n - 3)`; `None` when `n <= 3` or `J^T J` is singular.
    pub a_se: Option<f64>,
    pub alpha_se: Option<f64>,
    pub l_inf_se: Option<f64>,
    /// The full covariance of `(a, alpha, l_inf)`, in that order, whose diagonal gives the
    /// standard errors above. Kept because `a` and `alpha` are strongly correlated: the
    /// standard errors alone would overstate the uncertainty of a prediction many times.
    pub covariance: Option<[[f64; 3]; 3]>,
    /// `1 - RSS / TSS` on the losses; 0 when the losses are all equal (nothing to explain).
    pub r2: f64,
    pub rss: f64,
    pub points: usize,
}

impl PowerLawFit {
    /// The fitted loss at `x`.
    pub(crate) fn predict(&self, x: f64) -> f64 {
        self.power_term(x) + self.l_inf
    }

    /// Standard error of [`predict`](Self::predict) at `x` by the delta method
    /// (`g^T Sigma g`), `None` when the covariance is unknown.
    pub(crate) fn predict_se(&self, x: f64) -> Option<f64> {
        let cov = self.covariance.as_ref()?;
        let term = self.power_term(x);
        // dL/da = x^-alpha, dL/dalpha = -a x^-alpha ln x, dL/dl_inf = 1.
        let unit_power = if self.a != 0.0 {
            term / self.a
        } else {
            (-self.alpha * x.ln()).exp()
        };
        let g = [unit_power, -term * x.ln(), 1.0];
        let var = quadratic_form(cov, &g);
        // Rounding can take a true zero slightly below it.
        Some(var.max(0.0).sqrt())
    }

    /// `a * x^(-alpha)`, through logarithms: at x ~ 1e16, `a` alone can be far larger than
    /// the term, and `x^(-alpha)` far smaller.
    fn power_term(&self, x: f64) -> f64 {
        if self.a == 0.0 {
            return 0.0;
        }
        self.a.signum() * (self.a.abs().ln() - self.alpha * x.ln()).exp()
    }
}

/// Why a power law could not be fitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FitError {
    #[error("need at least 3 points to fit a power law with 3 parameters, got {0}")]
    TooFewPoints(usize),
    #[error("x and y lengths differ: {xs} x values, {ys} y values")]
    LengthMismatch { xs: usize, ys: usize },
    #[error("x[{index}] = {value}: every x must be positive and finite")]
    InvalidX { index: usize, value: f64 },
    #[error("y[{index}] = {value}: every y must be finite")]
    InvalidY { index: usize, value: f64 },
    #[error("need at least 3 distinct x values to fit a power law with 3 parameters, got {0}")]
    TooFewDistinctX(usize),
}

/// Fits `L(x) = a * x^(-alpha) + l_inf` to `(xs[i], ys[i])` by least squares on `ys`, with
/// `l_inf` in `[0, min(ys)]` (see the module docs for the method).
pub(crate) fn fit_power_law(xs: &[f64], ys: &[f64]) -> Result<PowerLawFit, FitError> {
    if xs.len() != ys.len() {
        return Err(FitError::LengthMismatch {
            xs: xs.len(),
            ys: ys.len(),
        });
    }
    if xs.len() < 3 {
        return Err(FitError::TooFewPoints(xs.len()));
    }
    if let Some((index, &value)) = xs
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x > 0.0))
    {
        return Err(FitError::InvalidX { index, value });
    }
    if let Some((index, &value)) = ys.iter().enumerate().find(|(_, y)| !y.is_finite()) {
        return Err(FitError::InvalidY { index, value });
    }
    let mut distinct = xs.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 {
        return Err(FitError::TooFewDistinctX(distinct.len()));
    }

    let problem = Problem::new(xs, ys);
    let searched = problem.search_alpha();
    let polished = problem.polish(searched);
    // The polish moves `a` and `l_inf` only approximately; at its `alpha` they have an
    // exact optimum, which cannot be worse.
    let reprofiled = problem.profile(polished.alpha);
    let best = if reprofiled.rss <= polished.rss {
        reprofiled
    } else {
        polished
    };

    let n = xs.len();
    let scale = (best.alpha * problem.ln_x0).exp();
    let a = best.a * scale;
    let covariance = problem
        .scaled_covariance(&best)
        .map(|cov| to_original_units(&cov, a, scale, problem.ln_x0))
        .filter(|cov| cov.iter().flatten().all(|v| v.is_finite()));
    let se = |i: usize| covariance.map(|cov| cov[i][i].max(0.0).sqrt());
    let tss: f64 = ys.iter().map(|y| (y - problem.y_mean).powi(2)).sum();
    let r2 = if tss > 0.0 { 1.0 - best.rss / tss } else { 0.0 };

    Ok(PowerLawFit {
        a,
        alpha: best.alpha,
        l_inf: best.c,
        a_se: se(0),
        alpha_se: se(1),
        l_inf_se: se(2),
        covariance,
        r2,
        rss: best.rss,
        points: n,
    })
}

/// The compute-efficient frontier: the points `(x, y)` for which no other point has
/// `x' <= x` and `y' <= y` (with at least one strict), sorted by x ascending; duplicates
/// are kept once. Points with a NaN coordinate are skipped: they are comparable to none.
pub(crate) fn frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| !x.is_nan() && !y.is_nan())
        .collect();
    sorted.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    // After sorting by (x, y), a point is undominated exactly when its y beats every y
    // before it: those all have x' <= x, and a tie in y at a smaller x dominates it.
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut lowest = f64::INFINITY;
    for (x, y) in sorted {
        if out.is_empty() || y < lowest {
            out.push((x, y));
            lowest = y;
        }
    }
    out
}

/// Parameters in scaled units (`a` multiplies `(x / x0)^(-alpha)`), with their RSS.
#[derive(Clone, Copy, Debug)]
struct Scaled {
    a: f64,
    alpha: f64,
    c: f64,
    rss: f64,
}

impl Scaled {
    /// Lower RSS wins; on a tie (flat data fits equally at every alpha) the alpha nearer
    /// 0, the least committal exponent.
    fn better_than(&self, other: &Scaled) -> bool {
        self.rss < other.rss || (self.rss == other.rss && self.alpha.abs() < other.alpha.abs())
    }
}

struct Problem<'a> {
    /// `ln(x / x0)`, which sums to 0.
    t: Vec<f64>,
    y: &'a [f64],
    y_mean: f64,
    ln_x0: f64,
    c_lo: f64,
    c_hi: f64,
}

impl<'a> Problem<'a> {
    fn new(xs: &[f64], ys: &'a [f64]) -> Self {
        let n = xs.len() as f64;
        let ln_x: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
        let ln_x0 = ln_x.iter().sum::<f64>() / n;
        let c_hi = ys.iter().copied().fold(f64::INFINITY, f64::min);
        // The floor at 0 is the cross-entropy floor; data going below 0 is not a loss, and
        // a floor above its minimum would leave no room for l_inf at all.
        let c_lo = if c_hi >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
        Problem {
            t: ln_x.iter().map(|l| l - ln_x0).collect(),
            y: ys,
            y_mean: ys.iter().sum::<f64>() / n,
            ln_x0,
            c_lo,
            c_hi,
        }
    }

    fn basis(&self, alpha: f64) -> Vec<f64> {
        self.t.iter().map(|t| (-alpha * t).exp()).collect()
    }

    fn rss(&self, a: f64, alpha: f64, c: f64) -> f64 {
        let rss: f64 = self
            .t
            .iter()
            .zip(self.y)
            .map(|(t, y)| (y - a * (-alpha * t).exp() - c).powi(2))
            .sum();
        // An overflowing basis must lose every comparison, not poison them with NaN.
        if rss.is_finite() {
            rss
        } else {
            f64::INFINITY
        }
    }

    /// The best `a` and `c` for a fixed `alpha`: linear least squares in `(a, c)` with `c`
    /// clamped to its bounds. The objective is a convex quadratic, so its minimum over `c`
    /// alone is convex too, and clamping the free optimum is the constrained optimum.
    fn profile(&self, alpha: f64) -> Scaled {
        let f = self.basis(alpha);
        let n = f.len() as f64;
        let f_mean = f.iter().sum::<f64>() / n;
        let (mut sff, mut sfy) = (0.0, 0.0);
        for (fi, yi) in f.iter().zip(self.y) {
            let df = fi - f_mean;
            sff += df * df;
            sfy += df * (yi - self.y_mean);
        }
        // Centred sums keep the slope accurate when f is large next to its spread. When f
        // is constant (alpha = 0) a and c are not separately identified; any split of the
        // level is as good, and a = 0 is the one that stays finite.
        let a_free = if sff > 0.0 { sfy / sff } else { 0.0 };
        let c_free = self.y_mean - a_free * f_mean;
        let (a, c) = if (self.c_lo..=self.c_hi).contains(&c_free) {
            (a_free, c_free)
        } else {
            let c = c_free.clamp(self.c_lo, self.c_hi);
            let sf2: f64 = f.iter().map(|v| v * v).sum();
            let sfr: f64 = f.iter().zip(self.y).map(|(fi, yi)| fi * (yi - c)).sum();
            let a = if sf2 > 0.0 && sf2.is_finite() {
                sfr / sf2
            } else {
                0.0
            };
            (a, c)
        };
        let rss = if a.is_finite() && c.is_finite() {
            self.rss(a, alpha, c)
        } else {
            f64::INFINITY
        };
        Scaled { a, alpha, c, rss }
    }

    /// The profiled RSS as a function of alpha alone: grid, then golden section around the
    /// best grid point.
    fn search_alpha(&self) -> Scaled {
        let step = (ALPHA_MAX - ALPHA_MIN) / ALPHA_GRID_STEPS as f64;
        let mut best = self.profile(ALPHA_MIN);
        for k in 1..=ALPHA_GRID_STEPS {
            let candidate = self.profile(ALPHA_MIN + step * k as f64);
            if candidate.better_than(&best) {
                best = candidate;
            }
        }
        let lo = (best.alpha - step).max(ALPHA_MIN);
        let hi = (best.alpha + step).min(ALPHA_MAX);
        self.golden_section(lo, hi, best)
    }

    /// Golden-section search for the minimum of the profiled RSS on `[lo, hi]`; returns the
    /// best point evaluated, `start` included, so it can never do worse than the grid.
    fn golden_section(&self, mut lo: f64, mut hi: f64, start: Scaled) -> Scaled {
        let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
        let mut best = start;
        let mut left = self.profile(hi - inv_phi * (hi - lo));
        let mut right = self.profile(lo + inv_phi * (hi - lo));
        for _ in 0..200 {
            for p in [left, right] {
                if p.better_than(&best) {
                    best = p;
                }
            }
            if hi - lo <= 1e-13 * (1.0 + lo.abs().max(hi.abs())) {
                break;
            }
            if left.rss <= right.rss {
                hi = right.alpha;
                right = left;
                left = self.profile(hi - inv_phi * (hi - lo));
            } else {
                lo = left.alpha;
                left = right;
                right = self.profile(lo + inv_phi * (hi - lo));
            }
        }
        best
    }

    /// `J^T J` and `J^T r` at `p`, for the model `a f + c` with `f = exp(-alpha t)`.
    fn normal_equations(&self, p: &Scaled) -> ([[f64; 3]; 3], [f64; 3]) {
        let mut jtj = [[0.0; 3]; 3];
        let mut jtr = [0.0; 3];
        for (t, y) in self.t.iter().zip(self.y) {
            let f = (-p.alpha * t).exp();
            let row = [f, -p.a * f * t, 1.0];
            let r = y - p.a * f - p.c;
            for (i, ri) in row.iter().enumerate() {
                jtr[i] += ri * r;
                for (j, rj) in row.iter().enumerate() {
                    jtj[i][j] += ri * rj;
                }
            }
        }
        (jtj, jtr)
    }

    /// Levenberg-Marquardt on all three parameters. The profile search leaves `alpha` only
    /// as exact as golden section can resolve a flat minimum; this tightens it. Bounds are
    /// kept by projecting each step, and a step is taken only when it lowers the RSS.
    fn polish(&self, start: Scaled) -> Scaled {
        let mut p = start;
        let mut lambda = 1e-3;
        for _ in 0..100 {
            if p.rss == 0.0 || !p.rss.is_finite() {
                break;
            }
            let (jtj, jtr) = self.normal_equations(&p);
            let mut damped = jtj;
            for (i, row) in damped.iter_mut().enumerate() {
                row[i] += lambda * jtj[i][i];
            }
            let Some(inv) = inverse_sym3(&damped) else {
                break;
            };
            let step = mat_vec(&inv, &jtr);
            let a = p.a + step[0];
            let alpha = (p.alpha + step[1]).clamp(ALPHA_MIN, ALPHA_MAX);
            let c = (p.c + step[2]).clamp(self.c_lo, self.c_hi);
            let rss = self.rss(a, alpha, c);
            if rss < p.rss {
                let converged = p.rss - rss <= 1e-14 * p.rss;
                p = Scaled { a, alpha, c, rss };
                lambda = (lambda / 10.0).max(1e-12);
                if converged {
                    break;
                }
            } else {
                lambda *= 10.0;
                if lambda > 1e10 {
                    break;
                }
            }
        }
        p
    }

    /// `s^2 (J^T J)^-1` in scaled units, or `None` when it is not estimable.
    fn scaled_covariance(&self, p: &Scaled) -> Option<[[f64; 3]; 3]> {
        let n = self.t.len();
        if n <= 3 || !p.rss.is_finite() {
            return None;
        }
        let (jtj, _) = self.normal_equations(p);
        let inv = inverse_sym3(&jtj)?;
        let s2 = p.rss / (n - 3) as f64;
        Some(inv.map(|row| row.map(|v| v * s2)))
    }
}

/// Carries a covariance from scaled `(a', alpha, c)` to original `(a, alpha, c)`, where
/// `a = a' * x0^alpha`: `Sigma = T Sigma' T^T` with `T` the Jacobian of that map
/// (`da/da' = x0^alpha`, `da/dalpha = a ln x0`).
fn to_original_units(cov: &[[f64; 3]; 3], a: f64, scale: f64, ln_x0: f64) -> [[f64; 3]; 3] {
    let t = [[scale, a * ln_x0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut out = [[0.0; 3]; 3];
    for (i, out_row) in out.iter_mut().enumerate() {
        for (j, out_ij) in out_row.iter_mut().enumerate() {
            *out_ij = (0..3)
                .flat_map(|k| (0..3).map(move |l| (k, l)))
                .map(|(k, l)| t[i][k] * cov[k][l] * t[j][l])
                .sum();
        }
    }
    out
}

/// Inverse of a symmetric positive semi-definite 3x3 matrix, `None` when it is singular
/// to working precision. The matrix is first scaled to unit diagonal, because the columns
/// of a power-law Jacobian differ by orders of magnitude and a raw determinant would say
/// nothing about conditioning; on the scaled matrix a determinant near 0 does.
fn inverse_sym3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let d = [m[0][0].sqrt(), m[1][1].sqrt(), m[2][2].sqrt()];
    if d.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return None;
    }
    let s: [[f64; 3]; 3] =
        std::array::from_fn(|i| std::array::from_fn(|j| m[i][j] / (d[i] * d[j])));
    let cof = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        s[r0][c0] * s[r1][c1] - s[r0][c1] * s[r1][c0]
    };
    let det = s[0][0] * cof(0, 0) + s[0][1] * cof(0, 1) + s[0][2] * cof(0, 2);
    // A unit-diagonal PSD matrix has det in [0, 1]; below this the inverse would carry
    // more rounding error than signal.
    if det.is_nan() || det <= 1e-12 {
        return None;
    }
    // The cyclic cofactors above already carry their signs; the inverse is their
    // transpose over det (equal to them here, by symmetry), undone for the scaling.
    Some(std::array::from_fn(|i| {
        std::array::from_fn(|j| cof(j, i) / det / (d[i] * d[j]))
    }))
}

fn mat_vec(m: &[[f64; 3]; 3], v: &[f64; 3]) -> [f64; 3] {
    m.map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
}

fn quadratic_form(m: &[[f64; 3]; 3], g: &[f64; 3]) -> f64 {
    g.iter().zip(mat_vec(m, g)).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn law(a: f64, alpha: f64, l_inf: f64, x: f64) -> f64 {
        a * x.powf(-alpha) + l_inf
    }

    fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
        let rel = ((got - want) / want).abs();
        assert!(
            rel <= tol,
            "{what}: got {got}, want {want} (relative error {rel:e})"
        );
    }

    const PARAM_XS: [f64; 6] = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6];

    #[test]
    fn recovers_exact_parameter_scaling_law() {
        let ys: Vec<f64> = PARAM_XS.iter().map(|&x| law(50.0, 0.3, 2.0, x)).collect();
        let fit = fit_power_law(&PARAM_XS, &ys).expect("valid input");
        assert_rel(fit.a, 50.0, 1e-3, "a");
        assert_rel(fit.alpha, 0.3, 1e-3, "alpha");
        assert_rel(fit.l_inf, 2.0, 1e-3, "l_inf");
        assert!(fit.r2 > 0.9999, "r2 = {}", fit.r2);
        assert_eq!(fit.points, 6);
        assert_rel(
            fit.predict(1e7),
            law(50.0, 0.3, 2.0, 1e7),
            1e-6,
            "predict(1e7)",
        );
    }

    #[test]
    fn recovers_exact_compute_scaling_law() {
        // Losses from about 5.9 at 1e11 down to about 3.2 at 1e16.
        let (a, alpha, l_inf) = (50.0, 0.1, 1.9);
        let xs = [1e11, 1e12, 1e13, 1e14, 1e15, 1e16];
        let ys: Vec<f64> = xs.iter().map(|&x| law(a, alpha, l_inf, x)).collect();
        assert!(ys.iter().all(|y| (2.0..6.0).contains(y)), "{ys:?}");
        let fit = fit_power_law(&xs, &ys).expect("valid input");
        assert_rel(fit.a, a, 1e-3, "a");
        assert_rel(fit.alpha, alpha, 1e-3, "alpha");
        assert_rel(fit.l_inf, l_inf, 1e-3, "l_inf");
        assert!(fit.r2 > 0.9999, "r2 = {}", fit.r2);
        assert_rel(
            fit.predict(1e17),
            law(a, alpha, l_inf, 1e17),
            1e-6,
            "predict(1e17)",
        );
    }

    #[test]
    fn noisy_fit_brackets_truth_with_standard_errors() {
        let (a, alpha, l_inf) = (50.0, 0.3, 2.0);
        // Fixed +-1% multiplicative offsets stand in for run-to-run noise.
        let noise = [0.008, -0.010, 0.005, -0.006, 0.010, -0.007];
        let ys: Vec<f64> = PARAM_XS
            .iter()
            .zip(noise)
            .map(|(&x, e)| law(a, alpha, l_inf, x) * (1.0 + e))
            .collect();
        let fit = fit_power_law(&PARAM_XS, &ys).expect("valid input");
        let (a_se, alpha_se, l_inf_se) = match (fit.a_se, fit.alpha_se, fit.l_inf_se) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            other => panic!("standard errors missing: {other:?}"),
        };
        for (name, got, want, se) in [
            ("a", fit.a, a, a_se),
            ("alpha", fit.alpha, alpha, alpha_se),
            ("l_inf", fit.l_inf, l_inf, l_inf_se),
        ] {
            assert!(se > 0.0 && se.is_finite(), "{name}: se = {se}");
            assert!(
                (got - want).abs() <= 3.0 * se,
                "{name}: {got} +- {se} misses {want}"
            );
        }
        assert!(fit.r2 > 0.99 && fit.r2 < 1.0, "r2 = {}", fit.r2);
        for x in [1e4, 1e6, 1e8] {
            let se = fit.predict_se(x).expect("covariance known");
            assert!(se > 0.0 && se.is_finite(), "predict_se({x}) = {se}");
        }
        // Extrapolation is less certain than interpolation.
        assert!(fit.predict_se(1e9) > fit.predict_se(1e5));
    }

    #[test]
    fn optimum_and_covariance_agree_with_direct_computation() {
        // Checked in original units, independently of the scaled internals.
        let noise = [0.008, -0.010, 0.005, -0.006, 0.010, -0.007];
        let ys: Vec<f64> = PARAM_XS
            .iter()
            .zip(noise)
            .map(|(&x, e)| law(50.0, 0.3, 2.0, x) * (1.0 + e))
            .collect();
        let fit = fit_power_law(&PARAM_XS, &ys).expect("valid input");
        let params = [fit.a, fit.alpha, fit.l_inf];
        let rss = |p: [f64; 3]| -> f64 {
            PARAM_XS
                .iter()
                .zip(&ys)
                .map(|(&x, y)| (y - law(p[0], p[1], p[2], x)).powi(2))
                .sum()
        };
        assert_rel(rss(params), fit.rss, 1e-9, "rss");
        // A local minimum: no small move of any one parameter lowers the RSS.
        for i in 0..3 {
            for sign in [-1.0, 1.0] {
                let mut p = params;
                p[i] += sign * 1e-4 * p[i].abs();
                assert!(rss(p) >= fit.rss, "moving parameter {i} lowers the RSS");
            }
        }
        // covariance * (J^T J / s^2) = I, with J by central differences.
        let cov = fit.covariance.expect("covariance known");
        let s2 = fit.rss / 3.0;
        let jacobian: Vec<[f64; 3]> = PARAM_XS
            .iter()
            .map(|&x| {
                std::array::from_fn(|i| {
                    let h = 1e-6 * params[i].abs();
                    let (mut up, mut down) = (params, params);
                    up[i] += h;
                    down[i] -= h;
                    (law(up[0], up[1], up[2], x) - law(down[0], down[1], down[2], x)) / (2.0 * h)
                })
            })
            .collect();
        for (i, cov_row) in cov.iter().enumerate() {
            for j in 0..3 {
                let product: f64 = cov_row
                    .iter()
                    .enumerate()
                    .map(|(k, cov_ik)| {
                        let jtj_kj: f64 = jacobian.iter().map(|row| row[k] * row[j]).sum();
                        cov_ik * jtj_kj / s2
                    })
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((product - want).abs() < 1e-4, "({i}, {j}): {product}");
            }
        }
        // The delta method at one x, by hand.
        let x: f64 = 1e8;
        let g = [
            x.powf(-fit.alpha),
            -fit.a * x.powf(-fit.alpha) * x.ln(),
            1.0,
        ];
        let var: f64 = (0..3)
            .flat_map(|i| (0..3).map(move |j| (i, j)))
            .map(|(i, j)| g[i] * cov[i][j] * g[j])
            .sum();
        let se = fit.predict_se(x).expect("covariance known");
        assert_rel(se, var.sqrt(), 1e-6, "predict_se");
    }

    #[test]
    fn rejects_invalid_input() {
        assert!(matches!(
            fit_power_law(&[1.0, 2.0], &[3.0, 2.0]),
            Err(FitError::TooFewPoints(2))
        ));
        assert!(matches!(
            fit_power_law(&[1.0, 2.0, 3.0], &[3.0, 2.0]),
            Err(FitError::LengthMismatch { xs: 3, ys: 2 })
        ));
        assert!(matches!(
            fit_power_law(&[1.0, 0.0, 3.0], &[3.0, 2.0, 1.0]),
            Err(FitError::InvalidX { index: 1, .. })
        ));
        assert!(matches!(
            fit_power_law(&[1.0, 2.0, -3.0], &[3.0, 2.0, 1.0]),
            Err(FitError::InvalidX { index: 2, .. })
        ));
        assert!(matches!(
            fit_power_law(&[1.0, f64::INFINITY, 3.0], &[3.0, 2.0, 1.0]),
            Err(FitError::InvalidX { index: 1, .. })
        ));
        assert!(matches!(
            fit_power_law(&[1.0, 2.0, 3.0], &[3.0, f64::NAN, 1.0]),
            Err(FitError::InvalidY { index: 1, .. })
        ));
        assert!(matches!(
            fit_power_law(&[1.0, 2.0, 2.0, 1.0], &[3.0, 2.0, 2.0, 3.0]),
            Err(FitError::TooFewDistinctX(2))
        ));
        let message = FitError::TooFewPoints(2).to_string();
        assert!(message.contains("at least 3 points"), "{message}");
    }

    #[test]
    fn flat_data_fits_with_finite_numbers() {
        let ys = [3.0; 6];
        let fit = fit_power_law(&PARAM_XS, &ys).expect("flat data is valid");
        for v in [fit.a, fit.alpha, fit.l_inf, fit.r2, fit.rss] {
            assert!(v.is_finite(), "{fit:?}");
        }
        assert!(fit.r2 <= 0.0 + 1e-12);
        assert!((fit.predict(1e8) - 3.0).abs() < 1e-9, "{fit:?}");
    }

    #[test]
    fn increasing_and_three_point_data_still_fit() {
        let ys: Vec<f64> = PARAM_XS.iter().map(|x| 2.0 + 0.1 * x.log10()).collect();
        let fit = fit_power_law(&PARAM_XS, &ys).expect("increasing data is valid");
        assert!(fit.alpha <= 0.0, "{fit:?}");
        assert!(fit.rss.is_finite() && fit.l_inf >= 0.0, "{fit:?}");

        // Exactly determined: a fit, but no standard errors (no residual degrees of freedom).
        let xs = [1e4, 1e5, 1e6];
        let ys: Vec<f64> = xs.iter().map(|&x| law(50.0, 0.3, 2.0, x)).collect();
        let fit = fit_power_law(&xs, &ys).expect("3 points are enough");
        assert_rel(fit.alpha, 0.3, 1e-3, "alpha from 3 points");
        assert!(fit.a_se.is_none() && fit.predict_se(1e7).is_none());
    }

    #[test]
    fn l_inf_stops_at_zero() {
        // A pure power law with no floor: the best l_inf is 0, on the boundary.
        let ys: Vec<f64> = PARAM_XS.iter().map(|&x| law(50.0, 0.3, 0.0, x)).collect();
        let fit = fit_power_law(&PARAM_XS, &ys).expect("valid input");
        assert!(fit.l_inf.abs() < 1e-9, "{fit:?}");
        assert_rel(fit.alpha, 0.3, 1e-3, "alpha");
    }

    /// The frontier by its definition, one pair at a time.
    fn brute_force_frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|&(x, y)| {
                !points
                    .iter()
                    .any(|&(x2, y2)| x2 <= x && y2 <= y && (x2 < x || y2 < y))
            })
            .collect();
        out.sort_by(|p, q| p.0.total_cmp(&q.0));
        out.dedup();
        out
    }

    #[test]
    fn frontier_is_the_lower_envelope() {
        // Three loss curves: the small model is best at low compute, the large one at high.
        let small = [(1.0, 5.0), (2.0, 4.0), (4.0, 3.5), (8.0, 3.3), (16.0, 3.2)];
        let medium = [(2.0, 6.0), (4.0, 4.2), (8.0, 3.4), (16.0, 3.0), (32.0, 2.8)];
        let large = [
            (4.0, 7.0),
            (8.0, 4.5),
            (16.0, 3.1),
            (32.0, 2.7),
            (64.0, 2.5),
        ];
        // Interleaved out of order, with an exact duplicate of a frontier point and a
        // later point that only ties its loss.
        let mut points: Vec<(f64, f64)> = Vec::new();
        for i in (0..5).rev() {
            points.extend([large[i], small[i], medium[i]]);
        }
        points.extend([(16.0, 3.0), (20.0, 3.0)]);
        let want = vec![
            (1.0, 5.0),
            (2.0, 4.0),
            (4.0, 3.5),
            (8.0, 3.3),
            (16.0, 3.0),
            (32.0, 2.7),
            (64.0, 2.5),
        ];
        assert_eq!(frontier(&points), want);
        assert_eq!(brute_force_frontier(&points), want);
        assert!(frontier(&[]).is_empty());
    }

    #[test]
    fn frontier_matches_definition_on_crossing_power_curves() {
        let curves = [(30.0, 0.5, 3.0), (60.0, 0.45, 2.4), (120.0, 0.4, 2.0)];
        let mut points = Vec::new();
        for (k, &(a, alpha, l_inf)) in curves.iter().enumerate() {
            for i in 0..20 {
                let x = 10f64.powf(2.0 + 0.25 * (i + 2 * k) as f64);
                points.push((x, law(a, alpha, l_inf, x)));
            }
        }
        let got = frontier(&points);
        assert_eq!(got, brute_force_frontier(&points));
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1));
        // Every curve contributes: they cross.
        for &(a, alpha, l_inf) in &curves {
            assert!(got.iter().any(|&(x, y)| y == law(a, alpha, l_inf, x)));
        }
    }
}
