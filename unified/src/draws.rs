//! [`ImageModel`]: what text-to-image evaluation needs of a model that draws, whichever kind
//! it is: the from-scratch [`UnifiedModel`] or a LLaVA model on a pretrained LM trained to
//! generate ([`LlavaModel`]). [`load_image_model`] opens either kind of directory.

use std::path::Path;

use candle_core::{DType, Device};
use image::RgbImage;
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_tokenizer::Vqrae;

use crate::error::{Result, UnifiedError};
use crate::llava::model::{LlavaModel, LLAVA_FILE};
use crate::model::UnifiedModel;

/// A model that turns captions into images through a VQRAE tokenizer's codes.
pub trait ImageModel {
    /// One image per request, each from its own seed.
    fn generate(&self, requests: &[ImageRequest], cfg: &GenerationConfig) -> Result<Vec<RgbImage>>;

    /// The tokenizer whose codes it draws (what bounds its images: the scene ceiling).
    fn image_tokenizer(&self) -> Result<&Vqrae>;
}

impl ImageModel for UnifiedModel {
    fn generate(&self, requests: &[ImageRequest], cfg: &GenerationConfig) -> Result<Vec<RgbImage>> {
        UnifiedModel::generate(self, requests, cfg)
    }

    fn image_tokenizer(&self) -> Result<&Vqrae> {
        Ok(&self.tokenizer)
    }
}

impl ImageModel for LlavaModel {
    fn generate(&self, requests: &[ImageRequest], cfg: &GenerationConfig) -> Result<Vec<RgbImage>> {
        LlavaModel::generate(self, requests, cfg)
    }

    fn image_tokenizer(&self) -> Result<&Vqrae> {
        self.image.as_ref().map(|(t, _)| t).ok_or_else(|| {
            UnifiedError::Config("this LLaVA model was not trained to generate images".into())
        })
    }
}

/// The model in `dir`: a LLaVA directory (`llava.json`; its base and encoder found under
/// `models_root`, served dequantized) or a unified model directory (in `dtype`).
pub fn load_image_model(
    dir: &Path,
    models_root: &Path,
    device: &Device,
    dtype: DType,
) -> Result<Box<dyn ImageModel>> {
    if dir.join(LLAVA_FILE).is_file() {
        let m = LlavaModel::load(dir, models_root, Some(false), device)?;
        m.image_tokenizer()?;
        Ok(Box::new(m))
    } else {
        Ok(Box::new(UnifiedModel::load(dir, device, dtype)?))
    }
}
