//! Toy training data: 32 px images of a disc or a square in one of three colours, each with a
//! caption ("a red circle") and three questions (its colour, its shape, whether it is red).

use image::{Rgb, RgbImage};

/// The toy colours, by name; image `i` has colour `i % 3`.
pub const COLORS: [(&str, [u8; 3]); 3] = [
    ("red", [255, 0, 0]),
    ("blue", [0, 0, 255]),
    ("green", [0, 255, 0]),
];

/// Toy images with their captions and `(image, question, answer)`, as
/// `vqrae_unified::joint::JointData::encode` takes them.
#[derive(Clone, Debug)]
pub struct Toy {
    pub images: Vec<RgbImage>,
    pub captions: Vec<Option<String>>,
    pub questions: Vec<(usize, String, String)>,
}

/// Toy image `i`: colour `i % 3`, a square when `(i / 3)` is odd (else a disc), centred at one
/// of five places along the diagonal, on an off-white background.
pub fn toy_image(i: usize) -> RgbImage {
    let (_, rgb) = COLORS[i % 3];
    let square = is_square(i);
    let c = 10 + (i % 5) as i32 * 2;
    RgbImage::from_fn(32, 32, |x, y| {
        let (dx, dy) = (x as i32 - c, y as i32 - c);
        let inside = if square {
            dx.abs() < 6 && dy.abs() < 6
        } else {
            dx * dx + dy * dy < 36
        };
        Rgb(if inside { rgb } else { [245, 245, 240] })
    })
}

/// The first `n` toy images, each captioned and asked, in this order, "what color is the
/// shape?", "what shape is in the image?" and "is there a red shape?".
pub fn toy_data(n: usize) -> Toy {
    let mut toy = Toy {
        images: Vec::new(),
        captions: Vec::new(),
        questions: Vec::new(),
    };
    for i in 0..n {
        let (name, _) = COLORS[i % 3];
        let shape = if is_square(i) { "rectangle" } else { "circle" };
        toy.images.push(toy_image(i));
        toy.captions.push(Some(format!("a {name} {shape}")));
        let yes = if name == "red" { "yes" } else { "no" };
        for (q, a) in [
            ("what color is the shape?", name),
            ("what shape is in the image?", shape),
            ("is there a red shape?", yes),
        ] {
            toy.questions.push((i, q.to_string(), a.to_string()));
        }
    }
    toy
}

fn is_square(i: usize) -> bool {
    (i / 3) % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_data_captions_and_asks_each_image() {
        let toy = toy_data(7);
        assert_eq!(toy.images.len(), 7);
        assert_eq!(toy.images[4], toy_image(4));
        assert_eq!(toy.captions[4].as_deref(), Some("a blue rectangle"));
        assert_eq!(toy.questions.len(), 21);
        assert!(toy.questions[12..15].iter().all(|(i, _, _)| *i == 4));
        assert_eq!(toy.questions[14].2, "no");
        assert_eq!(toy.questions[20].2, "yes");
    }
}
