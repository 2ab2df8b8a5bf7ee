//! The continuous features of image files under a Hugging Face encoder, written as safetensors
//! (`vqrae features`): the last layer's patch tokens and its whole hidden state, for
//! comparison with the PyTorch reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use vqrae_data::image_io::load_rgb;
use vqrae_train::device::default_dtype;

use crate::encoder::load_hf_encoder;
use crate::error::{Result, TokenizerError};
use crate::model::check_resolution;

/// What [`export_features`] wrote. The fields are in alphabetical order: the order of the
/// command's JSON line, which was a `serde_json::json!` object (sorted keys) before this type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeaturesSummary {
    /// `dinov2`, `siglip` or `vit`.
    pub arch: &'static str,
    /// Shape of the `features` tensor: `(images, patch tokens, width)`.
    pub features: Vec<usize>,
    /// The patch grid, rows by columns.
    pub grid: [usize; 2],
    pub images: usize,
    /// The encoder's input size after preprocessing, height by width.
    pub input_size: [u32; 2],
    pub out: PathBuf,
}

/// Runs the encoder in `encoder_dir` on `images` (each with the architecture's own
/// preprocessing, at `resolution` when given: position embeddings are interpolated) and writes
/// `features` `(B, N, d)` (patch tokens) and `last_hidden_state` to `out` atomically.
pub fn export_features(
    encoder_dir: &Path,
    images: &[PathBuf],
    out: &Path,
    resolution: Option<u32>,
    device: &Device,
) -> Result<FeaturesSummary> {
    let dtype = default_dtype(device);
    let hf = load_hf_encoder(encoder_dir, device, dtype)?;
    let pre = match resolution {
        Some(r) => {
            check_resolution("--resolution", r as usize, hf.config.patch_size())
                .map_err(TokenizerError::Invalid)?;
            hf.preprocess.at_resolution(r)
        }
        None => hf.preprocess,
    };
    let images = images
        .iter()
        .map(|p| load_rgb(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let x = pre.to_tensor(&images, device)?.to_dtype(dtype)?;
    let hidden = hf.encoder.forward(&x, false)?;
    let prefix = hf.encoder.prefix_tokens();
    let n = hidden.dim(1)? - prefix;
    let features = hidden.narrow(1, prefix, n)?;
    let (h, w) = pre.output_size();
    let grid = hf.encoder.grid(h as usize, w as usize);
    let tensors: HashMap<String, Tensor> =
        [("features", &features), ("last_hidden_state", &hidden)]
            .into_iter()
            .map(|(name, t)| Ok((name.to_string(), t.to_dtype(DType::F32)?.contiguous()?)))
            .collect::<Result<_>>()?;
    vqrae_data::fs::write_atomic_with(out, |tmp| {
        candle_core::safetensors::save(&tensors, tmp).map_err(|e| TokenizerError::Checkpoint {
            path: out.to_path_buf(),
            msg: e.to_string(),
        })
    })?;
    Ok(FeaturesSummary {
        arch: hf.config.arch(),
        features: features.dims().to_vec(),
        grid: [grid.0, grid.1],
        images: images.len(),
        input_size: [h, w],
        out: out.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::testing::fixture;
    use vqrae_data::image_io::save_png;

    #[test]
    fn features_of_image_files_are_written_with_their_shapes() -> Result<()> {
        let dir = crate::runs::testing::tempdir()?;
        let img = dir.path().join("a.png");
        save_png(
            &image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90])),
            &img,
        )?;
        let out = dir.path().join("sub/f.safetensors");
        let s = export_features(
            &fixture("dinov2_tiny"),
            std::slice::from_ref(&img),
            &out,
            Some(64),
            &Device::Cpu,
        )?;
        // 64 px / patch 4 = 16x16 tokens after the class token
        assert_eq!(s.features, [1, 256, 32]);
        assert_eq!(
            (s.grid, s.input_size, s.arch),
            ([16, 16], [64, 64], "dinov2")
        );
        let t = candle_core::safetensors::load(&out, &Device::Cpu)?;
        assert_eq!(t["features"].dims(), [1, 256, 32]);
        assert_eq!(t["last_hidden_state"].dims(), [1, 257, 32]);
        // the JSON line keeps the keys in the order the command has always printed them
        let line = serde_json::to_string(&s).map_err(|source| TokenizerError::Config {
            path: out.clone(),
            source,
        })?;
        let at = |k: &str| line.find(&format!("\"{k}\"")).unwrap_or(usize::MAX);
        let keys = ["arch", "features", "grid", "images", "input_size", "out"];
        assert!(keys.windows(2).all(|w| at(w[0]) < at(w[1])), "{line}");
        // a resolution is a whole number of patches (4 px here) and at most 1024 px
        for (bad, why) in [
            (100_000, "1024"),
            (2048, "1024"),
            (63, "multiple of 4"),
            (0, "multiple"),
        ] {
            let r = export_features(
                &fixture("dinov2_tiny"),
                std::slice::from_ref(&img),
                &out,
                Some(bad),
                &Device::Cpu,
            );
            assert!(
                r.as_ref().is_err_and(|e| e.to_string().contains(why)),
                "{bad}: {:?}",
                r.map(|s| s.input_size)
            );
        }
        let missing = export_features(dir.path(), &[img], &out, None, &Device::Cpu);
        assert!(missing.is_err_and(|e| e.to_string().contains("config.json")));
        Ok(())
    }
}
