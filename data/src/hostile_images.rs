//! Hostile image files, built in memory for the tests and the measurement of the decoding
//! limits (`examples/decode_rss.rs`): small files that claim or hold far more pixels than they
//! weigh. Each is a valid file of its format; every pixel is black.

use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};

/// PNG colour type: greyscale.
pub const PNG_GREY: u8 = 0;
/// PNG colour type: RGB.
pub const PNG_RGB: u8 = 2;
/// PNG colour type: RGBA.
pub const PNG_RGBA: u8 = 6;

/// A black PNG of `width x height` with `color_type` ([`PNG_GREY`], [`PNG_RGB`],
/// [`PNG_RGBA`]) and `bit_depth` (8 or 16), compressed as it is written: building a
/// 16,777,216 x 1 file (about 20 KB) never holds its pixels in memory.
pub fn png(width: u32, height: u32, color_type: u8, bit_depth: u8) -> Vec<u8> {
    let channels: u64 = match color_type {
        PNG_GREY => 1,
        PNG_RGB => 3,
        _ => 4,
    };
    let row_bytes = u64::from(width) * channels * u64::from(bit_depth) / 8;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    let zeros = vec![0u8; 1 << 16];
    for _ in 0..height {
        // Each row: filter type 0, then the samples.
        let mut left = row_bytes + 1;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            // Writing to a Vec cannot fail.
            let _ = z.write_all(&zeros[..n]);
            left -= n as u64;
        }
    }
    let idat = z.finish().unwrap_or_default();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

/// A GIF whose logical screen (the size its header announces) is `screen`, holding one frame of
/// `frame` at the top left, black, with its LZW data complete (about 90 KB for 11000 x 11000).
pub fn gif_with_frame(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&screen.0.to_le_bytes());
    out.extend_from_slice(&screen.1.to_le_bytes());
    // No global colour table, background 0, no aspect.
    out.extend_from_slice(&[0, 0, 0]);
    // Image descriptor at (0, 0), with a local colour table of 2 entries.
    out.push(0x2C);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&frame.0.to_le_bytes());
    out.extend_from_slice(&frame.1.to_le_bytes());
    out.push(0x80);
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    out.push(LZW_MIN_CODE_SIZE);
    let data = lzw_zeros(u64::from(frame.0) * u64::from(frame.1));
    for block in data.chunks(255) {
        out.push(block.len() as u8);
        out.extend_from_slice(block);
    }
    out.push(0);
    out.push(0x3B);
    out
}

const LZW_MIN_CODE_SIZE: u8 = 2;

/// GIF LZW data for `pixels` pixels of colour 0, as a greedy encoder writes it: codes of runs
/// 1, 2, 3, ... long (each the entry the decoder is about to add), a clear code before the
/// table fills.
fn lzw_zeros(pixels: u64) -> Vec<u8> {
    const CLEAR: u32 = 1 << LZW_MIN_CODE_SIZE;
    const END: u32 = CLEAR + 1;
    const CODES_PER_TABLE: u32 = 4000;
    let mut bits = BitWriter::default();
    let mut width = u32::from(LZW_MIN_CODE_SIZE) + 1;
    let mut left = pixels;
    let mut k = CODES_PER_TABLE;
    while left > 0 {
        if k == CODES_PER_TABLE {
            bits.put(CLEAR, width);
            width = u32::from(LZW_MIN_CODE_SIZE) + 1;
            k = 0;
        }
        // Runs 1 (the colour's own code) then 2, 3, ...: code END + run - 1.
        let run = u64::from(k + 1).min(left);
        let code = if run == 1 { 0 } else { END + run as u32 - 1 };
        bits.put(code, width);
        left -= run;
        // The decoder's next free code after this one, as giflib counts it.
        if END + 1 + k >= 1 << width && width < 12 {
            width += 1;
        }
        k += 1;
    }
    bits.put(END, width);
    bits.finish()
}

/// Codes packed least significant bit first, as GIF wants.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, code: u32, width: u32) {
        self.acc |= u64::from(code) << self.n;
        self.n += width;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageReader, Limits};
    use std::io::Cursor;

    fn decode_unlimited(bytes: &[u8]) -> image::DynamicImage {
        let mut r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .expect("format");
        r.limits(Limits::no_limits());
        r.decode().expect("decodes")
    }

    #[test]
    fn the_builders_write_valid_files() {
        let img = decode_unlimited(&png(300, 7, PNG_RGB, 16));
        assert_eq!((img.width(), img.height()), (300, 7));
        assert_eq!(img.color(), image::ColorType::Rgb16);
        let img = decode_unlimited(&png(5, 3, PNG_GREY, 8));
        assert_eq!(img.to_rgb8().into_raw(), vec![0; 45]);
        // Honest GIFs (frame = screen) decode to black, across several table clears (a
        // 3000 x 3000 frame needs two), so the LZW data is right.
        for side in [1u16, 7, 100, 3000] {
            let img = decode_unlimited(&gif_with_frame((side, side), (side, side))).to_rgba8();
            assert_eq!(img.dimensions(), (u32::from(side), u32::from(side)));
            assert!(img.pixels().all(|p| p.0 == [0, 0, 0, 255]), "{side}");
        }
    }

    #[test]
    fn the_files_are_small() {
        assert!(png(16_777_216, 1, PNG_GREY, 8).len() < 100_000);
        assert!(gif_with_frame((64, 64), (11_000, 11_000)).len() < 200_000);
    }
}
