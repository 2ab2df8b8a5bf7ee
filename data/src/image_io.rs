//! Image files: loading with size limits checked before any pixel is decoded (and enforced by
//! the decoder for what a header does not announce), atomic PNG saving, resizing and tiling
//! into grids.

use std::io::Cursor;
use std::path::Path;

use image::imageops;
use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, Rgb, RgbImage,
    RgbaImage,
};

use crate::error::{DataError, Result};

/// The largest image (width x height) a file may hold. A small compressed file can claim a
/// huge size (a decompression bomb), so dimensions are read from the header first.
pub(crate) const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// What decoding one image may cost. Everything but `max_alloc` is checked from the header
/// before any pixel is decoded; the header's decoded size is checked against `max_alloc` too,
/// and the decoder itself is then held to `max_alloc`, `max_side` x `max_side` (the `image`
/// crate's `Limits`), which catches what a header does not announce: a GIF whose frame is
/// larger than its logical screen.
///
/// Worst case for one decode: `max_alloc` in the decoder plus `3 x max_pixels` for the RGB
/// copy (when the file is not 8-bit RGB), plus the decoder's own working buffers, which
/// `image` does not count (see docs/SERVING.md, "Image limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels, width x height.
    pub max_pixels: u64,
    /// Longest side, pixels.
    pub max_side: u32,
    /// Most long side / short side: an image is squashed to a square model input, where a
    /// 16,777,216 x 1 strip means nothing.
    pub max_aspect: u32,
    /// Most bytes the decoder may allocate for pixels: its output in the file's own sample
    /// format (16-bit RGBA is 8 bytes a pixel) plus any frame buffer.
    pub max_alloc: u64,
}

impl DecodeLimits {
    /// Bytes a pixel of the allowed image may take in the decoder: 8-bit RGBA.
    pub const ALLOC_BYTES_PER_PIXEL: u64 = 4;
    /// Room for a small image's metadata chunks (PNG counts them against the same limit).
    pub const MIN_ALLOC: u64 = 4 * 1024 * 1024;

    /// The limits of files read from disk (`vqrae tokenize`, data sets): 64 Mpixel, sides up
    /// to 32,768, aspect up to 64:1, 256 MiB in the decoder.
    pub const FILES: DecodeLimits = DecodeLimits::new(MAX_PIXELS, 32_768, 64);

    /// Limits for `max_pixels`, `max_side` and `max_aspect`, with a decoder allocation sized to
    /// the allowed image: 8-bit RGBA (4 bytes a pixel), at least [`Self::MIN_ALLOC`]. A 16-bit
    /// image is refused at its full pixel limit and accepted at half of it.
    pub const fn new(max_pixels: u64, max_side: u32, max_aspect: u32) -> Self {
        let alloc = max_pixels.saturating_mul(Self::ALLOC_BYTES_PER_PIXEL);
        Self {
            max_pixels,
            max_side,
            max_aspect,
            max_alloc: if alloc < Self::MIN_ALLOC {
                Self::MIN_ALLOC
            } else {
                alloc
            },
        }
    }

    /// Why a header's `width x height` (decoding to `bytes`) is refused, or `None`.
    fn refuse(&self, width: u32, height: u32, bytes: u64) -> Option<String> {
        let (long, short) = (width.max(height), width.min(height));
        if long > self.max_side {
            return Some(format!(
                "a side of {long} pixels is longer than the {} allowed",
                self.max_side
            ));
        }
        if short > 0 && u64::from(long) > u64::from(self.max_aspect) * u64::from(short) {
            return Some(format!(
                "it is more elongated than the {}:1 allowed",
                self.max_aspect
            ));
        }
        (bytes > self.max_alloc).then(|| {
            format!(
                "decoding it takes {bytes} bytes (16-bit samples or alpha count), more than the \
                 {} allowed; send an 8-bit image or a smaller one",
                self.max_alloc
            )
        })
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::FILES
    }
}

/// Loads an image file as 8-bit RGB (alpha dropped, grey replicated, 16-bit reduced), within
/// [`DecodeLimits::FILES`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_named(&bytes, &path.display().to_string(), &DecodeLimits::FILES)
}

/// Decodes an in-memory image (an upload, say) as 8-bit RGB, with the same limits as
/// [`load_rgb`].
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    decode_rgb_within(bytes, &DecodeLimits::FILES)
}

/// Decodes an in-memory image as 8-bit RGB within `limits`.
pub fn decode_rgb_within(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    decode_named(bytes, "<memory>", limits)
}

fn decode_named(bytes: &[u8], name: &str, lim: &DecodeLimits) -> Result<RgbImage> {
    decode_dynamic(bytes, name, lim).map(DynamicImage::into_rgb8)
}

/// Decodes as 8-bit RGBA within `limits`, for images whose transparency matters (cut-outs to
/// composite on a background); `name` goes into the error messages.
pub(crate) fn decode_rgba_named(bytes: &[u8], name: &str, lim: &DecodeLimits) -> Result<RgbaImage> {
    decode_dynamic(bytes, name, lim).map(DynamicImage::into_rgba8)
}

fn decode_dynamic(bytes: &[u8], name: &str, lim: &DecodeLimits) -> Result<DynamicImage> {
    let image_err = |source| DataError::Image {
        source_name: name.to_string(),
        source,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(name, e))?;
    if reader.format().is_none() {
        return Err(DataError::NotAnImage {
            source_name: name.to_string(),
        });
    }
    // The allocation limit goes in first: PNG's decoder takes it at construction (for its
    // metadata chunks and row buffers). Sides are checked below, with a clearer message.
    let mut limits = Limits::default();
    limits.max_alloc = Some(lim.max_alloc);
    reader.limits(limits.clone());
    // Header only: cheap, and lets us refuse before allocating anything.
    let mut decoder = reader.into_decoder().map_err(image_err)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > lim.max_pixels {
        return Err(DataError::ImageTooLarge {
            source_name: name.to_string(),
            width,
            height,
            max: lim.max_pixels,
        });
    }
    let refused = |why| DataError::ImageRefused {
        source_name: name.to_string(),
        width,
        height,
        why,
    };
    if let Some(why) = lim.refuse(width, height, decoder.total_bytes()) {
        return Err(refused(why));
    }
    // What `ImageReader::decode` does, with the sides limited as well: the output buffer is
    // reserved from the budget, and the decoder may allocate only what is left.
    limits.max_image_width = Some(lim.max_side);
    limits.max_image_height = Some(lim.max_side);
    let decoded = limits
        .reserve(decoder.total_bytes())
        .and_then(|()| decoder.set_limits(limits))
        .and_then(|()| DynamicImage::from_decoder(decoder));
    match decoded {
        Ok(img) => Ok(img),
        Err(ImageError::Limits(e)) => Err(refused(format!(
            "its decoder needed more than the {} bytes allowed ({e}): the data holds more than \
             its header announces",
            lim.max_alloc
        ))),
        Err(e) => Err(image_err(e)),
    }
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

/// Resizes with Catmull-Rom filtering; returns a clone when the size already matches. Memory
/// follows the output, not the input's longest side: an input more than 256 times wider than
/// the output is box-averaged down first (see the `resample` module); every other input gives
/// exactly `image::imageops::resize`'s result.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    crate::resample::resize(img, w, h)
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

    fn refused(bytes: &[u8], limits: &DecodeLimits) -> (u32, u32, String) {
        match decode_rgb_within(bytes, limits) {
            Err(DataError::ImageRefused {
                width, height, why, ..
            }) => (width, height, why),
            other => panic!("expected ImageRefused, got {other:?}"),
        }
    }

    #[test]
    fn long_sides_and_elongated_images_are_refused_from_the_header() {
        use crate::hostile_images::{png, PNG_GREY};
        // Inside the pixel limit, yet each once asked the resize for gigabytes.
        let files = DecodeLimits::FILES;
        for (w, h) in [(16_777_216, 1), (67_108_864, 1), (4_194_304, 4)] {
            let (rw, rh, why) = refused(&png(w, h, PNG_GREY, 8), &files);
            assert_eq!((rw, rh), (w, h));
            assert!(why.contains("longer than the 32768 allowed"), "{why}");
        }
        let (_, _, why) = refused(&png(32_768, 16, PNG_GREY, 8), &files);
        assert!(why.contains("64:1"), "{why}");
        let (_, _, why) = refused(&png(16, 2048, PNG_GREY, 8), &files);
        assert!(why.contains("64:1"), "{why}");
        // Just inside: 64:1 and the longest side.
        assert_eq!(
            decode_rgb_within(&png(1024, 16, PNG_GREY, 8), &files)
                .unwrap()
                .dimensions(),
            (1024, 16)
        );
        assert_eq!(
            decode_rgb_within(&png(32_768, 512, PNG_GREY, 8), &files)
                .unwrap()
                .dimensions(),
            (32_768, 512)
        );
        // The message names the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        std::fs::write(&path, png(16_777_216, 1, PNG_GREY, 8)).unwrap();
        let msg = load_rgb(&path).unwrap_err().to_string();
        assert!(
            msg.contains("wide.png") && msg.contains("16777216x1"),
            "{msg}"
        );
    }

    #[test]
    fn a_gif_frame_larger_than_its_screen_is_refused_by_the_decoder() {
        use crate::hostile_images::gif_with_frame;
        let liar = gif_with_frame((64, 64), (11_000, 11_000));
        for limits in [
            DecodeLimits::FILES,
            DecodeLimits::new(4096 * 4096, 16_384, 64),
        ] {
            let (w, h, why) = refused(&liar, &limits);
            assert_eq!((w, h), (64, 64));
            assert!(why.contains("more than its header announces"), "{why}");
        }
        // An honest GIF of the same screen decodes.
        let honest = gif_with_frame((64, 64), (64, 64));
        assert_eq!(decode_rgb(&honest).unwrap(), RgbImage::new(64, 64));
        // A smaller frame inside the screen too (the decoder's extra frame buffer).
        let inner = gif_with_frame((64, 64), (10, 20));
        assert_eq!(decode_rgb(&inner).unwrap(), RgbImage::new(64, 64));
    }

    #[test]
    fn sixteen_bit_images_count_their_bytes() {
        use crate::hostile_images::{png, PNG_RGB, PNG_RGBA};
        // The allowed image in 8-bit RGBA: 16 MiB for 2048 x 2048.
        let limits = DecodeLimits::new(2048 * 2048, 16_384, 64);
        assert_eq!(limits.max_alloc, 2048 * 2048 * 4);
        let (_, _, why) = refused(&png(2048, 2048, PNG_RGB, 16), &limits);
        assert!(
            why.contains("16-bit") && why.contains("25165824 bytes"),
            "{why}"
        );
        let img = decode_rgb_within(&png(2048, 2048, PNG_RGBA, 8), &limits).unwrap();
        assert_eq!(img.dimensions(), (2048, 2048));
        let img = decode_rgb_within(&png(1400, 1400, PNG_RGBA, 16), &limits).unwrap();
        assert_eq!(img.dimensions(), (1400, 1400));
        // Small limits keep room for metadata.
        assert_eq!(
            DecodeLimits::new(64 * 64, 64, 1).max_alloc,
            DecodeLimits::MIN_ALLOC
        );
        assert_eq!(DecodeLimits::FILES.max_alloc, 256 * 1024 * 1024);
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
