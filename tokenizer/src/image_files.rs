//! A tokenizer checkpoint on image files (`vqrae tokenize`, `vqrae reconstruct`): the codes of
//! an image as the grid they tile, and its reconstruction written as PNG.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vqrae_data::image_io::{load_rgb, save_png};

use crate::checkpoint::CONFIG_FILE;
use crate::error::{Result, TokenizerError};
use crate::model::Vqrae;

/// The folder of a unified model directory (`vqrae-unified`) that holds its tokenizer; named
/// here because this crate sits below `vqrae-unified` and cannot ask it.
pub(crate) const UNIFIED_TOKENIZER_DIR: &str = "tokenizer";

/// The tokenizer checkpoint a `--model` directory names: the directory itself when it holds a
/// tokenizer's `config.json`, else its `tokenizer/` folder when that holds one (a unified model
/// directory such as `models/vqrae-easyvqa`, whose tokenizer the commands then use), else the
/// directory unchanged, so that loading it reports what is missing there.
pub fn tokenizer_dir(model: &Path) -> PathBuf {
    let nested = model.join(UNIFIED_TOKENIZER_DIR);
    if !model.join(CONFIG_FILE).is_file() && nested.join(CONFIG_FILE).is_file() {
        nested
    } else {
        model.to_path_buf()
    }
}

/// The codes of one image file and the shape of its continuous features. The fields are in
/// alphabetical order: the order of the command's JSON lines, which were `serde_json::json!`
/// objects (sorted keys) before this type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageCodes {
    /// One row of codes per grid row.
    pub codes: Vec<Vec<u32>>,
    /// Patch tokens by width.
    pub feature_shape: [usize; 2],
    /// Rows by columns.
    pub grid: [usize; 2],
    pub image: PathBuf,
}

/// Encodes the image file at `path`.
pub fn image_codes(model: &Vqrae, path: &Path) -> Result<ImageCodes> {
    let img = load_rgb(path)?;
    let enc = model.encode(&model.images_to_input(&[img])?)?;
    let (rows, cols) = enc.grid;
    let codes = enc
        .codes
        .squeeze(0)?
        .reshape((rows, cols))?
        .to_vec2::<u32>()?;
    let (_, n, d) = enc.features.dims3()?;
    Ok(ImageCodes {
        codes,
        feature_shape: [n, d],
        grid: [rows, cols],
        image: path.to_path_buf(),
    })
}

/// Encodes the image file at `image` to codes, decodes them and writes the result to `out` as
/// PNG.
pub fn reconstruct_file(model: &Vqrae, image: &Path, out: &Path) -> Result<()> {
    let img = load_rgb(image)?;
    let Some(rec) = model.reconstruct_images(&[img])?.into_iter().next() else {
        return Err(TokenizerError::Invalid(
            "the model returned no image".into(),
        ));
    };
    save_png(&rec, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn an_image_file_has_a_grid_of_codes_and_reconstructs_to_png() -> Result<()> {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny.toml");
        let cfg = crate::VqraeConfig::from_toml_file(&tiny)?;
        let (model, _) = Vqrae::init(&cfg, None, 3, &Device::Cpu)?;
        let dir = crate::runs::testing::tempdir()?;
        let img = dir.path().join("a.png");
        save_png(
            &image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 7])),
            &img,
        )?;
        let c = image_codes(&model, &img)?;
        let (gh, gw) = cfg.grid();
        assert_eq!(c.grid, [gh, gw]);
        assert_eq!(c.codes.len(), gh);
        assert!(c.codes.iter().all(|r| r.len() == gw));
        let k = cfg.quantizer.codebook_size as u32;
        assert!(c.codes.iter().flatten().all(|&code| code < k));
        assert_eq!(c.feature_shape[0], gh * gw);
        assert_eq!(image_codes(&model, &img)?, c, "the same codes again");
        let out = dir.path().join("rec.png");
        reconstruct_file(&model, &img, &out)?;
        let rec = load_rgb(&out)?;
        assert_eq!(
            rec.dimensions(),
            (cfg.image_size as u32, cfg.image_size as u32)
        );
        assert!(image_codes(&model, &dir.path().join("none.png")).is_err());
        Ok(())
    }

    #[test]
    fn a_unified_model_directory_names_its_tokenizer() -> Result<()> {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let unified = models.join("vqrae-easyvqa");
        assert_eq!(tokenizer_dir(&unified), unified.join("tokenizer"));
        let plain = models.join("tokenizer-easyvqa");
        assert_eq!(
            tokenizer_dir(&plain),
            plain,
            "a tokenizer directory is itself"
        );
        let dir = crate::runs::testing::tempdir()?;
        assert_eq!(
            tokenizer_dir(dir.path()),
            dir.path(),
            "nothing there: unchanged"
        );
        assert!(Vqrae::load(&tokenizer_dir(dir.path()), &Device::Cpu, DType::F32).is_err());
        // the shipped model's tokenizer encodes the shipped sample image
        let model = Vqrae::load(&tokenizer_dir(&unified), &Device::Cpu, DType::F32)?;
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/red-triangle.png");
        let c = image_codes(&model, &sample)?;
        assert_eq!(c.grid, [8, 8]);
        Ok(())
    }
}
