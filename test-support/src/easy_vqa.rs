//! A miniature easy-VQA installation made of the toy images, so that procedures which load
//! easy-VQA from a data root run on real files without the real data set.

use std::path::Path;

use anyhow::Result;
use vqrae_data::easy_vqa::DIR;
use vqrae_data::image_io::save_png;

use crate::toy::toy_data;

/// Writes `<data_root>/easy-vqa` with `train` and `test` toy images (the first `train` toy
/// images, then the next `test`), each with its three toy questions; the loader reads their
/// colour and shape off the questions.
pub fn mini_easy_vqa(data_root: &Path, train: usize, test: usize) -> Result<()> {
    let root = data_root.join(DIR);
    let toy = toy_data(train + test);
    let mut answers: Vec<&str> = toy.questions.iter().map(|(_, _, a)| a.as_str()).collect();
    answers.sort_unstable();
    answers.dedup();
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("answers.txt"), answers.join("\n") + "\n")?;
    for (split, range) in [("train", 0..train), ("test", train..train + test)] {
        let dir = root.join(split);
        std::fs::create_dir_all(dir.join("images"))?;
        let first = range.start;
        for i in range.clone() {
            save_png(
                &toy.images[i],
                &dir.join("images").join(format!("{}.png", i - first)),
            )?;
        }
        let questions: Vec<(&str, &str, usize)> = toy
            .questions
            .iter()
            .filter(|(i, _, _)| range.contains(i))
            .map(|(i, q, a)| (q.as_str(), a.as_str(), i - first))
            .collect();
        std::fs::write(
            dir.join("questions.json"),
            serde_json::to_string(&questions)?,
        )?;
    }
    Ok(())
}
