//! The card type's round trip and validation, its checks, and the shipped card against the data
//! and the reports it was written from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vqrae_data::easy_vqa::{ColorShape, QuestionKind, Split, COLORS, SHAPES};
use vqrae_data::scenes::SceneDataset;

use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shipped() -> ModelCard {
    let dir = repo().join("models/vqrae-easyvqa");
    ModelCard::load(&dir)
        .expect("the shipped card loads")
        .expect("the shipped model has a card")
}

#[test]
fn the_card_round_trips_and_a_directory_without_one_has_none() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(ModelCard::load(tmp.path()).expect("no card is fine"), None);
    let card = shipped();
    let text = serde_json::to_string_pretty(&card).expect("serialises");
    std::fs::write(tmp.path().join(CARD_FILE), text).expect("write");
    assert_eq!(ModelCard::load(tmp.path()).expect("loads"), Some(card));
}

#[test]
fn invalid_cards_are_refused_with_what_is_wrong() {
    let bad = |edit: &dyn Fn(&mut ModelCard), needle: &str| {
        let mut card = shipped();
        edit(&mut card);
        let err = card.validate().expect_err(needle);
        assert!(err.contains(needle), "{err:?} should name {needle:?}");
    };
    bad(&|c| c.image_size = 0, "image_size");
    bad(&|c| c.captions.colors.push("Red".into()), "lowercase");
    bad(&|c| c.captions.scene_words.push("red".into()), "twice");
    bad(&|c| c.captions.examples.push("a cat".into()), "\"cat\"");
    bad(
        &|c| c.questions[0].examples.push("how many?".into()),
        "templates",
    );
    bad(&|c| c.questions[1].kind = "color".into(), "twice");
    bad(&|c| c.defaults.guidance.value = f64::NAN, "guidance");
    bad(&|c| c.defaults.guidance.report.clear(), "report");
    bad(&|c| c.source = " ".into(), "source");
    let psnr = |v: f64| {
        move |c: &mut ModelCard| {
            if let Some(i) = c.images.as_mut() {
                i.min_reconstruction_psnr.value = v;
            }
        }
    };
    for v in [0.0, -3.0, f64::NAN, f64::INFINITY, 101.0] {
        bad(&psnr(v), "min_reconstruction_psnr");
    }
    bad(
        &|c| {
            if let Some(i) = c.images.as_mut() {
                i.description.clear();
            }
        },
        "description",
    );
    // a file that is not a card, or has unknown fields, names the file
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join(CARD_FILE), "{\"summary\": 1}").expect("write");
    let err = ModelCard::load(tmp.path())
        .expect_err("not a card")
        .to_string();
    assert!(err.contains(CARD_FILE), "{err}");
}

#[test]
fn out_of_distribution_prompts_and_questions_are_named() {
    let card = shipped();
    for ok in [
        "a blue rectangle",
        "A Red Circle",
        "two red circles, a blue square and a green triangle",
    ] {
        assert_eq!(card.check_caption(ok), Ok(()), "{ok}");
    }
    let unknown = |p: &str| match card.check_caption(p) {
        Err(OutOfDistribution::Caption { unknown, .. }) => unknown,
        other => panic!("{p:?}: {other:?}"),
    };
    assert_eq!(unknown("a cat"), ["cat"]);
    assert_eq!(unknown("a purple hexagon"), ["purple", "hexagon"]);
    assert_eq!(unknown("hello hello"), ["hello"]);
    assert_eq!(unknown("a blue rectangle."), ["."]);
    let msg = card.check_caption("a cat").expect_err("cat").to_string();
    for needle in ["\"cat\"", "red", "rectangle", "a blue rectangle", "64x64"] {
        assert!(msg.contains(needle), "{msg}");
    }

    assert_eq!(
        card.question_kind("what color is the shape?"),
        Some("color")
    );
    assert_eq!(card.question_kind("What is the TEAL shape?"), Some("shape"));
    assert_eq!(
        card.question_kind("is there not a triangle in the image?"),
        Some("yes/no")
    );
    for q in [
        "how many shapes are there?",
        "hello",
        "what is the purple shape?",
        "is there a red circle?",
        "what color is the shape",
    ] {
        let e = card.check_question(q).expect_err(q).to_string();
        assert!(
            e.contains("yes/no questions") && e.contains("triangle"),
            "{e}"
        );
    }
}

/// Every question form (slots filled with every colour or shape) is classified as the data
/// classifies it, and every real easy-VQA question is one of the forms (when the data is set
/// up; `scripts/setup-data.sh`).
#[test]
fn the_shipped_question_forms_are_the_datas() {
    let card = shipped();
    for form in &card.questions {
        for t in &form.templates {
            for c in COLORS {
                for s in SHAPES {
                    let q = t.replace(COLOR_SLOT, c).replace(SHAPE_SLOT, s);
                    assert_eq!(QuestionKind::of(&q).to_string(), form.kind, "{q}");
                    assert_eq!(card.question_kind(&q), Some(form.kind.as_str()), "{q}");
                }
            }
        }
    }
    let root = repo().join(".data");
    for split in [Split::Train, Split::Test] {
        let path = root
            .join("easy-vqa")
            .join(split.as_str())
            .join("questions.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let questions: Vec<(String, String, usize)> =
            serde_json::from_str(&text).expect("questions.json");
        for (q, _, _) in &questions {
            assert!(card.question_kind(q).is_some(), "{q}");
        }
    }
}

/// The caption vocabulary is exactly the words of the captions the model was trained to draw:
/// easy-VQA's colour-shape captions and the procedural training scenes' (and their mirrors').
#[test]
fn the_shipped_caption_vocabulary_is_the_training_captions_words() {
    let card = shipped();
    assert_eq!(card.captions.colors, COLORS);
    assert_eq!(card.captions.shapes, SHAPES);
    let mut captions: Vec<String> = (0..COLORS.len())
        .flat_map(|color| (0..SHAPES.len()).map(move |shape| ColorShape { color, shape }.caption()))
        .collect();
    let scenes = SceneDataset::split(Split::Train, 4000);
    for s in &scenes.scenes {
        captions.push(vqrae_data::scenes::caption(s));
        captions.push(vqrae_data::scenes::caption(&s.mirrored()));
    }
    let mut seen = BTreeSet::new();
    for c in &captions {
        assert_eq!(card.check_caption(c), Ok(()), "{c}");
        seen.extend(words(c).into_iter().filter(|w| w != ","));
    }
    let listed: BTreeSet<String> = card.caption_vocabulary().map(String::from).collect();
    assert_eq!(
        listed, seen,
        "the card lists a word no training caption has"
    );
}

/// The guidance default is the best scale of its report, quoted exactly.
#[test]
fn the_shipped_guidance_default_is_its_reports_best() {
    let card = shipped();
    let g = &card.defaults.guidance;
    let text = std::fs::read_to_string(repo().join(&g.report)).expect("the report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let by = report["by_guidance"].as_object().expect("by_guidance");
    let (best, rate) = by
        .iter()
        .map(|(k, v)| {
            (
                k.parse::<f64>().expect("a scale"),
                v["both"].as_f64().expect("both"),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("scales");
    assert_eq!(best, g.value);
    assert!(
        g.why.contains(&rate.to_string()),
        "{} should quote {rate}",
        g.why
    );
    assert!(g.why.contains(&by["3"]["both"].to_string()), "{}", g.why);
    for f in &card.figures {
        assert!(repo().join(&f.report).is_file(), "{}", f.report);
    }
    for r in &card.reports {
        assert!(repo().join(r).is_file(), "{r}");
    }
}

/// The image check's threshold is its report's, quoted; an image below it is named with its
/// PSNR and what the model knows; a card without the check passes every image.
#[test]
fn the_shipped_image_check_is_its_reports_threshold() {
    let mut card = shipped();
    let images = card.images.clone().expect("the shipped card checks images");
    let m = &images.min_reconstruction_psnr;
    assert!(card.reports.contains(&m.report), "{} is listed", m.report);
    let text = std::fs::read_to_string(repo().join(&m.report)).expect("the report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(report["calibration"]["threshold"].as_f64(), Some(m.value));
    let easy = report["calibration"]["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "easy-vqa-test"))
        .expect("the easy-VQA test group");
    assert_eq!(easy["refused"].as_f64(), Some(0.0));
    for q in ["min", "p0_5", "median"] {
        let v = format!("{:.2}", easy["psnr"][q].as_f64().expect("a figure"));
        assert!(m.why.contains(&v), "{} should quote {q} = {v}", m.why);
    }
    assert!(m.why.contains("--example image_ood"), "{}", m.why);

    assert_eq!(card.check_image_psnr(m.value), Ok(()));
    assert_eq!(card.check_image_psnr(30.0), Ok(()));
    let e = card.check_image_psnr(7.04).expect_err("noise");
    assert!(matches!(e, OutOfDistribution::Image { .. }));
    let msg = e.to_string();
    for needle in ["7.0 dB", "20.5 dB", "64x64", "one coloured shape"] {
        assert!(msg.contains(needle), "{msg}");
    }
    card.images = None;
    assert_eq!(card.check_image_psnr(0.0), Ok(()));
}
