//! JSONL records a user brings: one JSON object per line, either
//! `{"image": ..., "caption": ...}` or `{"image": ..., "question": ..., "answer": ...}`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One record. Serialises to the same flat objects [`read_jsonl`] accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Caption {
        image: PathBuf,
        caption: String,
    },
    Qa {
        image: PathBuf,
        question: String,
        answer: String,
    },
}

impl Record {
    pub fn image(&self) -> &Path {
        match self {
            Record::Caption { image, .. } | Record::Qa { image, .. } => image,
        }
    }
}

/// Every field a line may have; which ones are present decides the record kind. Unknown
/// fields are refused so that a typo ("captoin") is not silently dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    image: Option<String>,
    caption: Option<String>,
    question: Option<String>,
    answer: Option<String>,
}

/// Reads a JSONL file. Blank lines are skipped; relative image paths are resolved against
/// the folder of the JSONL file (the file is usually shipped next to its images). Errors
/// name the file and the 1-based line.
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut records = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let err = |message: String| DataError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let text = std::str::from_utf8(raw).map_err(|e| err(format!("not UTF-8: {e}")))?;
        let text = if i == 0 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let image = match line.image {
            Some(s) if !s.trim().is_empty() => base.join(s),
            Some(_) => return Err(err("\"image\" is empty".into())),
            None => return Err(err("missing \"image\"".into())),
        };
        let record = match (line.caption, line.question, line.answer) {
            (Some(caption), None, None) => Record::Caption { image, caption },
            (None, Some(question), Some(answer)) => Record::Qa {
                image,
                question,
                answer,
            },
            (Some(_), _, _) => {
                return Err(err(
                    "a caption record cannot also have \"question\"/\"answer\"; write two records"
                        .into(),
                ))
            }
            (None, question, _) => {
                let missing = if question.is_none() {
                    "question"
                } else {
                    "answer"
                };
                return Err(err(format!(
                    "missing \"{missing}\": expected {{image, caption}} or {{image, question, answer}}"
                )));
            }
        };
        records.push(record);
    }
    Ok(records)
}

/// Writes records, one per line, atomically. Image paths are written as they are.
#[cfg(test)]
pub(crate) fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    let mut out = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| DataError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    crate::fs::write_atomic(path, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_both_kinds_and_resolves_paths() {
        let (dir, path) = write(
            "\u{feff}{\"image\": \"a.png\", \"caption\": \"a red circle\"}\n\
             \n   \r\n\
             {\"question\": \"what color?\", \"image\": \"/abs/b.png\", \"answer\": \"red\"}\r\n",
        );
        let recs = read_jsonl(&path).unwrap();
        assert_eq!(
            recs,
            [
                Record::Caption {
                    image: dir.path().join("a.png"),
                    caption: "a red circle".into()
                },
                Record::Qa {
                    image: "/abs/b.png".into(),
                    question: "what color?".into(),
                    answer: "red".into()
                },
            ]
        );
        // Writing and reading back gives the same records (absolute paths stay as they are).
        let out = dir.path().join("sub/out.jsonl");
        write_jsonl(&out, &recs).unwrap();
        assert_eq!(read_jsonl(&out).unwrap(), recs);
        let first = std::fs::read_to_string(&out).unwrap();
        assert!(first.starts_with("{\"image\":"), "{first}");
    }

    fn line_of(text: &str) -> (usize, String) {
        let (_dir, path) = write(text);
        match read_jsonl(&path).unwrap_err() {
            e @ DataError::Json { line, .. } => {
                let msg = e.to_string();
                assert!(msg.contains("data.jsonl:"), "{msg}");
                (line, msg)
            }
            e => panic!("expected a JSON error, got {e:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let ok = "{\"image\": \"a.png\", \"caption\": \"x\"}\n";
        let (line, msg) = line_of(&format!(
            "{ok}\n{ok}{{\"image\": \"a.png\", \"captoin\": \"x\"}}\n"
        ));
        assert_eq!(line, 4);
        assert!(msg.contains("captoin"), "{msg}");
        assert_eq!(line_of(&format!("{ok}not json\n")).0, 2);
        assert_eq!(line_of("[1, 2]").0, 1);
        assert!(line_of("{\"caption\": \"x\"}")
            .1
            .contains("missing \"image\""));
        assert!(line_of("{\"image\": \"\", \"caption\": \"x\"}")
            .1
            .contains("empty"));
        assert!(line_of("{\"image\": \"a\", \"question\": \"q\"}")
            .1
            .contains("missing \"answer\""));
        assert!(line_of("{\"image\": \"a\"}")
            .1
            .contains("missing \"question\""));
        assert!(line_of(
            "{\"image\": \"a\", \"caption\": \"c\", \"question\": \"q\", \"answer\": \"a\"}"
        )
        .1
        .contains("two records"));
        assert!(line_of("{\"image\": 3, \"caption\": \"c\"}")
            .1
            .contains("data.jsonl:1"));
        let (_dir, path) = write("");
        std::fs::write(&path, b"{\"image\": \"a\", \"caption\": \"\xff\"}").unwrap();
        assert!(read_jsonl(&path).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_jsonl(Path::new("/nope/x.jsonl")).unwrap_err();
        assert!(err.to_string().contains("/nope/x.jsonl"), "{err}");
    }
}
