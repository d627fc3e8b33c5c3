//! `Storage` over JavaScript functions: WASM has no file system, so the worker that hosts the
//! model passes one built on Node's `fs`. It holds only the primitives; what kronlora may write,
//! replace or remove is decided in the core (`io::write_owned_dir` in kronlora-core), as natively.

use js_sys::{Array, Function, Reflect, Uint8Array};
use kronlora_core::api::{EntryKind, Error, Result, Storage};
use wasm_bindgen::prelude::*;

/// `{ read(path): Uint8Array, exists(path): boolean, kind(path): 'missing' | 'file' | 'dir' |
///    'symlink' | 'other' (lstat), list(dir): string[], createDirAll(dir), createDir(dir),
///    writeNewFile(path, bytes) (exclusive create, then fsync), rename(from, to),
///    removeFile(path), removeEmptyDir(dir) }`
pub struct JsStorage {
    object: JsValue,
}

impl JsStorage {
    pub fn new(object: JsValue) -> Self {
        JsStorage { object }
    }

    fn call(&self, method: &str, args: &[JsValue]) -> Result<JsValue> {
        let f: Function = Reflect::get(&self.object, &JsValue::from_str(method))
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| Error::InvalidState(format!("storage has no `{method}` function")))?;
        let args: Array = args.iter().collect();
        f.apply(&self.object, &args).map_err(|e| {
            let message = Reflect::get(&e, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
                .unwrap_or_else(|| format!("{e:?}"));
            Error::Io(message)
        })
    }

    fn call_path(&self, method: &str, path: &str) -> Result<()> {
        self.call(method, &[JsValue::from_str(path)]).map(|_| ())
    }
}

impl Storage for JsStorage {
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let bytes = self.call("read", &[JsValue::from_str(path)])?;
        Ok(bytes
            .dyn_into::<Uint8Array>()
            .map_err(|_| Error::Io(format!("{path}: storage.read did not return bytes")))?
            .to_vec())
    }

    fn exists(&self, path: &str) -> bool {
        self.call("exists", &[JsValue::from_str(path)]).is_ok_and(|v| v.is_truthy())
    }

    fn kind(&self, path: &str) -> Result<EntryKind> {
        let kind = self.call("kind", &[JsValue::from_str(path)])?.as_string().unwrap_or_default();
        EntryKind::from_name(&kind).ok_or_else(|| Error::Io(format!("{path}: storage.kind returned `{kind}`")))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let list = self.call("list", &[JsValue::from_str(dir)])?;
        Ok(Array::from(&list).iter().filter_map(|v| v.as_string()).collect())
    }

    fn create_dir_all(&self, dir: &str) -> Result<()> {
        self.call_path("createDirAll", dir)
    }

    fn create_dir(&self, dir: &str) -> Result<()> {
        self.call_path("createDir", dir)
    }

    fn write_new_file(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.call("writeNewFile", &[JsValue::from_str(path), Uint8Array::from(bytes).into()]).map(|_| ())
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.call("rename", &[JsValue::from_str(from), JsValue::from_str(to)]).map(|_| ())
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        self.call_path("removeFile", path)
    }

    fn remove_empty_dir(&self, dir: &str) -> Result<()> {
        self.call_path("removeEmptyDir", dir)
    }
}
