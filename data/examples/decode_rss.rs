//! Peak memory of decoding hostile images (issue 22), one process per case so that each peak
//! is its own:
//!
//! ```text
//! cargo run --release -p vqrae-data --example decode_rss -- write /tmp/hostile
//! cargo run --release -p vqrae-data --example decode_rss -- decode /tmp/hostile/<file> server
//! ```
//!
//! `write` builds the files; `decode` decodes one within the server's default limits
//! (`server`: 16 Mpixel, sides up to 16,384, 64:1, 64 MiB in the decoder) or the files' limits
//! (`files`, what `vqrae tokenize` uses), resizes it to the model's 64x64, and prints the result
//! and the process's peak resident memory (VmHWM). `vqrae tokenize` on the same files under
//! `/usr/bin/time -v` measures the whole CLI (docs/SERVING.md, "Image limits").

use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use vqrae_data::hostile_images::{gif_with_frame, png, PNG_GREY, PNG_RGB, PNG_RGBA};
use vqrae_data::image_io::{decode_rgb_within, resize, DecodeLimits};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", dir] => write(Path::new(dir)),
        ["decode", file, which] => decode(Path::new(file), which),
        ["resize", w, h] => resize_only(w, h),
        _ => Err(
            "usage: decode_rss write DIR | decode FILE server|files | resize WIDTH HEIGHT".into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn write(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let files: [(&str, Vec<u8>); 7] = [
        ("wide-16777216x1.png", png(16_777_216, 1, PNG_GREY, 8)),
        ("wide-67108864x1.png", png(67_108_864, 1, PNG_GREY, 8)),
        ("wide-4194304x4.png", png(4_194_304, 4, PNG_GREY, 8)),
        (
            "gif-64x64-frame-11000x11000.gif",
            gif_with_frame((64, 64), (11_000, 11_000)),
        ),
        ("rgb16-4096x4096.png", png(4096, 4096, PNG_RGB, 16)),
        ("rgba8-4096x4096.png", png(4096, 4096, PNG_RGBA, 8)),
        ("strip-16384x256.png", png(16_384, 256, PNG_GREY, 8)),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    // The other formats at the server's pixel limit, from a noisy picture (so that JPEG and
    // WebP do real work).
    let img = RgbImage::from_fn(4096, 4096, |x, y| {
        let v = x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503);
        Rgb([v as u8, (v >> 8) as u8, (x ^ y) as u8])
    });
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::WebP,
        ImageFormat::Bmp,
        ImageFormat::Gif,
    ] {
        let path = dir.join(format!("rgb-4096x4096.{}", format.extensions_str()[0]));
        img.save_with_format(&path, format)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Peak memory of resizing a flat `w x h` image to 64x64, input included.
fn resize_only(w: &str, h: &str) -> Result<(), String> {
    let (w, h): (u32, u32) = (
        w.parse().map_err(|e| format!("{w}: {e}"))?,
        h.parse().map_err(|e| format!("{h}: {e}"))?,
    );
    // Not black: a zeroed buffer is not resident until written, and would hide the input.
    let img = RgbImage::from_pixel(w, h, Rgb([10, 20, 30]));
    let before = peak_rss_kib();
    let out = resize(&img, 64, 64);
    println!(
        "resize {w}x{h} -> {:?}: peak RSS {before} KiB with the input, {} KiB after resizing",
        out.dimensions(),
        peak_rss_kib()
    );
    Ok(())
}

fn decode(file: &Path, which: &str) -> Result<(), String> {
    let limits = match which {
        "server" => DecodeLimits::new(4096 * 4096, 16_384, 64),
        "files" => DecodeLimits::FILES,
        other => return Err(format!("unknown limits {other:?}: server or files")),
    };
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let outcome = match decode_rgb_within(&bytes, &limits) {
        Ok(img) => {
            let (w, h) = img.dimensions();
            let small = resize(&img, 64, 64);
            format!("decoded {w}x{h}, resized to {:?}", small.dimensions())
        }
        Err(e) => format!("refused: {e}"),
    };
    println!(
        "{}: {outcome}; peak RSS {} KiB",
        file.display(),
        peak_rss_kib()
    );
    Ok(())
}

/// VmHWM of this process, KiB (0 where /proc is not there).
fn peak_rss_kib() -> u64 {
    vqrae_data::memory::peak_rss_mib().map_or(0, |m| (m * 1024.0).round() as u64)
}
