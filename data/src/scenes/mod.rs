//! A seeded procedural scene generator: a few coloured shapes on a plain background, with
//! exact ground truth. Captions state counts, colours and relations; questions probe one
//! skill each (count, colour, position, colour binding), so generated images can be scored
//! per skill the way GenEval does with a detector.
//!
//! Everything is a pure function of the configuration and a seed.

mod render;
mod text;

pub use render::render;
pub use text::{caption, questions, SceneQuestion, Skill};

use std::fmt;

use image::RgbImage;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::easy_vqa::{color_index, Split, COLORS};
use crate::error::{DataError, Result};

/// The shapes a scene can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub(crate) const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    pub(crate) fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Object size class; the pixel sizes are in [`SceneConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjSize {
    Small,
    Large,
}

/// What scenes may contain. Unset fields take their defaults when deserialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SceneConfig {
    /// Image side in pixels.
    pub size: u32,
    pub min_objects: usize,
    pub max_objects: usize,
    /// Colour names, a subset of [`COLORS`].
    pub colors: Vec<String>,
    pub shapes: Vec<Shape>,
    /// Side (bounding-box width and height) of a small object, in pixels.
    pub small: u32,
    /// Side of a large object, in pixels.
    pub large: u32,
    pub background: [u8; 3],
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            size: 64,
            min_objects: 1,
            max_objects: 3,
            // Four well separated colours: enough for binding, easy to tell apart at 64px.
            colors: ["red", "green", "blue", "yellow"]
                .map(String::from)
                .to_vec(),
            shapes: Shape::ALL.to_vec(),
            small: 12,
            large: 20,
            background: [255, 255, 255],
        }
    }
}

/// Most objects a scene may hold: beyond this, placement fails often and counts stop being
/// something a small model can be asked about.
pub(crate) const MAX_OBJECTS: usize = 8;

/// Gap in pixels kept between object bounding boxes, so shapes never touch.
const GAP: f32 = 2.0;

impl SceneConfig {
    /// Checks the configuration, with an error saying what to change.
    /// [`generate`] never fails; on an invalid configuration it uses [`SceneConfig::sanitized`].
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, value: String, expected: String| {
            Err(DataError::Parse {
                what,
                value,
                expected,
            })
        };
        if let Some(c) = self.colors.iter().find(|c| color_index(c).is_none()) {
            return bad(
                "scene colour",
                c.clone(),
                format!("one of {}", COLORS.join(", ")),
            );
        }
        if self.colors.is_empty() {
            return bad("scene colours", "[]".into(), "at least one colour".into());
        }
        if self.shapes.is_empty() {
            return bad("scene shapes", "[]".into(), "at least one shape".into());
        }
        if self.min_objects == 0
            || self.min_objects > self.max_objects
            || self.max_objects > MAX_OBJECTS
        {
            return bad(
                "object counts",
                format!("{}..={}", self.min_objects, self.max_objects),
                format!("1 <= min_objects <= max_objects <= {MAX_OBJECTS}"),
            );
        }
        if self.small < 4
            || self.small > self.large
            || self.large as f32 + 2.0 * GAP > self.size as f32
        {
            return bad(
                "object sizes",
                format!(
                    "small {} large {} in a {}px image",
                    self.small, self.large, self.size
                ),
                format!("4 <= small <= large <= size - {}", 2.0 * GAP),
            );
        }
        Ok(())
    }

    /// A valid configuration close to this one: unknown colours dropped (the default palette
    /// if none is left), counts and sizes clamped into range.
    pub(crate) fn sanitized(&self) -> SceneConfig {
        let default = SceneConfig::default();
        let mut c = self.clone();
        c.colors.retain(|name| color_index(name).is_some());
        if c.colors.is_empty() {
            c.colors = default.colors;
        }
        if c.shapes.is_empty() {
            c.shapes = default.shapes;
        }
        c.size = c.size.max(4 + 2 * GAP as u32);
        c.max_objects = c.max_objects.clamp(1, MAX_OBJECTS);
        c.min_objects = c.min_objects.clamp(1, c.max_objects);
        c.large = c.large.clamp(4, c.size - 2 * GAP as u32);
        c.small = c.small.clamp(4, c.large);
        c
    }

    /// Side in pixels of an object of this size class.
    pub fn pixels(&self, size: ObjSize) -> u32 {
        match size {
            ObjSize::Small => self.small,
            ObjSize::Large => self.large,
        }
    }
}

/// One object: what it is and where its centre is, in [0, 1] image coordinates
/// (x to the right, y downwards).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    /// Index into [`COLORS`].
    pub color: usize,
    pub size: ObjSize,
    pub x: f32,
    pub y: f32,
}

impl Object {
    /// "red circle".
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", color_name(self.color), self.shape)
    }
}

/// The colour's name, or "unknown" for an index outside [`COLORS`] (possible only in a
/// hand-written scene).
pub(crate) fn color_name(index: usize) -> &'static str {
    COLORS.get(index).copied().unwrap_or("unknown")
}

/// A generated scene: the exact ground truth its image, caption and questions come from.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Scene {
    pub objects: Vec<Object>,
}

impl Scene {
    /// The scene reflected left to right: drawn and captioned again from it, its left and right
    /// claims stay true (a pixel mirror would keep the old caption and make them false).
    pub fn mirrored(&self) -> Scene {
        Scene {
            objects: self
                .objects
                .iter()
                .map(|o| Object { x: 1.0 - o.x, ..*o })
                .collect(),
        }
    }
}

/// Generates a scene. Objects do not overlap: each is placed by rejection sampling with a
/// bounded number of tries, and one that does not fit is left out, so a crowded
/// configuration can give fewer objects than `min_objects` (never fewer than one).
pub fn generate(cfg: &SceneConfig, seed: u64) -> Scene {
    let cfg = cfg.sanitized();
    let colors: Vec<usize> = cfg.colors.iter().filter_map(|c| color_index(c)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.gen_range(cfg.min_objects..=cfg.max_objects);
    let side = cfg.size as f32;
    let mut placed: Vec<(f32, f32, f32)> = Vec::new(); // centre x, y and side, in pixels
    let mut objects = Vec::with_capacity(n);
    for _ in 0..n {
        let shape = cfg.shapes[rng.gen_range(0..cfg.shapes.len())];
        let color = colors[rng.gen_range(0..colors.len())];
        let size = if rng.gen_bool(0.5) {
            ObjSize::Small
        } else {
            ObjSize::Large
        };
        let s = cfg.pixels(size) as f32;
        let lo = s / 2.0 + GAP;
        let hi = side - s / 2.0 - GAP;
        for _try in 0..200 {
            // Whole-pixel centres (plus a half for odd sides) keep edges on pixel borders.
            let cx = snap(rng.gen_range(lo..=hi), s);
            let cy = snap(rng.gen_range(lo..=hi), s);
            let clear = placed.iter().all(|&(px, py, ps)| {
                let d = (s + ps) / 2.0 + GAP;
                (cx - px).abs() >= d || (cy - py).abs() >= d
            });
            if clear {
                placed.push((cx, cy, s));
                objects.push(Object {
                    shape,
                    color,
                    size,
                    x: cx / side,
                    y: cy / side,
                });
                break;
            }
        }
    }
    Scene { objects }
}

/// Rounds a centre so that a box of side `s` around it starts on a whole pixel.
fn snap(c: f32, s: f32) -> f32 {
    (c - s / 2.0).round() + s / 2.0
}

/// Seed of the training scenes of [`SceneDataset::split`].
pub(crate) const TRAIN_SEED: u64 = 0x5ce7e;
/// Seed of the held-out scenes of [`SceneDataset::split`].
pub(crate) const TEST_SEED: u64 = 0x7e57;
/// Scenes in each split of the data sets built from [`SceneDataset::split`]: as many as
/// easy-VQA has images.
pub const TRAIN_SCENES: usize = 4000;
pub const TEST_SCENES: usize = 1000;

/// A fixed set of scenes: scene `i` is `generate(&cfg, seeds[i])`, so any one can be
/// regenerated from its seed alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneDataset {
    pub cfg: SceneConfig,
    pub scenes: Vec<Scene>,
    pub seeds: Vec<u64>,
}

impl SceneDataset {
    /// `n` scenes from one seed, deterministically.
    pub fn new(cfg: SceneConfig, n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let seeds: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        let scenes = seeds.iter().map(|&s| generate(&cfg, s)).collect();
        SceneDataset { cfg, scenes, seeds }
    }

    /// The project's fixed split of `n` default-configuration scenes: training and test scenes
    /// come from different seeds, so every tool that trains on scenes and every one that
    /// evaluates on them agree on what is held out.
    pub fn split(split: Split, n: usize) -> Self {
        let seed = match split {
            Split::Train => TRAIN_SEED,
            Split::Test => TEST_SEED,
        };
        SceneDataset::new(SceneConfig::default(), n, seed)
    }

    pub fn len(&self) -> usize {
        self.scenes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scenes.is_empty()
    }

    /// The image of scene `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<RgbImage> {
        Some(render(&self.cfg, self.scenes.get(i)?))
    }

    /// The caption of scene `i`, or `None` past the end.
    pub fn caption(&self, i: usize) -> Option<String> {
        Some(caption(self.scenes.get(i)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_scene() {
        let cfg = SceneConfig::default();
        for seed in 0..50 {
            assert_eq!(generate(&cfg, seed), generate(&cfg, seed));
        }
        let distinct: std::collections::HashSet<String> = (0..50)
            .map(|s| serde_json::to_string(&generate(&cfg, s)).unwrap())
            .collect();
        assert!(distinct.len() > 45, "{}", distinct.len());
        let a = SceneDataset::new(cfg.clone(), 20, 3);
        assert_eq!(a, SceneDataset::new(cfg.clone(), 20, 3));
        assert_ne!(a.scenes, SceneDataset::new(cfg.clone(), 20, 4).scenes);
        assert_eq!(a.scenes[7], generate(&cfg, a.seeds[7]));
        assert_eq!(a.len(), 20);
        assert!(a.image(20).is_none() && a.caption(20).is_none());
        let train = SceneDataset::split(Split::Train, 200);
        let test = SceneDataset::split(Split::Test, 200);
        assert_eq!(train, SceneDataset::split(Split::Train, 200));
        let overlap = test
            .scenes
            .iter()
            .filter(|s| train.scenes.contains(s))
            .count();
        assert_eq!(overlap, 0, "held-out scenes repeat training scenes");
    }

    #[test]
    fn scenes_respect_the_config_and_do_not_overlap() {
        let cfg = SceneConfig {
            max_objects: 4,
            ..SceneConfig::default()
        };
        let allowed: Vec<usize> = cfg.colors.iter().filter_map(|c| color_index(c)).collect();
        let side = cfg.size as f32;
        let mut sizes = [0usize; 5];
        for seed in 0..300 {
            let scene = generate(&cfg, seed);
            let n = scene.objects.len();
            assert!((1..=4).contains(&n));
            sizes[n] += 1;
            for (i, a) in scene.objects.iter().enumerate() {
                assert!(allowed.contains(&a.color));
                let sa = cfg.pixels(a.size) as f32;
                let (ax, ay) = (a.x * side, a.y * side);
                assert!(ax - sa / 2.0 >= GAP - 1e-3 && ax + sa / 2.0 <= side - GAP + 1e-3);
                assert!(ay - sa / 2.0 >= GAP - 1e-3 && ay + sa / 2.0 <= side - GAP + 1e-3);
                for b in &scene.objects[i + 1..] {
                    let d = (sa + cfg.pixels(b.size) as f32) / 2.0 + GAP - 1e-3;
                    assert!(
                        (ax - b.x * side).abs() >= d || (ay - b.y * side).abs() >= d,
                        "seed {seed}"
                    );
                }
            }
        }
        // Placement almost always succeeds at the default density.
        assert!(sizes[1..].iter().all(|&k| k > 40), "{sizes:?}");
    }

    #[test]
    fn config_validation_and_sanitising() {
        assert!(SceneConfig::default().validate().is_ok());
        let bad = SceneConfig {
            colors: vec!["red".into(), "purple".into()],
            ..SceneConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("purple"), "{err}");
        assert_eq!(bad.sanitized().colors, ["red"]);
        for bad in [
            SceneConfig {
                min_objects: 0,
                ..SceneConfig::default()
            },
            SceneConfig {
                min_objects: 4,
                max_objects: 3,
                ..SceneConfig::default()
            },
            SceneConfig {
                large: 80,
                ..SceneConfig::default()
            },
            SceneConfig {
                shapes: vec![],
                ..SceneConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
            assert!(bad.sanitized().validate().is_ok(), "{:?}", bad.sanitized());
            // Generating from a bad config still works.
            assert!(!generate(&bad, 1).objects.is_empty());
        }
        // Absurd sizes do not panic.
        let tiny = SceneConfig {
            size: 0,
            small: 0,
            large: 0,
            ..SceneConfig::default()
        };
        assert!(
            tiny.sanitized().validate().is_ok(),
            "{:?}",
            tiny.sanitized()
        );
        let img = render(&tiny, &generate(&tiny, 0));
        assert_eq!(img.dimensions(), (0, 0));
        // Unset fields take defaults; unknown fields are refused.
        let c: SceneConfig =
            serde_json::from_str(r#"{"max_objects": 2, "shapes": ["square"]}"#).unwrap();
        assert_eq!(
            (c.size, c.max_objects, c.shapes.as_slice()),
            (64, 2, &[Shape::Square][..])
        );
        assert!(serde_json::from_str::<SceneConfig>(r#"{"maxobjects": 2}"#).is_err());
    }
}
