//! PSNR and SSIM agree with scikit-image on a real image and three distortions (reference
//! values from `scripts/make_metric_fixtures.py`).

use std::path::PathBuf;

use vqrae_tokenizer::metrics::{psnr, ssim};

#[test]
fn metrics_match_scikit_image() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let reference = image::open(dir.join("ref.png")).unwrap().to_rgb8();
    for (name, want) in expected["cases"].as_object().unwrap() {
        let img = image::open(dir.join(format!("distorted_{name}.png")))
            .unwrap()
            .to_rgb8();
        let (p, s) = (psnr(&reference, &img), ssim(&reference, &img));
        let (wp, ws) = (
            want["psnr"].as_f64().unwrap(),
            want["ssim"].as_f64().unwrap(),
        );
        assert!(
            (p - wp).abs() < 1e-9,
            "{name}: psnr {p} vs scikit-image {wp}"
        );
        assert!(
            (s - ws).abs() < 1e-6,
            "{name}: ssim {s} vs scikit-image {ws}"
        );
    }
}
