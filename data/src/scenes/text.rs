//! Captions and questions from a scene's ground truth.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{color_name, Object, Scene, Shape};

/// Two positions closer than this (in [0, 1] units) are not called left/right or
/// above/below: the claim would be too fine to judge in a 64px image.
const MARGIN: f32 = 0.1;

/// "zero" to "twelve"; digits beyond.
pub(crate) fn number_word(n: usize) -> String {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| w.to_string())
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Objects of one colour and shape.
struct Group<'a> {
    color: usize,
    shape: Shape,
    objects: Vec<&'a Object>,
}

impl Group<'_> {
    /// "a red circle", "three green triangles".
    fn phrase(&self) -> String {
        let color = color_name(self.color);
        match self.objects.len() {
            1 => format!("{} {color} {}", article(color), self.shape.name()),
            n => format!("{} {color} {}", number_word(n), self.shape.plural()),
        }
    }

    fn min_x(&self) -> f32 {
        self.objects
            .iter()
            .map(|o| o.x)
            .fold(f32::INFINITY, f32::min)
    }

    fn mean(&self, f: impl Fn(&Object) -> f32) -> f32 {
        self.objects.iter().map(|o| f(o)).sum::<f32>() / self.objects.len() as f32
    }
}

/// Groups by (colour, shape), ordered left to right by their leftmost object.
fn groups(scene: &Scene) -> Vec<Group<'_>> {
    let mut groups: Vec<Group> = Vec::new();
    for obj in &scene.objects {
        match groups
            .iter_mut()
            .find(|g| g.color == obj.color && g.shape == obj.shape)
        {
            Some(g) => g.objects.push(obj),
            None => groups.push(Group {
                color: obj.color,
                shape: obj.shape,
                objects: vec![obj],
            }),
        }
    }
    groups.sort_by(|a, b| {
        a.min_x()
            .total_cmp(&b.min_x())
            .then((a.color, a.shape).cmp(&(b.color, b.shape)))
    });
    groups
}

/// The relation "a <rel> b" that holds for every pair of their objects by at least
/// [`MARGIN`], on the axis along which the groups are further apart.
fn relation(a: &Group, b: &Group) -> Option<&'static str> {
    let all = |f: &dyn Fn(&Object, &Object) -> bool| {
        a.objects.iter().all(|p| b.objects.iter().all(|q| f(p, q)))
    };
    let dx = b.mean(|o| o.x) - a.mean(|o| o.x);
    let dy = b.mean(|o| o.y) - a.mean(|o| o.y);
    if dx.abs() >= dy.abs() {
        if all(&|p, q| p.x + MARGIN < q.x) {
            return Some("left of");
        }
        if all(&|p, q| p.x > q.x + MARGIN) {
            return Some("right of");
        }
    } else {
        if all(&|p, q| p.y + MARGIN < q.y) {
            return Some("above");
        }
        if all(&|p, q| p.y > q.y + MARGIN) {
            return Some("below");
        }
    }
    None
}

/// A caption from the ground truth: counts and colours per (colour, shape) group, and for
/// two groups their relation when it holds clearly for every object: "a blue square above
/// a yellow circle", "two red circles left of a green triangle", "three green triangles",
/// "a red circle, a blue square and a green triangle".
pub fn caption(scene: &Scene) -> String {
    let groups = groups(scene);
    let phrases: Vec<String> = groups.iter().map(Group::phrase).collect();
    match phrases.as_slice() {
        [] => "an empty scene".to_string(),
        [one] => one.clone(),
        [a, b] => match relation(&groups[0], &groups[1]) {
            Some(rel) => format!("{a} {rel} {b}"),
            None => format!("{a} and {b}"),
        },
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The skill a question tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skill {
    /// How many objects of a kind.
    Count,
    /// The colour of a named shape.
    Color,
    /// Where one object is relative to another.
    Position,
    /// Whether a colour goes with a shape ("is there a red circle?" when there is a red
    /// square and a blue circle: no).
    ColorBinding,
}

impl fmt::Display for Skill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skill::Count => "count",
            Skill::Color => "color",
            Skill::Position => "position",
            Skill::ColorBinding => "color binding",
        })
    }
}

/// A question, its exact answer, and the skill it tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneQuestion {
    pub question: String,
    pub answer: String,
    pub skill: Skill,
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Every question the scene answers unambiguously, in a fixed order:
/// - count: "how many circles are there?" for every shape (zero included), "how many
///   shapes are there?", "how many red shapes are there?" for each colour present;
/// - colour: "what color is the triangle?" for each shape present exactly once;
/// - colour binding: "is there a red circle?" for each colour and shape present;
/// - position: "is the red circle left of the green triangle?" / "... above ...?" for pairs
///   of objects that are the only one of their colour and shape, when they are at least
///   [`MARGIN`] apart on that axis.
pub fn questions(scene: &Scene) -> Vec<SceneQuestion> {
    let mut out = Vec::new();
    let mut ask = |question: String, answer: String, skill| {
        out.push(SceneQuestion {
            question,
            answer,
            skill,
        })
    };
    let objs = &scene.objects;
    let count = |f: &dyn Fn(&Object) -> bool| objs.iter().filter(|o| f(o)).count();

    for shape in Shape::ALL {
        let n = count(&|o| o.shape == shape);
        ask(
            format!("how many {} are there?", shape.plural()),
            number_word(n),
            Skill::Count,
        );
    }
    ask(
        "how many shapes are there?".into(),
        number_word(objs.len()),
        Skill::Count,
    );
    let mut colors: Vec<usize> = objs.iter().map(|o| o.color).collect();
    colors.sort_unstable();
    colors.dedup();
    for &c in &colors {
        let n = count(&|o| o.color == c);
        ask(
            format!("how many {} shapes are there?", color_name(c)),
            number_word(n),
            Skill::Count,
        );
    }

    for shape in Shape::ALL {
        if let [only] = objs.iter().filter(|o| o.shape == shape).collect::<Vec<_>>()[..] {
            ask(
                format!("what color is the {shape}?"),
                color_name(only.color).into(),
                Skill::Color,
            );
        }
    }

    for &c in &colors {
        for shape in Shape::ALL {
            if objs.iter().any(|o| o.shape == shape) {
                let there = objs.iter().any(|o| o.shape == shape && o.color == c);
                ask(
                    format!(
                        "is there {} {} {shape}?",
                        article(color_name(c)),
                        color_name(c)
                    ),
                    yes_no(there),
                    Skill::ColorBinding,
                );
            }
        }
    }

    let unique: Vec<&Object> = objs
        .iter()
        .filter(|o| count(&|p| p.shape == o.shape && p.color == o.color) == 1)
        .collect();
    for (i, a) in unique.iter().enumerate() {
        for b in &unique[i + 1..] {
            let (da, db) = (a.describe(), b.describe());
            if (a.x - b.x).abs() >= MARGIN {
                ask(
                    format!("is the {da} left of the {db}?"),
                    yes_no(a.x < b.x),
                    Skill::Position,
                );
            }
            if (a.y - b.y).abs() >= MARGIN {
                ask(
                    format!("is the {da} above the {db}?"),
                    yes_no(a.y < b.y),
                    Skill::Position,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{generate, ObjSize, SceneConfig};
    use super::*;
    use crate::easy_vqa::color_index;

    fn obj(shape: Shape, color: &str, x: f32, y: f32) -> Object {
        Object {
            shape,
            color: color_index(color).unwrap(),
            size: ObjSize::Small,
            x,
            y,
        }
    }

    fn scene(objects: Vec<Object>) -> Scene {
        Scene { objects }
    }

    #[test]
    fn captions_for_known_scenes() {
        use Shape::*;
        let two_left = scene(vec![
            obj(Circle, "red", 0.2, 0.3),
            obj(Triangle, "green", 0.8, 0.5),
            obj(Circle, "red", 0.3, 0.7),
        ]);
        assert_eq!(
            caption(&two_left),
            "two red circles left of a green triangle"
        );
        let above = scene(vec![
            obj(Circle, "yellow", 0.5, 0.8),
            obj(Square, "blue", 0.45, 0.2),
        ]);
        assert_eq!(caption(&above), "a blue square above a yellow circle");
        let below = scene(vec![
            obj(Circle, "yellow", 0.45, 0.8),
            obj(Square, "blue", 0.5, 0.2),
        ]);
        assert_eq!(caption(&below), "a yellow circle below a blue square");
        let same = scene(vec![
            obj(Triangle, "green", 0.2, 0.2),
            obj(Triangle, "green", 0.5, 0.5),
            obj(Triangle, "green", 0.8, 0.8),
        ]);
        assert_eq!(caption(&same), "three green triangles");
        // Interleaved groups: no relation holds for every pair.
        let mixed = scene(vec![
            obj(Circle, "red", 0.2, 0.5),
            obj(Square, "blue", 0.5, 0.5),
            obj(Circle, "red", 0.8, 0.5),
        ]);
        assert_eq!(caption(&mixed), "two red circles and a blue square");
        let three = scene(vec![
            obj(Square, "blue", 0.5, 0.5),
            obj(Circle, "red", 0.2, 0.5),
            obj(Triangle, "green", 0.8, 0.5),
        ]);
        assert_eq!(
            caption(&three),
            "a red circle, a blue square and a green triangle"
        );
        assert_eq!(caption(&scene(vec![])), "an empty scene");
    }

    fn answer<'a>(qs: &'a [SceneQuestion], q: &str) -> Option<&'a str> {
        qs.iter()
            .find(|x| x.question == q)
            .map(|x| x.answer.as_str())
    }

    #[test]
    fn questions_for_a_known_scene() {
        use Shape::*;
        let s = scene(vec![
            obj(Circle, "red", 0.2, 0.3),
            obj(Square, "blue", 0.8, 0.35),
            obj(Circle, "blue", 0.5, 0.8),
        ]);
        let qs = questions(&s);
        assert_eq!(answer(&qs, "how many circles are there?"), Some("two"));
        assert_eq!(answer(&qs, "how many triangles are there?"), Some("zero"));
        assert_eq!(answer(&qs, "how many shapes are there?"), Some("three"));
        assert_eq!(answer(&qs, "how many blue shapes are there?"), Some("two"));
        assert_eq!(answer(&qs, "what color is the square?"), Some("blue"));
        // Two circles: "the circle" is ambiguous, so not asked.
        assert_eq!(answer(&qs, "what color is the circle?"), None);
        assert_eq!(answer(&qs, "is there a red square?"), Some("no"));
        assert_eq!(answer(&qs, "is there a blue circle?"), Some("yes"));
        assert_eq!(
            answer(&qs, "is the red circle left of the blue square?"),
            Some("yes")
        );
        assert_eq!(
            answer(&qs, "is the blue square left of the blue circle?"),
            Some("no")
        );
        assert_eq!(
            answer(&qs, "is the blue square above the blue circle?"),
            Some("yes")
        );
        // 0.05 apart vertically: too close to call.
        assert_eq!(
            answer(&qs, "is the red circle above the blue square?"),
            None
        );
        let skills: std::collections::HashSet<Skill> = qs.iter().map(|q| q.skill).collect();
        assert_eq!(skills.len(), 4);
        assert_eq!(Skill::ColorBinding.to_string(), "color binding");
        assert_eq!(
            serde_json::to_string(&Skill::ColorBinding).unwrap(),
            "\"color_binding\""
        );
    }

    /// Generated scenes: every answer re-derived independently from the objects, and the
    /// caption mentions every object.
    #[test]
    fn generated_questions_and_captions_match_ground_truth() {
        let cfg = SceneConfig {
            max_objects: 5,
            ..SceneConfig::default()
        };
        for seed in 0..200 {
            let s = generate(&cfg, seed);
            let objs = &s.objects;
            for q in questions(&s) {
                let words: Vec<&str> = q.question.trim_end_matches('?').split(' ').collect();
                let expect = match q.skill {
                    Skill::Count => {
                        let n = match words[2] {
                            "shapes" => objs.len(),
                            w => match Shape::ALL.iter().find(|s| s.plural() == w) {
                                Some(shape) => objs.iter().filter(|o| o.shape == *shape).count(),
                                None => objs.iter().filter(|o| color_name(o.color) == w).count(),
                            },
                        };
                        number_word(n)
                    }
                    Skill::Color => {
                        let o = objs.iter().find(|o| o.shape.name() == words[4]).unwrap();
                        color_name(o.color).to_string()
                    }
                    Skill::ColorBinding => yes_no(
                        objs.iter()
                            .any(|o| color_name(o.color) == words[3] && o.shape.name() == words[4]),
                    ),
                    Skill::Position => {
                        let find = |c: &str, sh: &str| {
                            let m: Vec<_> = objs
                                .iter()
                                .filter(|o| color_name(o.color) == c && o.shape.name() == sh)
                                .collect();
                            assert_eq!(m.len(), 1, "{}", q.question);
                            m[0]
                        };
                        let a = find(words[2], words[3]);
                        let b = find(words[words.len() - 2], words[words.len() - 1]);
                        yes_no(if words[4] == "left" {
                            a.x < b.x
                        } else {
                            a.y < b.y
                        })
                    }
                };
                assert_eq!(q.answer, expect, "seed {seed}: {}", q.question);
            }
            let cap = caption(&s);
            let mentioned: usize = cap
                .split([',', ' '])
                .filter(|w| {
                    Shape::ALL
                        .iter()
                        .any(|s| s.name() == *w || s.plural() == *w)
                })
                .count();
            let groups = groups(&s);
            assert_eq!(mentioned, groups.len(), "seed {seed}: {cap}");
            // Each (colour, shape) appears with its exact count.
            for o in objs {
                let n = objs
                    .iter()
                    .filter(|p| p.color == o.color && p.shape == o.shape)
                    .count();
                let phrase = match n {
                    1 => format!("a {} {}", color_name(o.color), o.shape.name()),
                    _ => format!(
                        "{} {} {}",
                        number_word(n),
                        color_name(o.color),
                        o.shape.plural()
                    ),
                };
                assert!(cap.contains(&phrase), "seed {seed}: {cap} lacks {phrase}");
            }
            let rel = match groups.len() {
                2 => relation(&groups[0], &groups[1]),
                _ => None,
            };
            if let Some(rel) = rel {
                for p in &groups[0].objects {
                    for q in &groups[1].objects {
                        let ok = match rel {
                            "left of" => p.x < q.x,
                            "right of" => p.x > q.x,
                            "above" => p.y < q.y,
                            _ => p.y > q.y,
                        };
                        assert!(ok, "seed {seed}: {cap}");
                    }
                }
            }
        }
    }
}
