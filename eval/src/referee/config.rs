//! The referee's configuration: its architecture ([`RefereeConfig`]), how it is trained
//! ([`RefereeTrainConfig`]), and the TOML file holding both ([`RefereeFile`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// The referee's architecture: four stride-2 3x3 convolutions, global pooling, one linear
/// layer giving colour logits then shape logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefereeConfig {
    pub image_size: usize,
    pub channels: [usize; 4],
    /// How the last feature map becomes one vector.
    pub pool: Pool,
}

impl Default for RefereeConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            channels: [32, 64, 64, 128],
            pool: Pool::MeanMax,
        }
    }
}

/// Global pooling of the last feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The average over positions: a small shape's features are diluted by background.
    Mean,
    /// The maximum over positions: "is this part anywhere", whatever the shape's size.
    Max,
    /// Both, concatenated.
    MeanMax,
}

/// How the referee is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefereeTrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// Standard deviation of the Gaussian pixel noise added to training inputs (in the
    /// normalised [-1, 1] scale); each image draws its own level uniformly in `[0, noise_std]`.
    pub noise_std: f64,
    /// Show each training image under a random one of the 8 flips / quarter turns of the
    /// square: none changes a colour or which of circle, rectangle, triangle a shape is.
    pub flips: bool,
    /// Shift each training image by up to this many pixels each way (the uncovered border
    /// takes the background colour).
    pub max_shift: u32,
}

impl Default for RefereeTrainConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            batch_size: 64,
            lr: 2e-3,
            seed: 0,
            noise_std: 0.15,
            flips: true,
            max_shift: 4,
        }
    }
}

impl RefereeTrainConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let ok = self.steps > 0
            && self.batch_size > 0
            && self.lr.is_finite()
            && self.lr > 0.0
            && self.noise_std.is_finite()
            && self.noise_std >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(EvalError::Config(format!(
                "referee training: steps, batch_size and lr must be > 0 and noise_std >= 0 ({self:?})"
            )))
        }
    }
}

/// A referee config file (`configs/referee.toml`): `[model]` and `[train]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RefereeFile {
    pub model: RefereeConfig,
    pub train: RefereeTrainConfig,
}

impl RefereeFile {
    /// Reads and checks a referee TOML file; an unknown key is an error naming the file.
    pub(crate) fn from_toml_file(path: &Path) -> Result<Self> {
        let file: Self = vqrae_tokenizer::checkpoint::read_toml(path)?;
        if file.model.image_size == 0 || file.model.channels.contains(&0) {
            return Err(EvalError::Config(format!(
                "{}: image_size and channels must be > 0",
                path.display()
            )));
        }
        file.train
            .validate()
            .map_err(|e| EvalError::Config(format!("{}: {e}", path.display())))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_and_a_typo_is_an_error() -> anyhow::Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/referee.toml");
        let file = RefereeFile::from_toml_file(&path)?;
        assert_eq!(file.model.image_size, 64);
        let tmp = tempfile::tempdir()?;
        let bad = tmp.path().join("bad.toml");
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&bad, text.replace("max_shift = ", "max_shfit = "))?;
        let err = RefereeFile::from_toml_file(&bad).expect_err("unknown key");
        assert!(err.to_string().contains("max_shfit"), "{err}");
        std::fs::write(&bad, text.replace("batch_size = 64", "batch_size = 0"))?;
        assert!(RefereeFile::from_toml_file(&bad).is_err());
        Ok(())
    }
}
