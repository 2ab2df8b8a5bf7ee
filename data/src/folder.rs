//! A folder of images a user brings.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// File extensions treated as images (compared case-insensitively).
pub(crate) const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "gif", "webp"];

/// True if the path has one of [`IMAGE_EXTENSIONS`].
pub(crate) fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// All image files under `dir`, recursively, sorted. Hidden entries (names starting with
/// '.') are skipped, and symlinked folders are not followed (they could loop); symlinked
/// files are listed.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
        ));
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if is_image_path(&path) && (kind.is_file() || path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_images_recursively_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "b.PNG",
            "a.jpg",
            "sub/c.jpeg",
            "sub/deeper/d.webp",
            "e.Gif",
            "f.bmp",
            "notes.txt",
            "noext",
            ".hidden.png",
            "sub/.git/x.png",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        // A folder named like an image is not an image.
        std::fs::create_dir_all(root.join("folder.png")).unwrap();
        let got: Vec<String> = list_images(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "a.jpg",
                "b.PNG",
                "e.Gif",
                "f.bmp",
                "sub/c.jpeg",
                "sub/deeper/d.webp"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_do_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        assert_eq!(list_images(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn missing_folder_is_an_error() {
        let err = list_images(Path::new("/no/such/folder")).unwrap_err();
        assert!(err.to_string().contains("/no/such/folder"), "{err}");
    }
}
