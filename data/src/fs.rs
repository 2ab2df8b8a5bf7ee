//! File-system helpers for the whole workspace: atomic file writes, atomic directory copies
//! and TOML reading. They live here because `vqrae-data` is the lowest crate, so every other
//! crate can use them; there is one way to write a file so that a reader (a server
//! reloading a checkpoint, a resumed run) never sees half of it.
//!
//! Every write goes to a hidden temporary sibling named `.<name>.<pid>.<n>.tmp` (unique per
//! process and call, so concurrent writers of the same name do not collide), which is then
//! renamed over the destination: [`write_atomic`] and [`write_atomic_with`] for one file
//! (synced before the rename), [`write_dir_atomic`] and [`copy_dir`] for a whole folder. A
//! failed write removes its temporary.
//! Errors are [`DataError`]s naming the path, so callers whose error type has a
//! `#[from] DataError` variant can use `?` directly.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use crate::error::{DataError, Result};

/// Counts temporaries made by this process, so two in flight never share a name.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary sibling, synced, then renamed over
/// `path`. Creates missing parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| -> Result<()> {
        let write = || -> std::io::Result<()> {
            let mut f = BufWriter::new(std::fs::File::create(tmp)?);
            f.write_all(bytes)?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write().map_err(|e| DataError::io(path, e))
    })
}

/// Like [`write_atomic`] for writers that need a path rather than bytes (safetensors
/// `save`, `image::save`): `write` is given the temporary path to create, which is then
/// synced and renamed over `path`. On error the temporary is removed and the error of
/// `write` is returned unchanged.
pub fn write_atomic_with<E, F>(path: &Path, write: F) -> std::result::Result<(), E>
where
    E: From<DataError>,
    F: FnOnce(&Path) -> std::result::Result<(), E>,
{
    let tmp = temp_sibling(path)?;
    let finish = || -> Result<()> {
        // Sync before the rename: otherwise a crash can leave `path` renamed but empty.
        let sync = std::fs::File::open(&tmp).and_then(|f| f.sync_all());
        sync.and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| DataError::io(path, e))
    };
    let result = write(&tmp).and_then(|()| finish().map_err(E::from));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The SHA-256 of a file's bytes as 64 lowercase hex digits, read in 1 MiB pieces (a 100 MB
/// GGUF is never held whole). What identifies a file for good: a path can later hold other
/// bytes, a hash cannot.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Files [`sha256_model`] hashes at most: a model folder holds a handful, so far more than
/// this is a wrong path (a data root, the repository), refused rather than walked for hours.
pub const MODEL_HASH_MAX_FILES: usize = 10_000;
/// Folder depth [`sha256_model`] descends at most below the model folder.
pub const MODEL_HASH_MAX_DEPTH: usize = 16;
/// Files beside a model that are records about it (written after it, changing without it
/// changing), not part of what it computes.
const NOT_MODEL: [&str; 2] = ["card.json", "qualification.json"];

/// The content hash that identifies a model for good, by the rule of
/// `scripts/check_results.py` (which checks it again later, so the two must agree byte for
/// byte): a file's [`sha256_file`]; for a folder, the sha256 of the text of one line
/// `<file sha256>  <relative path>\n` per file under it (what `sha256sum` prints), sorted
/// by relative path ('/' separators, byte order), leaving out `card.json`,
/// `qualification.json` and names starting with '.'. Result files record it as
/// `<key>_sha256` beside the path under `<key>`.
///
/// Bounded: at most [`MODEL_HASH_MAX_FILES`] files and [`MODEL_HASH_MAX_DEPTH`] levels.
/// Symbolic links inside the folder are refused rather than followed (a link can point out
/// of the model, or in a loop); `path` itself may be one.
pub fn sha256_model(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_dir() {
        return sha256_file(path);
    }
    let mut files = Vec::new();
    list_model_files(path, "", 0, &mut files)?;
    files.sort();
    let mut listing = String::new();
    for rel in &files {
        let hash = sha256_file(&path.join(rel))?;
        listing.push_str(&format!("{hash}  {rel}\n"));
    }
    Ok(sha256_hex(listing.as_bytes()))
}

/// Appends to `files` the '/'-separated paths (relative to the model folder, prefixed by
/// `prefix`) of the files under `dir` that [`sha256_model`] hashes.
fn list_model_files(dir: &Path, prefix: &str, depth: usize, files: &mut Vec<String>) -> Result<()> {
    let invalid = |path: &Path, message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if depth > MODEL_HASH_MAX_DEPTH {
        let why = format!("more than {MODEL_HASH_MAX_DEPTH} folder levels: not a model folder");
        return Err(invalid(dir, why));
    }
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| {
            invalid(
                &path,
                "a file name that is not UTF-8 cannot be hashed".into(),
            )
        })?;
        let rel = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if kind.is_symlink() {
            let why = "a symbolic link inside a model folder is not hashed: copy its target in";
            return Err(invalid(&path, why.into()));
        } else if kind.is_dir() {
            list_model_files(&path, &format!("{rel}/"), depth + 1, files)?;
        } else if kind.is_file() && !name.starts_with('.') && !NOT_MODEL.contains(&name.as_str()) {
            if files.len() >= MODEL_HASH_MAX_FILES {
                let why = format!("more than {MODEL_HASH_MAX_FILES} files: not a model folder");
                return Err(invalid(dir, why));
            }
            files.push(rel);
        }
    }
    Ok(())
}

/// 64 lowercase hex digits of the SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads and parses a TOML file; errors name the file (and, for parse errors, the line).
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    toml::from_str(&text).map_err(|source| DataError::Toml {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Copies the directory `from` (recursively: files and sub-folders) to `to`, replacing
/// `to` if it exists, through [`write_dir_atomic`], so `to` is never a half copy. Symbolic
/// links are followed (their targets are copied).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    write_dir_atomic(to, |tmp| copy_tree(from, tmp))
}

/// Writes a whole directory atomically: `write` fills a fresh, empty temporary sibling
/// folder, which then replaces `dir` (an old `dir` is moved aside, the new one renamed into
/// place, the old one removed). A reader (or a crash) never sees files from two different
/// writes, e.g. a config from one save and weights from another. Creates missing parent
/// folders. On error the temporary is removed and the error of `write` is returned
/// unchanged; if the swap itself fails, the old `dir` is put back.
pub fn write_dir_atomic<E, F>(dir: &Path, write: F) -> std::result::Result<(), E>
where
    E: From<DataError>,
    F: FnOnce(&Path) -> std::result::Result<(), E>,
{
    let tmp = temp_sibling(dir)?;
    let result = std::fs::create_dir(&tmp)
        .map_err(|e| E::from(DataError::io(&tmp, e)))
        .and_then(|()| write(&tmp))
        .and_then(|()| swap_dir(&tmp, dir).map_err(E::from));
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Puts the folder `new` in place of `dir`: any old `dir` is renamed aside first and removed
/// only once `new` is in place (restored if the rename of `new` fails).
fn swap_dir(new: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return std::fs::rename(new, dir).map_err(|e| DataError::io(dir, e));
    }
    let old = temp_sibling(dir)?;
    std::fs::rename(dir, &old).map_err(|e| DataError::io(dir, e))?;
    if let Err(e) = std::fs::rename(new, dir) {
        let _ = std::fs::rename(&old, dir);
        return Err(DataError::io(dir, e));
    }
    std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))
}

/// Copies the contents of `from` into a new folder `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| DataError::io(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| DataError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(from, e))?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let file_type = entry.file_type().map_err(|e| DataError::io(&src, e))?;
        if file_type.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).map_err(|e| DataError::io(&src, e))?;
        }
    }
    Ok(())
}

/// A fresh hidden temporary path next to `path` (`.<name>.<pid>.<n>.tmp`), after creating
/// `path`'s parent folder.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| DataError::Invalid {
        path: path.to_path_buf(),
        message: "not a file path".into(),
    })?;
    std::fs::create_dir_all(&parent).map_err(|e| DataError::io(&parent, e))?;
    Ok(parent.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sha256_file_matches_the_standard_test_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }

    /// What `python3 scripts/check_results.py --hash <path>` prints as the hash of `path`.
    fn checker_hash(path: &Path) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_results.py");
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg("--hash")
            .arg(path)
            .output()
            .expect("python3 runs scripts/check_results.py (the test command needs it too)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().next().unwrap().to_string()
    }

    #[test]
    fn sha256_model_is_the_checkers_rule_for_a_folder_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(model.join(".hidden")).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        std::fs::write(model.join("model.safetensors"), b"weights\0\xff").unwrap();
        std::fs::write(model.join("sub/b.bin"), "b").unwrap();
        std::fs::write(model.join("sub/deeper/c.txt"), "c").unwrap();
        std::fs::write(model.join("sub-a.txt"), "sorted after sub/ by bytes").unwrap();
        std::fs::write(model.join(".hidden/kept.txt"), "in a dot-folder").unwrap();
        for record in ["card.json", "qualification.json", ".tmp", "sub/.x"] {
            std::fs::write(model.join(record), "not the model").unwrap();
        }
        let got = sha256_model(&model).unwrap();
        assert_eq!(got, checker_hash(&model));
        // The documented listing, written out by hand: what `sha256sum` prints, sorted.
        let mut listing = String::new();
        for (rel, bytes) in [
            (".hidden/kept.txt", &b"in a dot-folder"[..]),
            ("config.json", b"{}"),
            ("model.safetensors", b"weights\0\xff"),
            ("sub-a.txt", b"sorted after sub/ by bytes"),
            ("sub/b.bin", b"b"),
            ("sub/deeper/c.txt", b"c"),
        ] {
            listing.push_str(&format!("{}  {rel}\n", sha256_hex(bytes)));
        }
        assert_eq!(got, sha256_hex(listing.as_bytes()));

        // Records beside the model do not change its hash; a changed weight does.
        std::fs::write(model.join("card.json"), "a new card").unwrap();
        assert_eq!(sha256_model(&model).unwrap(), got);
        std::fs::write(model.join("sub/b.bin"), "B").unwrap();
        assert_ne!(sha256_model(&model).unwrap(), got);

        let file = model.join("model.safetensors");
        assert_eq!(sha256_model(&file).unwrap(), sha256_file(&file).unwrap());
        assert_eq!(sha256_model(&file).unwrap(), checker_hash(&file));
        assert!(sha256_model(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn sha256_model_refuses_links_deep_trees_and_too_many_files() {
        let dir = tempfile::tempdir().unwrap();
        let linked = dir.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(dir.path(), linked.join("loop")).unwrap();
        let err = sha256_model(&linked).unwrap_err().to_string();
        assert!(
            err.contains("symbolic link") && err.contains("loop"),
            "{err}"
        );

        let deep = dir.path().join("deep");
        let mut leaf = deep.clone();
        for _ in 0..=MODEL_HASH_MAX_DEPTH + 1 {
            leaf = leaf.join("d");
        }
        std::fs::create_dir_all(&leaf).unwrap();
        let err = sha256_model(&deep).unwrap_err().to_string();
        assert!(err.contains("folder levels"), "{err}");

        let many = dir.path().join("many");
        std::fs::create_dir_all(&many).unwrap();
        for i in 0..=MODEL_HASH_MAX_FILES {
            std::fs::write(many.join(i.to_string()), "").unwrap();
        }
        let err = sha256_model(&many).unwrap_err().to_string();
        assert!(err.contains("files: not a model folder"), "{err}");
    }

    #[test]
    fn write_atomic_round_trips_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.bin");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(&dir.path().join("a/b")), vec!["file.bin"]);
    }

    #[test]
    fn write_atomic_with_passes_a_temp_path_and_cleans_up_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.txt");
        write_atomic_with(&path, |tmp| -> Result<()> {
            assert_ne!(tmp, path);
            assert_eq!(tmp.parent(), path.parent());
            std::fs::write(tmp, "ok").map_err(|e| DataError::io(tmp, e))
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ok");

        let err = write_atomic_with(&path, |tmp| -> Result<()> {
            std::fs::write(tmp, "half").unwrap();
            Err(DataError::Invalid {
                path: tmp.to_path_buf(),
                message: "writer failed".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("writer failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ok");
        assert_eq!(names(dir.path()), vec!["w.txt"]);
    }

    #[test]
    fn write_atomic_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // The parent "folder" is a file, so it cannot be created.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "x").unwrap();
        let err = write_atomic(&blocker.join("f.txt"), b"y").unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("blocker"), "{err}");
        assert!(write_atomic(Path::new("/"), b"y").is_err());
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        steps: u32,
        name: String,
    }

    #[test]
    fn read_toml_parses_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "steps = 3\nname = \"x\"\n").unwrap();
        let conf: Conf = read_toml(&good).unwrap();
        assert_eq!(
            conf,
            Conf {
                steps: 3,
                name: "x".into()
            }
        );

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "steps = 3\nnmae = \"x\"\n").unwrap();
        let err = read_toml::<Conf>(&bad).unwrap_err();
        assert!(matches!(err, DataError::Toml { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("bad.toml") && msg.contains("nmae"), "{msg}");

        let missing = dir.path().join("missing.toml");
        let err = read_toml::<Conf>(&missing).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }

    #[test]
    fn copy_dir_copies_recursively_and_replaces_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("sub/deeper")).unwrap();
        std::fs::write(from.join("a.txt"), "a").unwrap();
        std::fs::write(from.join("sub/b.txt"), "b").unwrap();
        std::fs::write(from.join("sub/deeper/c.txt"), "c").unwrap();

        let to = dir.path().join("out/to");
        copy_dir(&from, &to).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("a.txt")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(to.join("sub/b.txt")).unwrap(), "b");
        let c = std::fs::read_to_string(to.join("sub/deeper/c.txt")).unwrap();
        assert_eq!(c, "c");

        // An existing destination is replaced wholesale: stale files go.
        std::fs::write(to.join("stale.txt"), "old").unwrap();
        std::fs::write(from.join("a.txt"), "a2").unwrap();
        copy_dir(&from, &to).unwrap();
        assert_eq!(names(&to), vec!["a.txt", "sub"]);
        assert_eq!(std::fs::read_to_string(to.join("a.txt")).unwrap(), "a2");
        assert_eq!(names(&dir.path().join("out")), vec!["to"]);
    }

    #[test]
    fn write_dir_atomic_replaces_the_whole_folder_and_cleans_up_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("ckpt");
        let write = |files: &'static [&'static str]| {
            move |tmp: &Path| -> Result<()> {
                assert!(names(tmp).is_empty(), "the temporary starts empty");
                for f in files {
                    std::fs::write(tmp.join(f), f).map_err(|e| DataError::io(tmp, e))?;
                }
                Ok(())
            }
        };
        write_dir_atomic(&ckpt, write(&["a", "b"])).unwrap();
        assert_eq!(names(&ckpt), vec!["a", "b"]);
        write_dir_atomic(&ckpt, write(&["c"])).unwrap();
        assert_eq!(names(&ckpt), vec!["c"]);
        assert_eq!(names(dir.path()), vec!["ckpt"]);

        let err = write_dir_atomic(&ckpt, |tmp: &Path| -> Result<()> {
            std::fs::write(tmp.join("half"), "x").unwrap();
            Err(DataError::Invalid {
                path: tmp.to_path_buf(),
                message: "writer failed".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("writer failed"), "{err}");
        assert_eq!(names(dir.path()), vec!["ckpt"]);
        assert_eq!(names(&ckpt), vec!["c"]);
    }

    #[test]
    fn copy_dir_of_a_missing_source_names_it_and_keeps_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("to");
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(to.join("keep.txt"), "k").unwrap();
        let err = copy_dir(&dir.path().join("nope"), &to).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(names(dir.path()), vec!["to"]);
        assert_eq!(names(&to), vec!["keep.txt"]);
    }
}
