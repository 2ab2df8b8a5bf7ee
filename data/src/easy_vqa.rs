//! The easy-VQA data set (PyPI `easy-vqa` 1.0): 64x64 images of one coloured shape, with
//! template questions. Each image's colour and shape (hence a caption such as "a blue
//! rectangle") are recovered from its questions; the few images whose questions do not pin
//! both down are labelled from their pixels, which use an exact named-colour palette.
//!
//! Layout under the root (`<data root>/easy-vqa`, installed by `scripts/setup-data.sh`):
//! `answers.txt`, `{train,test}/questions.json`, `{train,test}/images/<id>.png`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::image_io;

/// The colours easy-VQA uses, in the order the indices of [`EasyVqaImage::color`] refer to.
pub const COLORS: [&str; 8] = [
    "red", "green", "blue", "yellow", "teal", "brown", "gray", "black",
];
/// The shapes easy-VQA uses, in the order the indices of [`EasyVqaImage::shape`] refer to.
pub const SHAPES: [&str; 3] = ["circle", "rectangle", "triangle"];
/// The exact RGB value each of [`COLORS`] is drawn with (PIL's named colours, except that
/// green is full-intensity 0,255,0), read off the images. Shape interiors are exactly
/// these values; only antialiased edges differ.
pub const PALETTE: [[u8; 3]; 8] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [0, 128, 128],
    [165, 42, 42],
    [128, 128, 128],
    [0, 0, 0],
];

/// Index of a colour name in [`COLORS`].
pub fn color_index(name: &str) -> Option<usize> {
    COLORS.iter().position(|c| *c == name)
}

/// Index of a shape name in [`SHAPES`].
pub(crate) fn shape_index(name: &str) -> Option<usize> {
    SHAPES.iter().position(|s| *s == name)
}

/// A data split. Shared with [`crate::fashion_mnist`], whose test split is "t10k" on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    #[cfg(test)]
    pub(crate) const ALL: [Split; 2] = [Split::Train, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(DataError::Parse {
                what: "split",
                value: s.to_string(),
                expected: "\"train\" or \"test\"".into(),
            }),
        }
    }
}

/// What a question asks about, read from its wording (so it works on new questions too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionKind {
    /// "what color is the shape?", "what is the color of the circle?"
    Color,
    /// "what shape is in the image?", "what is the blue shape?"
    Shape,
    /// "is there a red shape?", "does the image not contain a circle?"
    #[serde(rename = "yes/no")]
    YesNo,
}

impl QuestionKind {
    /// Classifies a question by its wording.
    pub fn of(question: &str) -> QuestionKind {
        let q = question.trim().to_ascii_lowercase();
        if q.starts_with("what color")
            || q.starts_with("what colour")
            || q.starts_with("what is the colo")
        {
            QuestionKind::Color
        } else if q.starts_with("what") || q.starts_with("which") {
            QuestionKind::Shape
        } else {
            QuestionKind::YesNo
        }
    }
}

impl fmt::Display for QuestionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuestionKind::Color => "color",
            QuestionKind::Shape => "shape",
            QuestionKind::YesNo => "yes/no",
        })
    }
}

/// One question with its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub question: String,
    pub answer: String,
    pub image_id: usize,
    pub kind: QuestionKind,
}

/// One image and what it shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EasyVqaImage {
    pub id: usize,
    pub path: PathBuf,
    /// Index into [`COLORS`].
    pub color: Option<usize>,
    /// Index into [`SHAPES`].
    pub shape: Option<usize>,
}

impl EasyVqaImage {
    /// Its colour and shape, when both are known.
    pub fn color_shape(&self) -> Option<ColorShape> {
        Some(ColorShape {
            color: self.color?,
            shape: self.shape?,
        })
    }

    /// "a blue rectangle", when both colour and shape are known.
    pub fn caption(&self) -> Option<String> {
        let color = COLORS.get(self.color?)?;
        let shape = SHAPES.get(self.shape?)?;
        Some(format!("a {color} {shape}"))
    }
}

/// What one easy-VQA image shows: indices into [`COLORS`] and [`SHAPES`]. Ordered by colour,
/// then shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ColorShape {
    pub color: usize,
    pub shape: usize,
}

impl ColorShape {
    /// "a blue rectangle" ("?" for an index past [`COLORS`] or [`SHAPES`], which only a
    /// hand-made value can hold).
    pub fn caption(&self) -> String {
        let color = COLORS.get(self.color).unwrap_or(&"?");
        let shape = SHAPES.get(self.shape).unwrap_or(&"?");
        format!("a {color} {shape}")
    }
}

/// The images of a split whose colour and shape are both known, decoded, with those labels:
/// what the referee trains on and is scored against, and what captions the generator learns.
/// The four columns are parallel.
#[derive(Clone, Debug)]
pub struct ColorShapeImages {
    /// Each image's easy-VQA id.
    pub ids: Vec<usize>,
    pub images: Vec<RgbImage>,
    pub labels: Vec<ColorShape>,
    /// `labels[i].caption()`: "a blue rectangle".
    pub captions: Vec<String>,
}

/// The folder of easy-VQA under a data root.
pub const DIR: &str = "easy-vqa";

/// Loads `split` of easy-VQA from the data root (`<root>/easy-vqa`); when it is not installed,
/// the error says how to install it.
pub fn load_split(root: &Path, split: Split) -> Result<EasyVqa> {
    EasyVqa::load(&root.join(DIR), split)
}

/// One split of easy-VQA.
#[derive(Clone, Debug)]
pub struct EasyVqa {
    pub split: Split,
    /// Sorted by id; in the real data set ids are 0..n, so `images[i].id == i`.
    pub images: Vec<EasyVqaImage>,
    pub questions: Vec<Question>,
    /// All possible answers (13), from `answers.txt`, in file order.
    pub answers: Vec<String>,
}

impl EasyVqa {
    /// Loads a split from the easy-VQA root (the folder holding `answers.txt`). Decodes only
    /// the images whose questions leave the colour or shape open (a few percent).
    pub fn load(root: &Path, split: Split) -> Result<Self> {
        let answers_path = root.join("answers.txt");
        let split_dir = root.join(split.as_str());
        let images_dir = split_dir.join("images");
        let questions_path = split_dir.join("questions.json");
        if !answers_path.is_file() || !questions_path.is_file() || !images_dir.is_dir() {
            return Err(DataError::MissingDataset {
                what: "easy-VQA",
                path: root.to_path_buf(),
            });
        }

        let answers: Vec<String> = read_text(&answers_path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();

        let images = list_images(&images_dir)?;
        let questions = read_questions(&questions_path)?;

        let mut votes = vec![Votes::default(); images.len()];
        for (n, q) in questions.iter().enumerate() {
            let pos = images
                .binary_search_by_key(&q.image_id, |i| i.id)
                .map_err(|_| DataError::Invalid {
                    path: questions_path.clone(),
                    message: format!(
                        "question {n} ({:?}) refers to image {} but {} has no {}.png",
                        q.question,
                        q.image_id,
                        images_dir.display(),
                        q.image_id
                    ),
                })?;
            votes[pos].add(&q.question, &q.answer);
        }

        let mut images = images;
        for (img, v) in images.iter_mut().zip(&votes) {
            img.color = v.color();
            img.shape = v.shape();
            if img.color.is_none() || img.shape.is_none() {
                let (color, shape) = infer_from_pixels(&image_io::load_rgb(&img.path)?);
                img.color = img.color.or(color);
                img.shape = img.shape.or(shape);
            }
        }

        Ok(EasyVqa {
            split,
            images,
            questions,
            answers,
        })
    }

    /// The image with this id.
    pub fn image(&self, id: usize) -> Option<&EasyVqaImage> {
        match self.images.get(id) {
            Some(img) if img.id == id => Some(img),
            _ => self
                .images
                .binary_search_by_key(&id, |i| i.id)
                .ok()
                .map(|p| &self.images[p]),
        }
    }

    /// Decodes the image at position `index` of [`EasyVqa::images`].
    pub fn load_image(&self, index: usize) -> Result<RgbImage> {
        let img = self.images.get(index).ok_or(DataError::OutOfRange {
            what: "easy-VQA images",
            index,
            len: self.images.len(),
        })?;
        image_io::load_rgb(&img.path)
    }

    /// Decodes the images at these positions, in order.
    pub fn load_images(&self, indices: &[usize]) -> Result<Vec<RgbImage>> {
        indices.iter().map(|&i| self.load_image(i)).collect()
    }

    /// The images whose colour and shape are both known, in id order; with `0 < limit <` their
    /// number, a seeded random subset of `limit` of them, in the shuffled order
    /// ([`crate::batch::shuffled`]). Decodes only the images it returns.
    pub fn color_shape_images(&self, limit: usize, seed: u64) -> Result<ColorShapeImages> {
        let known: Vec<usize> = (0..self.images.len())
            .filter(|&i| self.images[i].color_shape().is_some())
            .collect();
        let keep: Vec<usize> = if limit == 0 || limit >= known.len() {
            known
        } else {
            crate::batch::shuffled(known.len(), seed)[..limit]
                .iter()
                .map(|&k| known[k])
                .collect()
        };
        let labels: Vec<ColorShape> = keep
            .iter()
            .filter_map(|&i| self.images[i].color_shape())
            .collect();
        Ok(ColorShapeImages {
            ids: keep.iter().map(|&i| self.images[i].id).collect(),
            images: self.load_images(&keep)?,
            captions: labels.iter().map(ColorShape::caption).collect(),
            labels,
        })
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// `<id>.png` files, sorted by id; other files are ignored.
fn list_images(dir: &Path) -> Result<Vec<EasyVqaImage>> {
    let mut images = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "png") {
            if let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
            {
                images.push(EasyVqaImage {
                    id,
                    path,
                    color: None,
                    shape: None,
                });
            }
        }
    }
    images.sort_by_key(|i| i.id);
    Ok(images)
}

/// `questions.json`: a JSON list of `[question, answer, image_id]`.
fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let text = read_text(path)?;
    let raw: Vec<(String, String, usize)> =
        serde_json::from_str(&text).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            message: format!("expected a list of [question, answer, image_id]: {e}"),
        })?;
    Ok(raw
        .into_iter()
        .map(|(question, answer, image_id)| Question {
            kind: QuestionKind::of(&question),
            question,
            answer,
            image_id,
        })
        .collect())
}

/// Evidence about one image's colour and shape, gathered from its questions.
#[derive(Clone, Default)]
struct Votes {
    color: [u32; COLORS.len()],
    not_color: [bool; COLORS.len()],
    shape: [u32; SHAPES.len()],
    not_shape: [bool; SHAPES.len()],
}

impl Votes {
    fn add(&mut self, question: &str, answer: &str) {
        let q = question.to_ascii_lowercase();
        let words: Vec<&str> = q
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .collect();
        let colors = words.iter().filter_map(|w| color_index(w));
        let shapes = words.iter().filter_map(|w| shape_index(w));
        let answer = answer.trim();
        if let Some(c) = color_index(answer) {
            // "what color is the circle?" -> blue: blue, and a circle.
            self.color[c] += 1;
            shapes.for_each(|s| self.shape[s] += 1);
        } else if let Some(s) = shape_index(answer) {
            // "what is the blue shape?" -> circle: a circle, and blue.
            self.shape[s] += 1;
            colors.for_each(|c| self.color[c] += 1);
        } else if answer == "yes" || answer == "no" {
            // "is there a red shape?" yes, or "is there not a red shape?" no: red is there.
            let negated = words.iter().any(|w| *w == "not" || *w == "no");
            let present = (answer == "yes") != negated;
            for c in colors {
                if present {
                    self.color[c] += 1;
                } else {
                    self.not_color[c] = true;
                }
            }
            for s in shapes {
                if present {
                    self.shape[s] += 1;
                } else {
                    self.not_shape[s] = true;
                }
            }
        }
    }

    fn color(&self) -> Option<usize> {
        decide(&self.color, &self.not_color)
    }

    fn shape(&self) -> Option<usize> {
        decide(&self.shape, &self.not_shape)
    }
}

/// The value with the most positive votes if that is unique; with no positive votes, the
/// only value not ruled out. `None` when the evidence does not settle it.
fn decide(votes: &[u32], ruled_out: &[bool]) -> Option<usize> {
    let best = *votes.iter().max()?;
    if best > 0 {
        let mut winners = (0..votes.len()).filter(|&i| votes[i] == best);
        let first = winners.next();
        return if winners.next().is_none() {
            first
        } else {
            None
        };
    }
    let mut open = (0..ruled_out.len()).filter(|&i| !ruled_out[i]);
    let first = open.next();
    if open.next().is_none() {
        first
    } else {
        None
    }
}

/// Colour and shape read from pixels: the palette colour with the most exact-match pixels;
/// a rectangle if those fill their bounding box, else a triangle if they are lopsided
/// (easy-VQA triangles point up, so most of their area is in the lower half of the box),
/// else a circle. Checked against every question-labelled image in the tests.
pub(crate) fn infer_from_pixels(img: &RgbImage) -> (Option<usize>, Option<usize>) {
    let mut counts = [0usize; COLORS.len()];
    for p in img.pixels() {
        if let Some(c) = PALETTE.iter().position(|rgb| *rgb == p.0) {
            counts[c] += 1;
        }
    }
    let Some((color, &n)) = counts.iter().enumerate().max_by_key(|(_, n)| **n) else {
        return (None, None);
    };
    // A handful of matching pixels could be background noise, not a shape.
    if n < 8 {
        return (None, None);
    }
    let mask: Vec<(u32, u32)> = img
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0 == PALETTE[color])
        .map(|(x, y, _)| (x, y))
        .collect();
    let (x0, x1) = min_max(mask.iter().map(|p| p.0));
    let (y0, y1) = min_max(mask.iter().map(|p| p.1));
    let fill = n as f64 / (f64::from(x1 - x0 + 1) * f64::from(y1 - y0 + 1));
    // Share of the mask on one side of the box's centre line minus the other side's:
    // about 0 for circles, 0.5 for a triangle.
    let lopsided = |lo: u32, hi: u32, coord: fn(&(u32, u32)) -> u32| {
        let mid2 = lo + hi; // twice the centre, to stay in integers
        let before = mask.iter().filter(|p| 2 * coord(p) < mid2).count() as f64;
        let after = mask.iter().filter(|p| 2 * coord(p) > mid2).count() as f64;
        (after - before).abs() / (after + before).max(1.0)
    };
    let asymmetry = lopsided(y0, y1, |p| p.1).max(lopsided(x0, x1, |p| p.0));
    let shape = if fill > FILL_RECTANGLE {
        1
    } else if asymmetry > ASYMMETRY_TRIANGLE {
        2
    } else {
        0
    };
    (Some(color), Some(shape))
}

fn min_max(values: impl Iterator<Item = u32>) -> (u32, u32) {
    values.fold((u32::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Bounding-box fill above which a shape is a rectangle (easy-VQA rectangles are
/// axis-aligned and fill exactly 1; circles fill at most ~0.82 at the smallest sizes).
const FILL_RECTANGLE: f64 = 0.9;
/// Asymmetry above which a shape is a triangle (see [`infer_from_pixels`]).
const ASYMMETRY_TRIANGLE: f64 = 0.25;

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn split_and_kind_text() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert_eq!(" Test ".parse::<Split>().unwrap(), Split::Test);
        assert!("val".parse::<Split>().is_err());
        assert_eq!(Split::Test.to_string(), "test");
        assert_eq!(
            QuestionKind::of("what color is the shape?"),
            QuestionKind::Color
        );
        assert_eq!(
            QuestionKind::of("what is the color of the circle?"),
            QuestionKind::Color
        );
        assert_eq!(
            QuestionKind::of("what is the blue shape?"),
            QuestionKind::Shape
        );
        assert_eq!(
            QuestionKind::of("what shape does the image contain?"),
            QuestionKind::Shape
        );
        assert_eq!(
            QuestionKind::of("is no red shape present?"),
            QuestionKind::YesNo
        );
        assert_eq!(QuestionKind::YesNo.to_string(), "yes/no");
        assert_eq!(
            serde_json::to_string(&QuestionKind::YesNo).unwrap(),
            "\"yes/no\""
        );
    }

    #[test]
    fn votes_from_each_question_form() {
        let label = |qs: &[(&str, &str)]| {
            let mut v = Votes::default();
            qs.iter().for_each(|(q, a)| v.add(q, a));
            (v.color(), v.shape())
        };
        assert_eq!(
            label(&[("what color is the triangle?", "teal")]),
            (Some(4), Some(2))
        );
        assert_eq!(
            label(&[("what is the brown shape?", "circle")]),
            (Some(5), Some(0))
        );
        assert_eq!(
            label(&[("what shape is present?", "rectangle")]),
            (None, Some(1))
        );
        assert_eq!(
            label(&[
                ("is there not a gray shape?", "no"),
                ("is no circle present?", "no")
            ]),
            (Some(6), Some(0))
        );
        assert_eq!(
            label(&[("does the image contain a triangle?", "yes")]),
            (None, Some(2))
        );
        // Ruling out all but one.
        let mut qs: Vec<(String, &str)> = COLORS[1..]
            .iter()
            .map(|c| (format!("is there a {c} shape?"), "no"))
            .collect();
        qs.push(("does the image not contain a circle?".into(), "yes"));
        qs.push(("is a triangle present?".into(), "no"));
        let qs: Vec<(&str, &str)> = qs.iter().map(|(q, a)| (q.as_str(), *a)).collect();
        assert_eq!(label(&qs), (Some(0), Some(1)));
        // Nothing known, or a tie: undecided.
        assert_eq!(label(&[("is there a red shape?", "no")]), (None, None));
        assert_eq!(
            label(&[
                ("what color is the shape?", "red"),
                ("what color is the shape?", "blue")
            ]),
            (None, None)
        );
    }

    fn draw(color: usize, shape: usize) -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            let (fx, fy) = (x as f32 - 30.0, y as f32 - 34.0);
            let inside = match shape {
                0 => fx * fx + fy * fy <= 15.0 * 15.0,
                1 => fx.abs() <= 20.0 && fy.abs() <= 9.0,
                _ => (-15.0..=15.0).contains(&fy) && fx.abs() <= (fy + 15.0) / 2.0,
            };
            Rgb(if inside {
                PALETTE[color]
            } else {
                [240, 236, 250]
            })
        })
    }

    #[test]
    fn pixels_give_colour_and_shape() {
        for color in 0..COLORS.len() {
            for shape in 0..SHAPES.len() {
                assert_eq!(
                    infer_from_pixels(&draw(color, shape)),
                    (Some(color), Some(shape))
                );
            }
        }
        assert_eq!(
            infer_from_pixels(&RgbImage::from_pixel(8, 8, Rgb([200; 3]))),
            (None, None)
        );
    }

    /// A miniature easy-VQA tree in a temp dir.
    fn mini(questions: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("answers.txt"), "circle\nred\nyes\nno\n\n").unwrap();
        std::fs::create_dir_all(root.join("train/images")).unwrap();
        image_io::save_png(&draw(2, 1), &root.join("train/images/0.png")).unwrap();
        image_io::save_png(&draw(0, 0), &root.join("train/images/1.png")).unwrap();
        image_io::save_png(&draw(0, 0), &root.join("train/images/3.png")).unwrap();
        std::fs::write(root.join("train/images/notes.txt"), "ignored").unwrap();
        std::fs::write(root.join("train/questions.json"), questions).unwrap();
        dir
    }

    #[test]
    fn load_mini_tree() {
        // Image 0 has no questions: labelled from pixels. Images 1 and 3 from questions.
        let dir = mini(
            r#"[["what color is the circle?", "red", 1],
                ["what is the yellow shape?", "triangle", 3]]"#,
        );
        let ds = EasyVqa::load(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.answers, ["circle", "red", "yes", "no"]);
        assert_eq!(
            ds.images.iter().map(|i| i.id).collect::<Vec<_>>(),
            [0, 1, 3]
        );
        assert_eq!(ds.images[0].caption().as_deref(), Some("a blue rectangle"));
        assert_eq!(ds.images[1].caption().as_deref(), Some("a red circle"));
        // Questions win over pixels where they speak.
        assert_eq!(
            ds.image(3).unwrap().caption().as_deref(),
            Some("a yellow triangle")
        );
        assert!(ds.image(2).is_none());
        assert_eq!(ds.questions[1].kind, QuestionKind::Shape);
        assert_eq!(ds.load_images(&[0, 2]).unwrap().len(), 2);
        assert!(matches!(
            ds.load_image(3),
            Err(DataError::OutOfRange {
                index: 3,
                len: 3,
                ..
            })
        ));
        assert!(matches!(
            EasyVqa::load(dir.path(), Split::Test),
            Err(DataError::MissingDataset { .. })
        ));
    }

    #[test]
    fn color_shape_images_skip_the_unknown_and_subset_by_seed() {
        let dir = mini(r#"[["what is the yellow shape?", "triangle", 3]]"#);
        // no palette colour: neither questions nor pixels label it
        image_io::save_png(
            &RgbImage::from_pixel(64, 64, Rgb([200; 3])),
            &dir.path().join("train/images/5.png"),
        )
        .unwrap();
        let ds = EasyVqa::load(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.images.len(), 4);
        let all = ds.color_shape_images(0, 0).unwrap();
        assert_eq!(all.ids, [0, 1, 3]);
        assert_eq!(
            all.captions,
            ["a blue rectangle", "a red circle", "a yellow triangle"]
        );
        assert_eq!(all.labels[2], ColorShape { color: 3, shape: 2 });
        assert_eq!(all.images.len(), 3);
        assert_eq!(all.images[1], draw(0, 0));
        // a subset: the known images at the seeded shuffle's first positions, in that order
        let some = ds.color_shape_images(2, 7).unwrap();
        let order = crate::batch::shuffled(3, 7);
        let want: Vec<usize> = order[..2].iter().map(|&k| all.ids[k]).collect();
        assert_eq!(some.ids, want);
        assert_eq!(some.images[0], all.images[order[0]]);
        assert_eq!(ds.color_shape_images(3, 7).unwrap().ids, all.ids);
        assert_eq!(ColorShape { color: 9, shape: 0 }.caption(), "a ? circle");
    }

    #[test]
    fn load_split_reads_under_the_data_root_and_says_how_to_install() {
        let dir = mini("[]");
        let root = tempfile::tempdir().unwrap();
        std::fs::rename(dir.path(), root.path().join(DIR)).unwrap();
        assert_eq!(
            load_split(root.path(), Split::Train).unwrap().images.len(),
            3
        );
        let err = load_split(root.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vqrae data setup"), "{err}");
    }

    #[test]
    fn bad_questions_are_errors_with_context() {
        let dir = mini("[[\"what color is the shape?\", \"red\", 0],\n [\"oops\", 1]]");
        let err = EasyVqa::load(dir.path(), Split::Train).unwrap_err();
        assert!(matches!(err, DataError::Json { line: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("questions.json:2"), "{err}");

        let dir = mini(r#"[["what color is the shape?", "red", 2]]"#);
        let err = EasyVqa::load(dir.path(), Split::Train).unwrap_err();
        assert!(err.to_string().contains("refers to image 2"), "{err}");

        // A corrupt image that has to be decoded is an error, not a panic.
        let dir = mini("[]");
        std::fs::write(
            dir.path().join("train/images/1.png"),
            b"\x89PNG\r\n\x1a\nbroken",
        )
        .unwrap();
        let err = EasyVqa::load(dir.path(), Split::Train).unwrap_err();
        assert!(err.to_string().contains("1.png"), "{err}");
    }

    #[test]
    fn real_data_counts_and_captions() {
        let root = crate::test_root().join("easy-vqa");
        for (split, n_images, n_questions) in
            [(Split::Train, 4000, 38_575), (Split::Test, 1000, 9_673)]
        {
            let ds = EasyVqa::load(&root, split).unwrap();
            assert_eq!(ds.images.len(), n_images, "{split}");
            assert_eq!(ds.questions.len(), n_questions, "{split}");
            assert_eq!(ds.answers.len(), 13);
            for (i, img) in ds.images.iter().enumerate() {
                assert_eq!(img.id, i);
                assert!(img.caption().is_some(), "{split} image {i} has no caption");
            }
            // Every answer is one of the 13, and every colour/shape occurs.
            assert!(ds.questions.iter().all(|q| ds.answers.contains(&q.answer)));
            for (c, name) in COLORS.iter().enumerate() {
                assert!(ds.images.iter().any(|i| i.color == Some(c)), "{name}");
            }
            for (s, name) in SHAPES.iter().enumerate() {
                assert!(ds.images.iter().any(|i| i.shape == Some(s)), "{name}");
            }
            // Question kinds read from wording agree with the answer vocabulary.
            for q in &ds.questions {
                let by_answer = if color_index(&q.answer).is_some() {
                    QuestionKind::Color
                } else if shape_index(&q.answer).is_some() {
                    QuestionKind::Shape
                } else {
                    QuestionKind::YesNo
                };
                assert_eq!(q.kind, by_answer, "{:?}", q.question);
            }
        }
    }

    /// The pixel fallback is only trustworthy if it agrees with the questions wherever
    /// those settle the label: check it on every real image.
    #[test]
    fn real_data_pixels_agree_with_questions() {
        let root = crate::test_root().join("easy-vqa");
        for split in Split::ALL {
            let images = list_images(&root.join(split.as_str()).join("images")).unwrap();
            let questions =
                read_questions(&root.join(split.as_str()).join("questions.json")).unwrap();
            let mut votes = vec![Votes::default(); images.len()];
            for q in &questions {
                votes[q.image_id].add(&q.question, &q.answer);
            }
            let (mut checked, mut undecided) = (0, 0);
            for (img, v) in images.iter().zip(&votes) {
                let (pc, ps) = infer_from_pixels(&image_io::load_rgb(&img.path).unwrap());
                assert!(pc.is_some() && ps.is_some(), "{}", img.path.display());
                if let Some(c) = v.color() {
                    assert_eq!(pc, Some(c), "colour of {}", img.path.display());
                    checked += 1;
                }
                if let Some(s) = v.shape() {
                    assert_eq!(ps, Some(s), "shape of {}", img.path.display());
                    checked += 1;
                }
                undecided += usize::from(v.color().is_none() || v.shape().is_none());
            }
            // Most labels come from the questions; the fallback is for the rest.
            assert!(checked > images.len() * 3 / 2, "{split}: {checked}");
            assert!(undecided < images.len() / 5, "{split}: {undecided}");
        }
    }
}
