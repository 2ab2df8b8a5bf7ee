//! A tokenizer checkpoint on image files (`vqrae tokenize`, `vqrae reconstruct`): the codes of
//! an image as the grid they tile, and its reconstruction written as PNG.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vqrae_data::image_io::{load_rgb, save_png};

use crate::error::{Result, TokenizerError};
use crate::model::Vqrae;

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
    use candle_core::Device;

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
}
