//! Images in and out of requests: `data:` URLs (and bare base64), decoded with a pixel limit
//! checked before any pixel is decoded; PNG and base64 out.
//!
//! Remote `http(s)://` and `file://` URLs are refused: the server never reaches the network or
//! reads a file on a client's behalf.

use std::io::Cursor;

use base64::Engine as _;
use image::{ImageFormat, ImageReader, RgbImage};

use crate::error::ApiError;

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

/// Decodes an image as RGB, refusing one whose header claims more than `max_pixels` pixels
/// before decoding any of it.
pub(crate) fn decode_image(
    bytes: &[u8],
    max_pixels: u64,
    param: &str,
) -> Result<RgbImage, ApiError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::invalid(param, format!("Cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(ApiError::invalid(
            param,
            "The data is not an image in a known format (PNG, JPEG, GIF, BMP, WebP)",
        )
        .code("invalid_image"));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| {
        ApiError::invalid(param, format!("Cannot read the image's size: {e}")).code("invalid_image")
    })?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(ApiError::invalid(
            param,
            format!("The image is {w}x{h} = {pixels} pixels; the limit is {max_pixels}"),
        )
        .code("image_too_large"));
    }
    if pixels == 0 {
        return Err(ApiError::invalid(param, "The image is empty (0 pixels)").code("invalid_image"));
    }
    vqrae_data::image_io::decode_rgb(bytes).map_err(|e| {
        ApiError::invalid(param, format!("Cannot decode the image: {e}")).code("invalid_image")
    })
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
        let img = decode_image(&bytes, 100, "image").expect("decodes");
        assert_eq!(img.dimensions(), (3, 2));
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
        let e = decode_image(&png_of(20, 10), 199, "image").expect_err("too many pixels");
        assert_eq!(e.code, Some("image_too_large"));
        assert!(decode_image(b"not an image", 100, "image").is_err());
    }
}
