//! Images in and out of requests: `data:` URLs (and bare base64), decoded within the
//! server's limits (pixels, sides and aspect checked before any pixel is decoded; the decoder's
//! allocations capped), at most `max_concurrent_decodes` at once; PNG and base64 out.
//!
//! Remote `http(s)://` and `file://` URLs are refused: the server never reaches the network or
//! reads a file on a client's behalf.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use image::{ImageError, ImageFormat, RgbImage};
use tokio::sync::Semaphore;
use vqrae_data::image_io::DecodeLimits;
use vqrae_data::DataError;

use crate::config::Limits;
use crate::error::ApiError;

/// How long a request waits for a free decoder before it is answered 503 with Retry-After.
/// A 16-Mpixel decode takes a fraction of a second, so this is dozens of decodes queued ahead.
pub(crate) const DECODE_WAIT: Duration = Duration::from_secs(10);

/// Decodes uploaded images: within [`DecodeLimits`], off the async threads, and at most
/// `max_concurrent_decodes` at once, so that N concurrent uploads never hold N decodes' memory
/// (decoding happens before the model's queue, whose back-pressure does not bound it).
pub(crate) struct Decoders {
    limits: DecodeLimits,
    permits: Arc<Semaphore>,
    wait: Duration,
    retry_after: u64,
    /// The model's square input side: a decoded image is resized to it before it waits for the
    /// model, so a queued request holds 12 KB rather than up to 48 MB. The model's own resize
    /// then sees its size and copies it, so the result is the same, bit for bit.
    model_side: u32,
}

impl Decoders {
    pub(crate) fn new(limits: &Limits, retry_after: u64, model_side: usize) -> Self {
        Self::with(
            limits.decode_limits(),
            limits.max_concurrent_decodes,
            DECODE_WAIT,
            retry_after,
            model_side,
        )
    }

    fn with(
        limits: DecodeLimits,
        concurrent: usize,
        wait: Duration,
        retry_after: u64,
        model_side: usize,
    ) -> Self {
        Self {
            limits,
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            wait,
            retry_after,
            model_side: u32::try_from(model_side).unwrap_or(u32::MAX),
        }
    }

    /// The image of `source` ([`image_bytes`]), decoded and resized to the model's side once a
    /// decoder is free. Errors name `param`.
    pub(crate) async fn load(
        &self,
        source: String,
        param: String,
        bare_base64: bool,
    ) -> Result<RgbImage, ApiError> {
        self.load_at(source, param, bare_base64, self.model_side)
            .await
    }

    /// [`Decoders::load`] resized to `side` instead: a LLaVA model reads questions' images at
    /// its encoder's side but tokenizes at its VQRAE tokenizer's.
    pub(crate) async fn load_at(
        &self,
        source: String,
        param: String,
        bare_base64: bool,
        side: u32,
    ) -> Result<RgbImage, ApiError> {
        let permit =
            match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(ApiError::internal("the image decoders are closed")),
                Err(_) => return Err(busy(self.retry_after)),
            };
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            // Held until this decode's memory is freed, even if the client has gone.
            let _permit = permit;
            let bytes = image_bytes(&source, &param, bare_base64)?;
            let img = decode_image(&bytes, &limits, &param)?;
            Ok(vqrae_data::image_io::resize(&img, side, side))
        })
        .await
        .map_err(|e| ApiError::internal(format!("decoding the image: {e}")))?
    }
}

/// 503 with Retry-After: every decoder stayed busy for [`DECODE_WAIT`].
fn busy(retry_after: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "The server is busy decoding other images. Retry after the Retry-After seconds.",
    )
    .code("decoders_busy");
    e.retry_after = Some(retry_after.max(1));
    e
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The bytes of an image given as a `data:image/...;base64,` URL, or (when `bare_base64`) as
/// plain base64.
pub(crate) fn image_bytes(
    source: &str,
    param: &str,
    bare_base64: bool,
) -> Result<Vec<u8>, ApiError> {
    let s = source.trim();
    let lower: String = s.chars().take(16).collect::<String>().to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(ApiError::invalid(
            param,
            "Remote image URLs are not fetched (this server makes no network requests): send the \
             image inline as a data URL, e.g. data:image/png;base64,...",
        )
        .code("remote_url_not_allowed"));
    }
    if lower.starts_with("file:") {
        return Err(ApiError::invalid(
            param,
            "file:// URLs are not read (the server reads no files for a client): send the image \
             inline as a data URL, e.g. data:image/png;base64,...",
        )
        .code("remote_url_not_allowed"));
    }
    let payload = if lower.starts_with("data:") {
        let Some((head, data)) = s.split_once(',') else {
            return Err(ApiError::invalid(
                param,
                "A data URL needs a comma between its header and its data",
            ));
        };
        let head = head.to_ascii_lowercase();
        if !head.ends_with(";base64") {
            return Err(ApiError::invalid(
                param,
                "Only base64 data URLs are accepted (data:image/png;base64,...)",
            ));
        }
        if !head.starts_with("data:image/") {
            return Err(ApiError::invalid(
                param,
                format!(
                    "A data URL of {:?} is not an image; use data:image/png;base64,...",
                    head.trim_end_matches(";base64")
                ),
            ));
        }
        data
    } else if bare_base64 && !s.contains("://") {
        s
    } else {
        return Err(ApiError::invalid(
            param,
            "The image must be a data URL (data:image/png;base64,...)",
        ));
    };
    let cleaned: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes()))
        .map_err(|e| ApiError::invalid(param, format!("The image is not valid base64: {e}")))
}

/// Decodes an image as RGB within `limits`. What the header shows to be too large (pixels,
/// a side, the aspect, the decoded bytes), or what the decoder finds larger than its header
/// announced, is a 400 `image_too_large`; anything else that is not a decodable image is a 400
/// `invalid_image`.
pub(crate) fn decode_image(
    bytes: &[u8],
    limits: &DecodeLimits,
    param: &str,
) -> Result<RgbImage, ApiError> {
    let too_large = |m: String| ApiError::invalid(param, m).code("image_too_large");
    let invalid = |m: String| ApiError::invalid(param, m).code("invalid_image");
    let img = vqrae_data::image_io::decode_rgb_within(bytes, limits).map_err(|e| match e {
        DataError::NotAnImage { .. } => {
            invalid("The data is not an image in a known format (PNG, JPEG, GIF, BMP, WebP)".into())
        }
        DataError::ImageTooLarge {
            width, height, max, ..
        } => too_large(format!(
            "The image is {width}x{height} = {} pixels; the limit is {max}",
            u64::from(width) * u64::from(height)
        )),
        DataError::ImageRefused {
            width, height, why, ..
        } => too_large(format!("The image is {width}x{height}: {why}")),
        DataError::Image {
            source: source @ ImageError::Limits(_),
            ..
        } => too_large(format!("The image is too large to decode: {source}")),
        DataError::Image { source, .. } => invalid(format!("Cannot decode the image: {source}")),
        other => invalid(format!("Cannot read the image: {other}")),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(invalid("The image is empty (0 pixels)".into()));
    }
    Ok(img)
}

/// PNG bytes of an image.
pub(crate) fn png(img: &RgbImage) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("encoding a PNG: {e}")))?;
    Ok(out)
}

pub fn base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(w: u32, h: u32) -> Vec<u8> {
        png(&RgbImage::new(w, h)).expect("png")
    }

    fn limits(pixels: u64) -> DecodeLimits {
        DecodeLimits::new(pixels, 16_384, 64)
    }

    #[test]
    fn data_urls_and_bare_base64_decode() {
        let bytes = png_of(3, 2);
        let url = format!("data:image/png;base64,{}", base64(&bytes));
        assert_eq!(image_bytes(&url, "image", false).expect("data url"), bytes);
        assert_eq!(
            image_bytes(&base64(&bytes), "image", true).expect("bare"),
            bytes
        );
        assert!(image_bytes(&base64(&bytes), "image", false).is_err());
        let img = decode_image(&bytes, &limits(100), "image").expect("decodes");
        assert_eq!(img.dimensions(), (3, 2));
    }

    #[test]
    fn hostile_images_are_too_large_under_the_server_defaults() {
        use vqrae_data::hostile_images::{gif_with_frame, png as raw_png, PNG_GREY, PNG_RGB};
        let l = Limits::default().decode_limits();
        assert_eq!(l.max_alloc, 64 * 1024 * 1024);
        for (name, bytes) in [
            ("16777216x1", raw_png(16_777_216, 1, PNG_GREY, 8)),
            ("4194304x4", raw_png(4_194_304, 4, PNG_GREY, 8)),
            (
                "GIF frame past its screen",
                gif_with_frame((64, 64), (11_000, 11_000)),
            ),
            ("4096x4096 16-bit", raw_png(4096, 4096, PNG_RGB, 16)),
        ] {
            let e = decode_image(&bytes, &l, "image").expect_err(name);
            assert_eq!(e.code, Some("image_too_large"), "{name}: {}", e.message);
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.param.as_deref(), Some("image"));
        }
        // Inside every limit: 8-bit at the full pixel limit, 16-bit at half of it.
        let img = decode_image(&raw_png(4096, 4096, PNG_RGB, 8), &l, "image").expect("8-bit");
        assert_eq!(img.dimensions(), (4096, 4096));
        let img = decode_image(&raw_png(2048, 4096, PNG_RGB, 16), &l, "image").expect("16-bit");
        assert_eq!(img.dimensions(), (2048, 4096));
    }

    #[tokio::test]
    async fn decodes_past_the_bound_wait_then_get_503() {
        let d = Decoders::with(limits(100), 1, Duration::from_millis(50), 3, 4);
        let url = format!("data:image/png;base64,{}", base64(&png_of(3, 2)));
        let img = d
            .load(url.clone(), "image".into(), false)
            .await
            .expect("decodes");
        // Resized to the model's side before it waits for the model.
        assert_eq!(img.dimensions(), (4, 4));
        let held = d.permits.clone().acquire_owned().await.expect("permit");
        let e = d
            .load(url.clone(), "image".into(), false)
            .await
            .expect_err("every decoder busy");
        assert_eq!(e.status.as_u16(), 503);
        assert_eq!(e.code, Some("decoders_busy"));
        assert_eq!(e.retry_after, Some(3));
        drop(held);
        d.load(url, "image".into(), false)
            .await
            .expect("free again");
    }

    #[test]
    fn remote_and_file_urls_and_bombs_are_refused() {
        for url in [
            "https://example.com/a.png",
            "HTTP://x/y",
            "file:///etc/passwd",
        ] {
            let e = image_bytes(url, "image", true).expect_err(url);
            assert_eq!(e.code, Some("remote_url_not_allowed"), "{url}");
            assert_eq!(e.status.as_u16(), 400);
        }
        assert!(image_bytes("data:text/plain;base64,aGk=", "image", false).is_err());
        let e = decode_image(&png_of(20, 10), &limits(199), "image").expect_err("too many pixels");
        assert_eq!(e.code, Some("image_too_large"));
        let e = decode_image(b"not an image", &limits(100), "image").expect_err("text");
        assert_eq!(e.code, Some("invalid_image"));
    }
}
