//! Images <-> candle tensors, channel-first, with per-channel normalisation.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Per-channel normalisation: a pixel `p` in 0..=255 becomes `(p / 255 - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics, what pretrained vision encoders (SigLIP aside) expect.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// Maps pixels to [-1, 1] (mean 0.5, std 0.5): SigLIP and most pixel decoders.
    pub const HALF: Normalize = Normalize {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    /// Leaves pixels in [0, 1].
    #[cfg(test)]
    pub(crate) const UNIT: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
}

/// Stacks images into a `(B, 3, H, W)` f32 tensor. All images must have the same size and
/// the slice must not be empty (there is no size to give an empty batch).
pub fn images_to_tensor(
    images: &[RgbImage],
    norm: &Normalize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let Some(first) = images.first() else {
        candle_core::bail!("images_to_tensor: no images");
    };
    let (w, h) = first.dimensions();
    if let Some((i, img)) = images
        .iter()
        .enumerate()
        .find(|(_, i)| i.dimensions() != (w, h))
    {
        candle_core::bail!(
            "images_to_tensor: image {i} is {}x{}, image 0 is {w}x{h}; resize them to one size",
            img.width(),
            img.height()
        );
    }
    let plane = (w as usize) * (h as usize);
    if plane == 0 {
        return Tensor::zeros(
            (images.len(), 3, h as usize, w as usize),
            DType::F32,
            device,
        );
    }
    // Precompute the 256 possible values per channel: exact same arithmetic for every pixel.
    let lut: Vec<[f32; 256]> = (0..3)
        .map(|c| std::array::from_fn(|p| (p as f32 / 255.0 - norm.mean[c]) / norm.std[c]))
        .collect();
    let mut data = vec![0f32; images.len() * 3 * plane];
    for (img, out) in images.iter().zip(data.chunks_exact_mut(3 * plane)) {
        for (k, px) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + k] = lut[c][px[c] as usize];
            }
        }
    }
    Tensor::from_vec(data, (images.len(), 3, h as usize, w as usize), device)
}

/// The inverse of [`images_to_tensor`]: accepts `(B, 3, H, W)` or `(3, H, W)` of any float
/// dtype on any device; values are de-normalised, clamped to [0, 255] and rounded.
pub fn tensor_to_images(t: &Tensor, norm: &Normalize) -> candle_core::Result<Vec<RgbImage>> {
    let t = match t.rank() {
        3 => t.unsqueeze(0)?,
        4 => t.clone(),
        r => candle_core::bail!(
            "tensor_to_images: expected (B,3,H,W) or (3,H,W), got rank {r} {:?}",
            t.shape()
        ),
    };
    let (b, c, h, w) = t.dims4()?;
    if c != 3 {
        candle_core::bail!(
            "tensor_to_images: expected 3 channels, got shape {:?}",
            t.shape()
        );
    }
    let width = u32::try_from(w).map_err(candle_core::Error::wrap)?;
    let height = u32::try_from(h).map_err(candle_core::Error::wrap)?;
    if h * w == 0 {
        return Ok(vec![RgbImage::new(width, height); b]);
    }
    let data = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let images = data
        .chunks_exact(3 * plane)
        .take(b)
        .map(|chunk| {
            RgbImage::from_fn(width, height, |x, y| {
                let k = y as usize * w + x as usize;
                image::Rgb(std::array::from_fn(|c| {
                    let v = (chunk[c * plane + k] * norm.std[c] + norm.mean[c]) * 255.0;
                    // NaN becomes 0 through the saturating cast.
                    v.round().clamp(0.0, 255.0) as u8
                }))
            })
        })
        .collect();
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_values_image() -> RgbImage {
        // Every value 0..=255 in every channel, in different positions per channel.
        RgbImage::from_fn(16, 16, |x, y| {
            let v = (y * 16 + x) as u8;
            image::Rgb([v, v.wrapping_mul(7), 255 - v])
        })
    }

    #[test]
    fn round_trip_is_exact_for_every_norm_and_dtype() {
        let imgs = vec![
            all_values_image(),
            RgbImage::from_pixel(16, 16, image::Rgb([1, 128, 254])),
        ];
        for norm in [Normalize::IMAGENET, Normalize::HALF, Normalize::UNIT] {
            let t = images_to_tensor(&imgs, &norm, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), &[2, 3, 16, 16]);
            assert_eq!(t.dtype(), DType::F32);
            assert_eq!(tensor_to_images(&t, &norm).unwrap(), imgs);
            // f16 has 11 significant bits: still exact after rounding to 8-bit pixels.
            let t16 = t.to_dtype(DType::F16).unwrap();
            assert_eq!(tensor_to_images(&t16, &norm).unwrap(), imgs);
            // bf16 has 8: within one level.
            let tb = t.to_dtype(DType::BF16).unwrap();
            for (a, b) in tensor_to_images(&tb, &norm).unwrap().iter().zip(&imgs) {
                assert!(a
                    .as_raw()
                    .iter()
                    .zip(b.as_raw())
                    .all(|(x, y)| x.abs_diff(*y) <= 1));
            }
            let single = t.get(1).unwrap();
            assert_eq!(
                tensor_to_images(&single, &norm).unwrap(),
                vec![imgs[1].clone()]
            );
        }
    }

    #[test]
    fn values_and_layout() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            image::Rgb([if x == 0 { 0 } else { 255 }, 51, 102])
        });
        let t = images_to_tensor(&[img], &Normalize::HALF, &Device::Cpu).unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Channel-first: R plane, then G, then B.
        let want = [-1.0, 1.0, -0.6, -0.6, -0.2, -0.2];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let t = Tensor::from_vec(vec![-5f32, 0.5, 9.0], (3, 1, 1), &Device::Cpu).unwrap();
        let img = &tensor_to_images(&t, &Normalize::UNIT).unwrap()[0];
        assert_eq!(img.get_pixel(0, 0).0, [0, 128, 255]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = RgbImage::new(4, 4);
        let b = RgbImage::new(4, 5);
        assert!(images_to_tensor(&[a, b], &Normalize::UNIT, &Device::Cpu).is_err());
        assert!(images_to_tensor(&[], &Normalize::UNIT, &Device::Cpu).is_err());
        let t = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_images(&t, &Normalize::UNIT).is_err());
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_images(&t, &Normalize::UNIT).is_err());
        // Zero-sized images go through without dividing by zero.
        let empty = vec![RgbImage::new(0, 3); 2];
        let t = images_to_tensor(&empty, &Normalize::UNIT, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 3, 0]);
        assert_eq!(tensor_to_images(&t, &Normalize::UNIT).unwrap(), empty);
    }
}
