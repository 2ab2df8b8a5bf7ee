//! The Fréchet distance against numpy / scipy (pytorch-fid's computation; reference values from
//! `scripts/make_frechet_fixtures.py`), and FD-DINOv2 on the real DINOv2-small.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use vqrae_tokenizer::encoder::load_hf_encoder;
use vqrae_tokenizer::fd_dinov2::{cls_features, FdOptions};
use vqrae_tokenizer::frechet::{frechet_distance, FeatureStats};

/// The fixture script's `uniforms`: splitmix64 from `seed`, the top 53 bits as [0, 1).
fn uniforms(seed: u64, count: usize) -> Vec<f64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        })
        .collect()
}

/// The fixture script's `features`: the same operations in the same order, so the same f32s.
fn set_from_spec(spec: &serde_json::Value) -> Result<Vec<Vec<f32>>> {
    let int = |k: &str| spec[k].as_u64().with_context(|| format!("{k} in {spec}"));
    let float = |k: &str| spec[k].as_f64().with_context(|| format!("{k} in {spec}"));
    let (n, d) = (int("n")? as usize, int("d")? as usize);
    let (shift, scale, mix) = (float("shift")?, float("scale")?, float("mix")?);
    let u = uniforms(int("seed")?, n * d);
    let w: Vec<f64> = u.iter().map(|x| (x - 0.5) * (2.0 * 3f64.sqrt())).collect();
    Ok((0..n)
        .map(|i| {
            let row = &w[i * d..(i + 1) * d];
            (0..d)
                .map(|j| {
                    let mean = shift * ((j % 7) as f64 - 3.0) / 3.0;
                    let s = 1.0 + scale * (j % 5) as f64 / 4.0;
                    let mixed = row[j] + mix * row[(j + 1) % d];
                    (mean + s * mixed) as f32
                })
                .collect()
        })
        .collect())
}

#[test]
fn frechet_distance_matches_numpy_scipy() -> Result<()> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frechet/expected.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let cases = doc["cases"].as_object().context("cases")?;
    assert!(cases.len() >= 4, "{} cases", cases.len());
    for (name, case) in cases {
        let mut stats = Vec::new();
        for side in ["a", "b"] {
            let features = set_from_spec(&case[side])?;
            // the generator must reproduce the script's features before distances mean anything
            let sum: f64 = features.iter().flatten().map(|&x| f64::from(x)).sum();
            let want = case[side]["sum"].as_f64().context("sum")?;
            assert!(
                (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{name}/{side}: generator sum {sum} vs {want}"
            );
            stats.push(FeatureStats::from_features(&features)?);
        }
        let got = frechet_distance(&stats[0], &stats[1])?;
        let want = case["fd"].as_f64().context("fd")?;
        let rel = (got - want).abs() / want.abs();
        eprintln!("{name}: FD {got:.6} vs scipy {want:.6} (relative {rel:.1e})");
        assert!(rel < 1e-3, "{name}: FD {got} vs scipy sqrtm {want}");
        // symmetric in its arguments
        let back = frechet_distance(&stats[1], &stats[0])?;
        assert!(
            (back - got).abs() < 1e-6 * got.abs(),
            "{name}: {back} vs {got}"
        );
    }
    Ok(())
}

/// `n` easy-VQA test images from `first`, as 8-bit RGB.
fn easy_vqa_images(root: &Path, first: usize, n: usize) -> Result<Vec<image::RgbImage>> {
    let dir = root.join("easy-vqa/test/images");
    let paths = vqrae_data::folder::list_images(&dir)?;
    anyhow::ensure!(
        paths.len() >= first + n,
        "{} images in {}",
        paths.len(),
        dir.display()
    );
    paths[first..first + n]
        .iter()
        .map(|p| Ok(vqrae_data::image_io::load_rgb(p)?))
        .collect()
}

/// FD-DINOv2 on the converted DINOv2-small (224 px, class tokens): a set is at ~0 from itself,
/// further from other images of its kind, and further still from the same images with their
/// colours inverted. Runs where `scripts/convert-dinov2.sh` and the data setup have been run.
#[test]
fn fd_dinov2_of_real_images_orders_shifts() -> Result<()> {
    let root = std::env::var_os("VQRAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.data"));
    let dir = root.join("models/dinov2-small");
    if !dir.join("model.safetensors").exists() || !root.join("easy-vqa/test/images").is_dir() {
        eprintln!(
            "skipped: DINOv2-small or easy-VQA absent under {}",
            root.display()
        );
        return Ok(());
    }
    let dev = Device::Cpu;
    let enc = load_hf_encoder(&dir, &dev, DType::F32)?;
    let options = FdOptions::default();
    let base = easy_vqa_images(&root, 0, 16)?;
    let others = easy_vqa_images(&root, 16, 16)?;
    let inverted: Vec<image::RgbImage> = base
        .iter()
        .map(|img| {
            let mut img = img.clone();
            image::imageops::invert(&mut img);
            img
        })
        .collect();
    let stats = |images: &[image::RgbImage]| -> Result<FeatureStats> {
        let f = cls_features(&enc, images, &options, &dev)?;
        assert_eq!((f.len(), f[0].len()), (16, 384));
        Ok(FeatureStats::from_features(&f)?)
    };
    let (base, others, inverted) = (stats(&base)?, stats(&others)?, stats(&inverted)?);
    let itself = frechet_distance(&base, &base)?;
    let other = frechet_distance(&base, &others)?;
    let shifted = frechet_distance(&base, &inverted)?;
    eprintln!("FD-DINOv2 (16 a side): itself {itself:.3e}, other easy-VQA {other:.2}, inverted {shifted:.2}");
    assert!(
        itself.abs() < 1e-6 * other,
        "itself {itself}, other {other}"
    );
    assert!(
        other > 0.0 && shifted > 1.5 * other,
        "other {other}, inverted {shifted}"
    );
    Ok(())
}
