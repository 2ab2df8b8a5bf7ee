//! Image files: loading with size limits checked before any pixel is decoded, atomic PNG
//! saving, resizing and tiling into grids.

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ImageFormat, ImageReader, Limits, Rgb, RgbImage};

use crate::error::{DataError, Result};

/// The largest image (width x height) that will be decoded. A small compressed file can
/// claim a huge size (a decompression bomb), so dimensions are read from the header first.
pub(crate) const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Loads an image file as 8-bit RGB (alpha dropped, grey replicated, 16-bit reduced).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_named(&bytes, &path.display().to_string())
}

/// Decodes an in-memory image (an upload, say) as 8-bit RGB, with the same limits as
/// [`load_rgb`].
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    decode_named(bytes, "<memory>")
}

fn decode_named(bytes: &[u8], name: &str) -> Result<RgbImage> {
    let image_err = |source| DataError::Image {
        source_name: name.to_string(),
        source,
    };
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| DataError::io(name, e))?;
        if r.format().is_none() {
            return Err(DataError::NotAnImage {
                source_name: name.to_string(),
            });
        }
        Ok(r)
    };
    // Header only: cheap, and lets us refuse before allocating anything.
    let (width, height) = reader()?.into_dimensions().map_err(image_err)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(DataError::ImageTooLarge {
            source_name: name.to_string(),
            width,
            height,
            max: MAX_PIXELS,
        });
    }
    let mut r = reader()?;
    // Belt and braces: the decoder's own allocation limit, room for 16-bit RGBA.
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    r.limits(limits);
    let img = r.decode().map_err(image_err)?;
    Ok(img.into_rgb8())
}

/// Saves as PNG atomically: writes a temporary file in the same folder and renames it, so
/// a reader never sees half an image. Creates missing parent folders.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|source| DataError::Image {
            source_name: path.display().to_string(),
            source,
        })?;
    crate::fs::write_atomic(path, &bytes)
}

/// Resizes with Catmull-Rom filtering; returns a clone when the size already matches.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    imageops::resize(img, w, h, FilterType::CatmullRom)
}

/// Tiles images left to right, top to bottom, `cols` per row (at least 1), with `pad` pixels
/// of white around and between cells. Cells take the size of the largest image; smaller
/// images are centred in their cell. An empty slice gives a 0x0 image.
pub fn grid(images: &[RgbImage], cols: usize, pad: u32) -> RgbImage {
    if images.is_empty() {
        return RgbImage::new(0, 0);
    }
    let cols = cols.clamp(1, images.len());
    let rows = images.len().div_ceil(cols);
    let cell_w = images.iter().map(|i| i.width()).max().unwrap_or(0);
    let cell_h = images.iter().map(|i| i.height()).max().unwrap_or(0);
    // Sizes are small in practice; saturate rather than overflow on absurd input.
    let span = |n: usize, cell: u32| -> u32 {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        n.saturating_mul(cell)
            .saturating_add(n.saturating_add(1).saturating_mul(pad))
    };
    let mut out = RgbImage::from_pixel(span(cols, cell_w), span(rows, cell_h), Rgb([255; 3]));
    for (k, img) in images.iter().enumerate() {
        let (r, c) = ((k / cols) as u32, (k % cols) as u32);
        let x = pad + c * (cell_w + pad) + (cell_w - img.width()) / 2;
        let y = pad + r * (cell_h + pad) + (cell_h - img.height()) / 2;
        imageops::replace(&mut out, img, i64::from(x), i64::from(y));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) % 2 * 255) as u8])
        })
    }

    #[test]
    fn save_then_load_is_exact_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.png");
        let img = checker(13, 9);
        save_png(&img, &path).unwrap();
        assert_eq!(load_rgb(&path).unwrap(), img);
        // Overwrite in place.
        let img2 = checker(5, 6);
        save_png(&img2, &path).unwrap();
        assert_eq!(load_rgb(&path).unwrap(), img2);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.png")]);
    }

    #[test]
    fn decode_from_memory_and_other_formats() {
        let img = checker(8, 8);
        let mut bmp = Vec::new();
        img.write_to(&mut Cursor::new(&mut bmp), ImageFormat::Bmp)
            .unwrap();
        assert_eq!(decode_rgb(&bmp).unwrap(), img);
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let err = load_rgb(Path::new("/definitely/not/here.png")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/definitely/not/here.png"));
    }

    #[test]
    fn non_image_and_corrupt_images_are_errors() {
        let err = decode_rgb(b"hello, I am text").unwrap_err();
        assert!(matches!(err, DataError::NotAnImage { .. }), "{err:?}");
        assert!(matches!(
            decode_rgb(&[]).unwrap_err(),
            DataError::NotAnImage { .. }
        ));

        // A real PNG cut in half: valid signature and header, truncated data.
        let mut png = Vec::new();
        checker(32, 32)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.png");
        std::fs::write(&path, &png[..png.len() / 2]).unwrap();
        let err = load_rgb(&path).unwrap_err();
        assert!(matches!(err, DataError::Image { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.png"), "{err}");

        // Garbage after a PNG signature.
        let mut bad = png[..8].to_vec();
        bad.extend_from_slice(&[0xAB; 64]);
        assert!(decode_rgb(&bad).is_err());
    }

    #[test]
    fn huge_dimensions_are_refused_before_decoding() {
        // A PNG header claiming 100000 x 100000 pixels, with no pixel data at all.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // The decoder reads up to the first IDAT before it reports dimensions.
        for chunk in [&b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01"[..], b"IEND"] {
            png.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
            png.extend_from_slice(chunk);
            png.extend_from_slice(&crc32(chunk).to_be_bytes());
        }
        let err = decode_rgb(&png).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ImageTooLarge {
                    width: 100_000,
                    height: 100_000,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn resize_keeps_identity_and_changes_size() {
        let img = checker(10, 10);
        assert_eq!(resize(&img, 10, 10), img);
        let small = resize(&img, 4, 3);
        assert_eq!(small.dimensions(), (4, 3));
        // A flat image stays flat (Catmull-Rom overshoots only at edges).
        let flat = RgbImage::from_pixel(16, 16, Rgb([10, 20, 30]));
        assert!(resize(&flat, 7, 9)
            .pixels()
            .all(|p| *p == Rgb([10, 20, 30])));
    }

    #[test]
    fn grid_layout() {
        let a = RgbImage::from_pixel(4, 2, Rgb([0, 0, 0]));
        let b = RgbImage::from_pixel(2, 2, Rgb([255, 0, 0]));
        let g = grid(&[a.clone(), b, a], 2, 1);
        // 2 columns of width 4, 2 rows of height 2, padding 1 around and between.
        assert_eq!(g.dimensions(), (2 * 4 + 3, 2 * 2 + 3));
        assert_eq!(*g.get_pixel(0, 0), Rgb([255; 3]));
        assert_eq!(*g.get_pixel(1, 1), Rgb([0; 3]));
        // b is centred in the second cell: x from 6 + 1 = 7.
        assert_eq!(*g.get_pixel(6, 1), Rgb([255; 3]));
        assert_eq!(*g.get_pixel(7, 1), Rgb([255, 0, 0]));
        // Empty last cell stays white.
        assert_eq!(*g.get_pixel(7, 4), Rgb([255; 3]));
        assert_eq!(grid(&[], 3, 2).dimensions(), (0, 0));
        // cols = 0 is treated as one column rather than dividing by zero.
        assert_eq!(grid(&[checker(3, 3)], 0, 0).dimensions(), (3, 3));
    }
}
