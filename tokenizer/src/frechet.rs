//! The Fréchet distance between two sets of image features, each summarised by a Gaussian
//! (mean and covariance): the statistic of FID (Heusel et al., 2017) and of FD-DINOv2 (Stein et
//! al., 2023), on any features ([`crate::fd_dinov2`] supplies DINOv2's).
//!
//! `FD = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})`, with the conventions of
//! pytorch-fid and clean-fid so that their numbers and ours agree: covariances **unbiased**
//! (divisor `n - 1`, numpy's `np.cov(rowvar=False)`), everything in f64 whatever the features'
//! precision. pytorch-fid takes `Tr sqrtm(S_a S_b)` of a non-symmetric product (and drops an
//! imaginary part); here it is the sum of the square roots of the eigenvalues of the symmetric
//! PSD matrix `sqrt(S_a) S_b sqrt(S_a)` (the same eigenvalues, from a symmetric eigensolver that
//! stays real and stable when the covariances are singular, as they are whenever a set has fewer
//! images than the feature width). Eigenvalues at or below the solver's rounding level
//! (`width * f64::EPSILON * the largest`), negative ones included, count as 0: each null
//! direction of a singular covariance would otherwise add the square root of rounding noise
//! (`~1e-7` relative) to the trace, so that a set would not be at distance 0 from itself.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{Result, TokenizerError};

/// The widest feature vector accepted: its covariance is `width^2` f64s (128 MiB at 4096), and
/// the eigendecompositions cost `width^3`.
pub const MAX_WIDTH: usize = 4096;

/// The Gaussian summary of one set of feature vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    n: usize,
    mean: DVector<f64>,
    /// Unbiased covariance, `width x width`.
    cov: DMatrix<f64>,
}

impl FeatureStats {
    /// Mean and unbiased covariance of `features` (one vector per image). Needs at least two
    /// vectors (the unbiased covariance of one is undefined), all of one width in
    /// `1..=`[`MAX_WIDTH`], with finite values.
    pub fn from_features(features: &[Vec<f32>]) -> Result<Self> {
        let n = features.len();
        if n < 2 {
            return Err(invalid(format!(
                "a Fréchet distance needs at least 2 feature vectors a set, got {n}"
            )));
        }
        let d = features[0].len();
        if d == 0 || d > MAX_WIDTH {
            return Err(invalid(format!(
                "feature width {d} is outside 1..={MAX_WIDTH}"
            )));
        }
        if let Some((i, f)) = features.iter().enumerate().find(|(_, f)| f.len() != d) {
            return Err(invalid(format!(
                "feature vector {i} has width {}, the first has {d}",
                f.len()
            )));
        }
        if let Some(i) = features
            .iter()
            .position(|f| f.iter().any(|x| !x.is_finite()))
        {
            return Err(invalid(format!(
                "feature vector {i} holds a value that is not finite"
            )));
        }
        let x = DMatrix::<f64>::from_fn(n, d, |i, j| f64::from(features[i][j]));
        let mean = DVector::<f64>::from_fn(d, |j, _| x.column(j).sum() / n as f64);
        let centred = DMatrix::<f64>::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
        let cov = centred.tr_mul(&centred) / (n - 1) as f64;
        Ok(Self { n, mean, cov })
    }

    /// How many feature vectors the statistics summarise.
    pub fn count(&self) -> usize {
        self.n
    }

    /// The feature width.
    pub fn width(&self) -> usize {
        self.mean.len()
    }

    pub fn mean(&self) -> &[f64] {
        self.mean.as_slice()
    }

    /// `Tr(S)`: the total variance.
    pub fn trace(&self) -> f64 {
        self.cov.trace()
    }
}

/// The Fréchet distance between the Gaussians of `a` and `b` (see the module's documentation);
/// an error when their widths differ. Non-negative up to rounding: tiny negative values from
/// cancellation between identical sets are returned as they come, not clamped.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.width() != b.width() {
        return Err(invalid(format!(
            "feature widths differ: {} and {}",
            a.width(),
            b.width()
        )));
    }
    let diff = &a.mean - &b.mean;
    let fd = diff.dot(&diff) + a.trace() + b.trace() - 2.0 * trace_sqrt_product(&a.cov, &b.cov);
    if !fd.is_finite() {
        return Err(invalid(
            "the Fréchet distance is not finite (features too large?)".into(),
        ));
    }
    Ok(fd)
}

/// `Tr((S_a S_b)^{1/2})` for symmetric PSD `S_a`, `S_b`: the sum of the square roots of the
/// eigenvalues of `sqrt(S_a) S_b sqrt(S_a)`, which is similar to `S_a S_b` but symmetric.
fn trace_sqrt_product(sa: &DMatrix<f64>, sb: &DMatrix<f64>) -> f64 {
    let root = psd_sqrt(sa);
    let m = &root * sb * &root;
    // symmetric up to rounding; the solver reads one triangle, so make both the same
    let m = (&m + m.transpose()) * 0.5;
    clamped_sqrt(&SymmetricEigen::new(m).eigenvalues).sum()
}

/// The PSD square root `V diag(sqrt(l)) V^T` of a symmetric matrix, its eigenvalues at the
/// rounding level taken as 0.
fn psd_sqrt(s: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(s.clone());
    let roots = clamped_sqrt(&eig.eigenvalues);
    let scaled = DMatrix::from_fn(s.nrows(), s.ncols(), |i, j| {
        eig.eigenvectors[(i, j)] * roots[j]
    });
    &scaled * eig.eigenvectors.transpose()
}

/// The square roots of a symmetric matrix's `eigenvalues`, 0 for those not above their
/// rounding level.
fn clamped_sqrt(eigenvalues: &DVector<f64>) -> DVector<f64> {
    let largest = eigenvalues.iter().fold(0.0f64, |m, &x| m.max(x.abs()));
    let floor = largest * eigenvalues.len() as f64 * f64::EPSILON;
    eigenvalues.map(|l| if l > floor { l.sqrt() } else { 0.0 })
}

fn invalid(msg: String) -> TokenizerError {
    TokenizerError::Invalid(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[&[f32]]) -> Vec<Vec<f32>> {
        rows.iter().map(|r| r.to_vec()).collect()
    }

    #[test]
    fn statistics_are_the_mean_and_the_unbiased_covariance() -> Result<()> {
        let s = FeatureStats::from_features(&set(&[&[1.0, 2.0], &[3.0, 6.0], &[5.0, 4.0]]))?;
        assert_eq!((s.count(), s.width()), (3, 2));
        assert_eq!(s.mean(), [3.0, 4.0]);
        // deviations (-2,-2), (0,2), (2,0): variances 8/2 and 8/2, covariance 4/2
        assert_eq!(s.cov, DMatrix::from_row_slice(2, 2, &[4.0, 2.0, 2.0, 4.0]));
        assert_eq!(s.trace(), 8.0);
        Ok(())
    }

    #[test]
    fn one_dimensional_gaussians_have_the_closed_form() -> Result<()> {
        // FD of N(m1, v1) and N(m2, v2) is (m1 - m2)^2 + (sqrt v1 - sqrt v2)^2
        let a = FeatureStats::from_features(&set(&[&[0.0], &[2.0]]))?; // mean 1, var 2
        let b = FeatureStats::from_features(&set(&[&[4.0], &[10.0], &[7.0]]))?; // mean 7, var 9
        let want = 36.0 + (2f64.sqrt() - 3.0).powi(2);
        let got = frechet_distance(&a, &b)?;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((frechet_distance(&b, &a)? - want).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn a_set_is_at_distance_zero_from_itself_even_when_singular() -> Result<()> {
        // 3 vectors of width 5: a covariance of rank 2
        let rows = set(&[
            &[1.0, -2.0, 0.5, 3.0, 0.0],
            &[0.0, 1.0, 2.5, -1.0, 4.0],
            &[2.0, 0.0, -0.5, 1.0, 1.0],
        ]);
        let s = FeatureStats::from_features(&rows)?;
        let fd = frechet_distance(&s, &s)?;
        assert!(fd.abs() < 1e-9, "{fd}");
        let shifted: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| r.iter().map(|x| x + 1.0).collect())
            .collect();
        // the same covariance, the mean moved by 1 in each of 5 dimensions
        let fd = frechet_distance(&s, &FeatureStats::from_features(&shifted)?)?;
        assert!((fd - 5.0).abs() < 1e-9, "{fd}");
        Ok(())
    }

    #[test]
    fn bad_inputs_are_refused_with_the_reason() {
        let err = |rows: Vec<Vec<f32>>| {
            FeatureStats::from_features(&rows)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(err(vec![]).contains("at least 2"));
        assert!(err(set(&[&[1.0, 2.0]])).contains("at least 2 feature vectors a set, got 1"));
        assert!(err(set(&[&[], &[]])).contains("width 0"));
        assert!(err(vec![vec![0.0; MAX_WIDTH + 1]; 2]).contains("width 4097"));
        assert!(err(set(&[&[1.0, 2.0], &[3.0]])).contains("vector 1 has width 1"));
        assert!(err(set(&[&[1.0], &[f32::NAN]])).contains("not finite"));
        assert!(err(set(&[&[f32::INFINITY], &[1.0]])).contains("vector 0"));
        let a = FeatureStats::from_features(&set(&[&[1.0], &[2.0]])).unwrap();
        let b = FeatureStats::from_features(&set(&[&[1.0, 0.0], &[2.0, 1.0]])).unwrap();
        let e = frechet_distance(&a, &b).unwrap_err().to_string();
        assert!(e.contains("widths differ: 1 and 2"), "{e}");
    }
}
