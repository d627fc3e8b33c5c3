//! A `Storage` in memory: checkpoints and adapters written and read without touching the disk,
//! so that cases are fast and independent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kronlora_core::io::{join, Storage};
use kronlora_core::{Error, Result};

#[derive(Default)]
pub struct MemoryStorage {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    pub fn new(files: BTreeMap<String, Vec<u8>>) -> Self {
        MemoryStorage { files: Mutex::new(files) }
    }

    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.files.lock().unwrap().clone()
    }

    fn inside(dir: &str) -> String {
        format!("{}/", dir.trim_end_matches('/'))
    }
}

impl Storage for MemoryStorage {
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.files.lock().unwrap().get(path).cloned().ok_or_else(|| Error::Io(format!("{path}: no such file")))
    }

    fn exists(&self, path: &str) -> bool {
        let files = self.files.lock().unwrap();
        files.contains_key(path) || files.keys().any(|k| k.starts_with(&Self::inside(path)))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = Self::inside(dir);
        let files = self.files.lock().unwrap();
        let mut names: Vec<String> = files.keys().filter_map(|k| k.strip_prefix(&prefix)).map(|rest| rest.split('/').next().unwrap_or(rest).to_string()).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::Io(format!("{dir}: no such directory")));
        }
        Ok(names)
    }

    fn write_dir(&self, dir: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
        let prefix = Self::inside(dir);
        let mut all = self.files.lock().unwrap();
        all.retain(|k, _| !k.starts_with(&prefix));
        for (name, bytes) in files {
            all.insert(join(dir, name), bytes.clone());
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &str) -> Result<()> {
        let prefix = Self::inside(dir);
        self.files.lock().unwrap().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
}
