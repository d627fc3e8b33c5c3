//! What kronlora may write, replace and remove: only files and directories it wrote and can
//! recognise as its own, by their names and a marker file whose content says so (an
//! `adapter_config.json` with a `kronlora` block, kronlora's `trainer_state.json`). Everything
//! else in a target directory survives; a write that would replace anything else is refused with
//! `WouldOverwrite` before anything is touched. Written once here, on the `Storage` primitives,
//! so the native and the WASM backends behave alike.
//!
//! A new directory appears atomically: written into a temporary sibling, then renamed into place.
//! In an existing directory each of kronlora's files is replaced on its own, atomically (a
//! temporary file in the same directory renamed over it), in the order given: data first and the
//! marker last, so a write cut short leaves a marker that disagrees with the data, or no marker
//! (and then the next write is refused rather than guessing). Symbolic links are never followed:
//! a link where kronlora would write is refused, one where it would remove is left alone.

use std::sync::atomic::{AtomicU64, Ordering};

use super::storage::{join, EntryKind, Storage};
use crate::error::{Error, Result};

/// A file whose content tells whether kronlora wrote it.
#[derive(Clone, Copy)]
pub struct Marker {
    pub file: &'static str,
    /// What kronlora's version of the file holds, for messages.
    pub holds: &'static str,
    pub is_ours: fn(&[u8]) -> bool,
}

/// A kind of directory kronlora writes: the file names it owns there, and its markers (among them).
pub struct OwnedLayout {
    /// What the directory is, for messages ("adapter").
    pub what: &'static str,
    pub files: &'static [&'static str],
    pub markers: &'static [Marker],
}

/// Where a write will go, once `check_writable` allowed it.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing is there: the directory is created whole.
    New,
    /// A real directory: kronlora's files are replaced one by one, everything else stays.
    Existing,
}

fn refuse(what: String) -> Error {
    Error::WouldOverwrite(what)
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Missing => "missing",
        EntryKind::File => "a file",
        EntryKind::Dir => "a directory",
        EntryKind::Symlink => "a symbolic link",
        EntryKind::Other => "a special file",
    }
}

/// Whether `marker` is a regular file in `dir` that kronlora wrote; None when it is absent.
fn marker_state(storage: &dyn Storage, dir: &str, marker: &Marker) -> Result<Option<bool>> {
    let path = join(dir, marker.file);
    Ok(match storage.kind(&path)? {
        EntryKind::Missing => None,
        EntryKind::File => Some((marker.is_ours)(&storage.read(&path)?)),
        _ => Some(false),
    })
}

/// Whether `dir` is a real directory (not a link) holding kronlora's `marker`.
pub fn is_owned_dir(storage: &dyn Storage, dir: &str, marker: &Marker) -> Result<bool> {
    Ok(storage.kind(dir)? == EntryKind::Dir && marker_state(storage, dir, marker)? == Some(true))
}

/// May kronlora write the files `names` (of `layout`) into `dir`? Refuses with `WouldOverwrite`
/// when that would replace anything kronlora cannot recognise as its own; reads only.
pub fn check_writable(storage: &dyn Storage, dir: &str, layout: &OwnedLayout, names: &[&str]) -> Result<Target> {
    let what = layout.what;
    match storage.kind(dir)? {
        EntryKind::Missing => return Ok(Target::New),
        EntryKind::Dir => {}
        EntryKind::Symlink => {
            return Err(refuse(format!(
                "{dir} is a symbolic link; kronlora writes its {what} only into a real directory and never through a link: pass the directory it points to, or a new path"
            )))
        }
        kind => {
            return Err(refuse(format!(
                "{dir} is {}, not a directory; kronlora would have to replace it to write its {what}: pass a new path or an existing directory",
                kind_name(kind)
            )))
        }
    }
    let mut present: Vec<&str> = Vec::new();
    for name in names {
        debug_assert!(layout.files.contains(name), "{name} is not a file of the {what} layout");
        let path = join(dir, name);
        match storage.kind(&path)? {
            EntryKind::Missing => {}
            EntryKind::File => present.push(name),
            kind => {
                return Err(refuse(format!(
                    "{path} is {}; kronlora writes a file of its {what} there and will not replace it: move it away, or pass another directory",
                    kind_name(kind)
                )))
            }
        }
    }
    if present.is_empty() {
        return Ok(Target::Existing);
    }
    let mut owned = false;
    for marker in layout.markers {
        match marker_state(storage, dir, marker)? {
            Some(true) => owned = true,
            Some(false) if names.contains(&marker.file) => {
                return Err(refuse(format!(
                    "{} was not written by kronlora (it has no {}); kronlora will not replace it: move it away, or pass another directory",
                    join(dir, marker.file),
                    marker.holds
                )))
            }
            _ => {}
        }
    }
    if !owned {
        let markers: Vec<&str> = layout.markers.iter().map(|m| m.file).collect();
        return Err(refuse(format!(
            "{} exists and nothing in {dir} shows kronlora wrote it (no kronlora {}); kronlora will not replace it: move it away, or pass another directory",
            join(dir, present[0]),
            markers.join(" or ")
        )));
    }
    Ok(Target::Existing)
}

/// A name no other write uses at the same time (exclusive creation catches the rest).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Write `files` (name, bytes; in this order) into `dir` as the module docs say, after
/// `check_writable` allowed it.
pub fn write_owned_dir(
    storage: &dyn Storage,
    dir: &str,
    layout: &OwnedLayout,
    files: &[(String, Vec<u8>)],
) -> Result<()> {
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    match check_writable(storage, dir, layout, &names)? {
        Target::New => write_new_dir(storage, dir, files),
        Target::Existing => files.iter().try_for_each(|(name, bytes)| replace_file(storage, dir, name, bytes)),
    }
}

/// Write the single file `path` atomically (a temporary sibling renamed into place): new, or
/// replacing a file `is_ours` recognises; anything else there is refused before anything is
/// touched. `what` names the file in messages ("GGUF LoRA file").
pub fn write_owned_file(
    storage: &dyn Storage,
    path: &str,
    what: &str,
    is_ours: fn(Vec<u8>) -> bool,
    bytes: &[u8],
) -> Result<()> {
    let base = path.trim_end_matches(['/', '\\']);
    if base.is_empty() || base != path {
        return Err(Error::InvalidOption(format!("`{path}` is not a file path; pass the {what}'s path")));
    }
    match storage.kind(base)? {
        EntryKind::Missing => {}
        EntryKind::File if is_ours(storage.read(base)?) => {}
        EntryKind::File => {
            return Err(refuse(format!(
                "{base} exists and is not a {what} kronlora wrote; choose another path or move it away"
            )))
        }
        other => {
            return Err(refuse(format!(
                "{base} is {}; a {what} is written only as a new or kronlora's own file",
                kind_name(other)
            )))
        }
    }
    let (dir, name) = match parent_dir(base) {
        Some(parent) => {
            storage.create_dir_all(parent)?;
            (parent, &base[parent.len() + 1..])
        }
        None => ("", base),
    };
    replace_file(storage, dir, name, bytes)
}

/// The directory holding `path`. On wasm32, `std::path` knows only '/', while Node on Windows
/// hands over `C:\\runs\\out`: there both separators count.
fn parent_dir(path: &str) -> Option<&str> {
    #[cfg(target_arch = "wasm32")]
    let parent = path.rsplit_once(['/', '\\']).map(|(p, _)| p);
    #[cfg(not(target_arch = "wasm32"))]
    let parent = std::path::Path::new(path).parent().and_then(|p| p.to_str());
    parent.filter(|p| !p.is_empty())
}

fn write_new_dir(storage: &dyn Storage, dir: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
    let base = dir.trim_end_matches(['/', '\\']);
    if let Some(parent) = parent_dir(base) {
        storage.create_dir_all(parent)?;
    }
    let tmp = format!("{base}.tmp-{}", unique_suffix());
    storage.create_dir(&tmp)?;
    let written = (|| {
        for (name, bytes) in files {
            storage.write_new_file(&join(&tmp, name), bytes)?;
        }
        storage.rename(&tmp, base)
    })();
    if written.is_err() {
        for (name, _) in files {
            let _ = storage.remove_file(&join(&tmp, name));
        }
        let _ = storage.remove_empty_dir(&tmp);
    }
    written
}

fn replace_file(storage: &dyn Storage, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = join(dir, &format!(".{name}.tmp-{}", unique_suffix()));
    let written = storage.write_new_file(&tmp, bytes).and_then(|_| storage.rename(&tmp, &join(dir, name)));
    if written.is_err() {
        let _ = storage.remove_file(&tmp);
    }
    written
}

/// Remove kronlora's files of `layout` from `dir`, a real directory holding kronlora's `marker`
/// (else nothing happens), then `dir` itself if nothing else is left in it. The marker goes first,
/// so a removal cut short no longer passes for a complete directory.
pub fn remove_owned_dir(storage: &dyn Storage, dir: &str, layout: &OwnedLayout, marker: &Marker) -> Result<()> {
    if !is_owned_dir(storage, dir, marker)? {
        return Ok(());
    }
    // Another marker file of the layout that kronlora did not write (a PEFT adapter copied into
    // a checkpoint) makes the files beside it someone else's too: remove nothing.
    for other in layout.markers.iter().filter(|m| m.file != marker.file) {
        let path = join(dir, other.file);
        if storage.kind(&path)? != EntryKind::Missing && !is_owned_dir(storage, dir, other)? {
            return Ok(());
        }
    }
    let is_marker = |name: &&str| layout.markers.iter().any(|m| m.file == *name);
    let order = std::iter::once(marker.file)
        .chain(layout.files.iter().copied().filter(|n| !is_marker(n)))
        .chain(layout.files.iter().copied().filter(|n| is_marker(n) && *n != marker.file));
    for name in order {
        let path = join(dir, name);
        if storage.kind(&path)? == EntryKind::File {
            storage.remove_file(&path)?;
        }
    }
    if storage.list(dir)?.is_empty() {
        storage.remove_empty_dir(dir)?;
    }
    Ok(())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::io::FsStorage;

    const MARK: Marker = Marker { file: "mark.json", holds: "`ours: true`", is_ours: |b| b == b"ours" };
    const LAYOUT: OwnedLayout =
        OwnedLayout { what: "test output", files: &["data.bin", "mark.json"], markers: &[MARK] };

    fn scratch(name: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("kronlora-owned-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    fn files(data: &[u8]) -> Vec<(String, Vec<u8>)> {
        vec![("data.bin".into(), data.to_vec()), ("mark.json".into(), b"ours".to_vec())]
    }

    #[test]
    fn a_new_directory_appears_whole_and_leaves_no_temporary() {
        let root = scratch("new");
        let dir = root.join("a/b").display().to_string();
        write_owned_dir(&FsStorage, &dir, &LAYOUT, &files(b"one")).unwrap();
        assert_eq!(std::fs::read(root.join("a/b/data.bin")).unwrap(), b"one");
        assert_eq!(FsStorage.list(&root.join("a").display().to_string()).unwrap(), vec!["b".to_string()]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn own_files_are_replaced_and_foreign_ones_survive() {
        let root = scratch("replace");
        let dir = root.display().to_string();
        std::fs::write(root.join("notes.txt"), b"mine").unwrap();
        write_owned_dir(&FsStorage, &dir, &LAYOUT, &files(b"one")).unwrap();
        write_owned_dir(&FsStorage, &dir, &LAYOUT, &files(b"two")).unwrap();
        assert_eq!(std::fs::read(root.join("data.bin")).unwrap(), b"two");
        let mut names = FsStorage.list(&dir).unwrap();
        names.sort();
        assert_eq!(names, ["data.bin", "mark.json", "notes.txt"], "no temporary left behind");
        remove_owned_dir(&FsStorage, &dir, &LAYOUT, &MARK).unwrap();
        assert_eq!(FsStorage.list(&dir).unwrap(), ["notes.txt"], "the directory stays while a foreign file is in it");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn removal_leaves_a_directory_whose_second_marker_is_foreign() {
        // Like a checkpoint (state marker) into which someone copied a PEFT adapter (config marker).
        const OTHER: Marker = Marker { file: "other.json", holds: "`ours`", is_ours: |b| b == b"ours" };
        const TWO: OwnedLayout = OwnedLayout {
            what: "test output",
            files: &["data.bin", "other.json", "mark.json"],
            markers: &[MARK, OTHER],
        };
        let root = scratch("two-markers");
        let dir = root.display().to_string();
        write_owned_dir(&FsStorage, &dir, &LAYOUT, &files(b"one")).unwrap();
        std::fs::write(root.join("other.json"), b"theirs").unwrap();
        remove_owned_dir(&FsStorage, &dir, &TWO, &MARK).unwrap();
        let mut names = FsStorage.list(&dir).unwrap();
        names.sort();
        assert_eq!(names, ["data.bin", "mark.json", "other.json"], "nothing removed beside a foreign marker");
        std::fs::write(root.join("other.json"), b"ours").unwrap();
        remove_owned_dir(&FsStorage, &dir, &TWO, &MARK).unwrap();
        assert!(!root.exists(), "all its own files gone, then the directory");
    }

    #[test]
    fn unrecognised_files_links_and_plain_files_are_refused_untouched() {
        let root = scratch("refuse");
        let dir = root.display().to_string();
        // A file of kronlora's name without kronlora's marker.
        std::fs::write(root.join("data.bin"), b"theirs").unwrap();
        let e = write_owned_dir(&FsStorage, &dir, &LAYOUT, &files(b"x")).unwrap_err();
        assert_eq!(e.code(), "ERR_WOULD_OVERWRITE", "{e}");
        // A marker that is not kronlora's.
        std::fs::write(root.join("mark.json"), b"theirs").unwrap();
        let e = write_owned_dir(&FsStorage, &dir, &LAYOUT, &files(b"x")).unwrap_err();
        assert!(e.to_string().contains("mark.json was not written by kronlora"), "{e}");
        assert_eq!(std::fs::read(root.join("data.bin")).unwrap(), b"theirs");
        // A plain file and a link where the directory would go.
        let file = root.join("plain");
        std::fs::write(&file, b"plain").unwrap();
        assert_eq!(
            write_owned_dir(&FsStorage, &file.display().to_string(), &LAYOUT, &files(b"x")).unwrap_err().code(),
            "ERR_WOULD_OVERWRITE"
        );
        #[cfg(unix)]
        {
            let link = root.join("link");
            std::os::unix::fs::symlink(root.join("elsewhere"), &link).unwrap();
            assert_eq!(
                write_owned_dir(&FsStorage, &link.display().to_string(), &LAYOUT, &files(b"x")).unwrap_err().code(),
                "ERR_WOULD_OVERWRITE"
            );
            remove_owned_dir(&FsStorage, &link.display().to_string(), &LAYOUT, &MARK).unwrap();
            assert!(std::fs::symlink_metadata(&link).is_ok());
        }
        let mut names = FsStorage.list(&dir).unwrap();
        names.sort();
        assert_eq!(names.iter().filter(|n| n.contains("tmp")).count(), 0);
        assert_eq!(std::fs::read(&file).unwrap(), b"plain");
        std::fs::remove_dir_all(root).unwrap();
    }
}
