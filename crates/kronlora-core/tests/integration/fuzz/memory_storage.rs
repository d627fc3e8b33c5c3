//! A `Storage` in memory: checkpoints and adapters written and read without touching the disk,
//! so that cases are fast and independent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use kronlora_core::io::{EntryKind, Storage};
use kronlora_core::{Error, Result};

#[derive(Default)]
struct Tree {
    files: BTreeMap<String, Vec<u8>>,
    /// Directories created explicitly; a directory also exists while it holds a file.
    dirs: BTreeSet<String>,
}

impl Tree {
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = inside(dir);
        let mut names: Vec<String> = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn kind(&self, path: &str) -> EntryKind {
        let path = path.trim_end_matches('/');
        if self.files.contains_key(path) {
            EntryKind::File
        } else if self.dirs.contains(path) || !self.children(path).is_empty() {
            EntryKind::Dir
        } else {
            EntryKind::Missing
        }
    }
}

fn inside(dir: &str) -> String {
    format!("{}/", dir.trim_end_matches('/'))
}

#[derive(Default)]
pub struct MemoryStorage {
    tree: Mutex<Tree>,
}

impl MemoryStorage {
    pub fn new(files: BTreeMap<String, Vec<u8>>) -> Self {
        MemoryStorage { tree: Mutex::new(Tree { files, dirs: BTreeSet::new() }) }
    }

    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.tree.lock().unwrap().files.clone()
    }
}

impl Storage for MemoryStorage {
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.tree.lock().unwrap().files.get(path).cloned().ok_or_else(|| Error::Io(format!("{path}: no such file")))
    }

    fn exists(&self, path: &str) -> bool {
        self.tree.lock().unwrap().kind(path) != EntryKind::Missing
    }

    fn kind(&self, path: &str) -> Result<EntryKind> {
        Ok(self.tree.lock().unwrap().kind(path))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let tree = self.tree.lock().unwrap();
        if tree.kind(dir) != EntryKind::Dir {
            return Err(Error::Io(format!("{dir}: no such directory")));
        }
        Ok(tree.children(dir))
    }

    fn create_dir_all(&self, dir: &str) -> Result<()> {
        let mut tree = self.tree.lock().unwrap();
        let mut path = String::new();
        for part in dir.trim_end_matches('/').split('/') {
            path = if path.is_empty() && !dir.starts_with('/') { part.to_string() } else { format!("{path}/{part}") };
            match tree.kind(&path) {
                EntryKind::Missing => {
                    tree.dirs.insert(path.clone());
                }
                EntryKind::Dir => {}
                _ => return Err(Error::Io(format!("{path}: not a directory"))),
            }
        }
        Ok(())
    }

    fn create_dir(&self, dir: &str) -> Result<()> {
        let mut tree = self.tree.lock().unwrap();
        if tree.kind(dir) != EntryKind::Missing {
            return Err(Error::Io(format!("{dir}: already exists")));
        }
        tree.dirs.insert(dir.trim_end_matches('/').to_string());
        Ok(())
    }

    fn write_new_file(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let mut tree = self.tree.lock().unwrap();
        if tree.kind(path) != EntryKind::Missing {
            return Err(Error::Io(format!("{path}: already exists")));
        }
        tree.files.insert(path.to_string(), bytes.to_vec());
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut tree = self.tree.lock().unwrap();
        match tree.kind(from) {
            EntryKind::File => {
                let bytes = tree.files.remove(from).unwrap_or_default();
                tree.files.insert(to.to_string(), bytes);
            }
            EntryKind::Dir => {
                let (old, new) = (inside(from), inside(to));
                let moved = |key: &String| key.strip_prefix(&old).map(|rest| format!("{new}{rest}"));
                tree.files =
                    std::mem::take(&mut tree.files).into_iter().map(|(k, v)| (moved(&k).unwrap_or(k), v)).collect();
                tree.dirs = std::mem::take(&mut tree.dirs)
                    .into_iter()
                    .map(|d| {
                        if d == from.trim_end_matches('/') {
                            to.trim_end_matches('/').to_string()
                        } else {
                            moved(&d).unwrap_or(d)
                        }
                    })
                    .collect();
            }
            _ => return Err(Error::Io(format!("{from}: no such file or directory"))),
        }
        Ok(())
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        self.tree.lock().unwrap().files.remove(path).map(drop).ok_or_else(|| Error::Io(format!("{path}: no such file")))
    }

    fn remove_empty_dir(&self, dir: &str) -> Result<()> {
        let mut tree = self.tree.lock().unwrap();
        if !tree.children(dir).is_empty() {
            return Err(Error::Io(format!("{dir}: not empty")));
        }
        tree.dirs.remove(dir.trim_end_matches('/'));
        Ok(())
    }
}
