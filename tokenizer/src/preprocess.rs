//! Image preprocessing as the encoder architectures define it (Hugging Face's
//! `preprocessor_config.json`): resize, optional centre crop, normalise.

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::image_io::resize;
use vqrae_data::tensor::{images_to_tensor, Normalize};

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Resize to exactly this size (SigLIP).
    Exact { height: u32, width: u32 },
    /// Resize the shorter side, keeping the aspect ratio, then centre-crop (DINOv2: 256 then 224).
    ShortestEdgeCrop {
        shortest_edge: u32,
        crop_height: u32,
        crop_width: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub resize: Resize,
    pub normalize: Normalize,
}

impl Preprocess {
    /// The size of the images this preprocessing hands to the encoder, `(height, width)`.
    pub(crate) fn output_size(&self) -> (u32, u32) {
        match self.resize {
            Resize::Exact { height, width } => (height, width),
            Resize::ShortestEdgeCrop {
                crop_height,
                crop_width,
                ..
            } => (crop_height, crop_width),
        }
    }

    /// The same preprocessing at another square resolution (the crop ratio is kept).
    pub(crate) fn at_resolution(&self, res: u32) -> Self {
        let resize = match self.resize {
            Resize::Exact { .. } => Resize::Exact {
                height: res,
                width: res,
            },
            Resize::ShortestEdgeCrop {
                shortest_edge,
                crop_height,
                ..
            } => {
                let ratio = shortest_edge as f64 / crop_height.max(1) as f64;
                Resize::ShortestEdgeCrop {
                    shortest_edge: (res as f64 * ratio).round() as u32,
                    crop_height: res,
                    crop_width: res,
                }
            }
        };
        Self { resize, ..*self }
    }

    /// Resizes (and crops) one image. An image already at the output size is left untouched.
    pub(crate) fn apply(&self, img: &RgbImage) -> RgbImage {
        let (oh, ow) = self.output_size();
        if img.dimensions() == (ow, oh) {
            return img.clone();
        }
        match self.resize {
            Resize::Exact { height, width } => resize(img, width, height),
            Resize::ShortestEdgeCrop {
                shortest_edge,
                crop_height,
                crop_width,
            } => {
                let (w, h) = img.dimensions();
                let s = shortest_edge as f64 / w.min(h).max(1) as f64;
                let (nw, nh) = (
                    ((w as f64 * s).round() as u32).max(crop_width),
                    ((h as f64 * s).round() as u32).max(crop_height),
                );
                let big = resize(img, nw, nh);
                let (x, y) = ((nw - crop_width) / 2, (nh - crop_height) / 2);
                image::imageops::crop_imm(&big, x, y, crop_width, crop_height).to_image()
            }
        }
    }

    /// Preprocesses a batch into a normalised `(B, 3, H, W)` tensor.
    pub fn to_tensor(&self, images: &[RgbImage], device: &Device) -> Result<Tensor> {
        let ready: Vec<RgbImage> = images.iter().map(|i| self.apply(i)).collect();
        Ok(images_to_tensor(&ready, &self.normalize, device)?)
    }

    /// Reads HF's `preprocessor_config.json`, falling back to `default` for what it lacks.
    pub(crate) fn from_hf_json(v: &serde_json::Value, default: Preprocess) -> Preprocess {
        let triple = |key: &str| -> Option<[f32; 3]> {
            let a = v.get(key)?.as_array()?;
            let f: Vec<f32> = a
                .iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect();
            (f.len() == 3).then(|| [f[0], f[1], f[2]])
        };
        let normalize = Normalize {
            mean: triple("image_mean").unwrap_or(default.normalize.mean),
            std: triple("image_std").unwrap_or(default.normalize.std),
        };
        let dim = |obj: &serde_json::Value, key: &str| {
            obj.get(key).and_then(|x| x.as_u64()).map(|x| x as u32)
        };
        let size = v.get("size");
        let crop = v.get("crop_size");
        let do_crop = v
            .get("do_center_crop")
            .and_then(|x| x.as_bool())
            .unwrap_or(false);
        let resize = match (size, crop) {
            (Some(s), Some(c)) if do_crop && dim(s, "shortest_edge").is_some() => {
                Resize::ShortestEdgeCrop {
                    shortest_edge: dim(s, "shortest_edge").unwrap_or(256),
                    crop_height: dim(c, "height").unwrap_or(224),
                    crop_width: dim(c, "width").unwrap_or(224),
                }
            }
            (Some(s), _) if dim(s, "height").is_some() => Resize::Exact {
                height: dim(s, "height").unwrap_or(224),
                width: dim(s, "width").unwrap_or(224),
            },
            _ => default.resize,
        };
        Preprocess { resize, normalize }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_at_model_resolution_is_not_resized() {
        let p = Preprocess {
            resize: Resize::ShortestEdgeCrop {
                shortest_edge: 256,
                crop_height: 224,
                crop_width: 224,
            },
            normalize: Normalize::IMAGENET,
        };
        let img = RgbImage::from_fn(224, 224, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        });
        assert_eq!(p.apply(&img), img);
        let small = RgbImage::new(64, 48);
        assert_eq!(p.apply(&small).dimensions(), (224, 224));
    }

    #[test]
    fn reads_hf_preprocessor_configs() {
        let dino = serde_json::json!({"do_center_crop": true, "size": {"shortest_edge": 256},
            "crop_size": {"height": 224, "width": 224}, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225]});
        let fallback = Preprocess {
            resize: Resize::Exact {
                height: 1,
                width: 1,
            },
            normalize: Normalize::HALF,
        };
        let p = Preprocess::from_hf_json(&dino, fallback);
        assert_eq!(
            p.resize,
            Resize::ShortestEdgeCrop {
                shortest_edge: 256,
                crop_height: 224,
                crop_width: 224
            }
        );
        assert_eq!(p.normalize.std, [0.229, 0.224, 0.225]);
        let sig = serde_json::json!({"size": {"height": 256, "width": 256}, "image_mean": [0.5, 0.5, 0.5]});
        let p = Preprocess::from_hf_json(&sig, fallback);
        assert_eq!(
            p.resize,
            Resize::Exact {
                height: 256,
                width: 256
            }
        );
        assert_eq!(p.at_resolution(112).output_size(), (112, 112));
    }
}
