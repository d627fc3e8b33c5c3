//! `Storage` over JavaScript functions: WASM has no file system, so the worker that hosts the
//! model passes one built on Node's `fs` (atomic directory writes are done there).

use js_sys::{Array, Function, Reflect, Uint8Array};
use kronlora_core::io::Storage;
use kronlora_core::{Error, Result};
use wasm_bindgen::prelude::*;

/// `{ read(path): Uint8Array, exists(path): boolean, list(dir): string[],
///    writeDir(dir, names: string[], contents: Uint8Array[]), removeDir(dir) }`
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
            let message = Reflect::get(&e, &JsValue::from_str("message")).ok().and_then(|m| m.as_string()).unwrap_or_else(|| format!("{e:?}"));
            Error::Io(message)
        })
    }
}

impl Storage for JsStorage {
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let bytes = self.call("read", &[JsValue::from_str(path)])?;
        Ok(bytes.dyn_into::<Uint8Array>().map_err(|_| Error::Io(format!("{path}: storage.read did not return bytes")))?.to_vec())
    }

    fn exists(&self, path: &str) -> bool {
        self.call("exists", &[JsValue::from_str(path)]).is_ok_and(|v| v.is_truthy())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let list = self.call("list", &[JsValue::from_str(dir)])?;
        Ok(Array::from(&list).iter().filter_map(|v| v.as_string()).collect())
    }

    fn write_dir(&self, dir: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
        let names: Array = files.iter().map(|(n, _)| JsValue::from_str(n)).collect();
        let contents: Array = files.iter().map(|(_, b)| JsValue::from(Uint8Array::from(b.as_slice()))).collect();
        self.call("writeDir", &[JsValue::from_str(dir), names.into(), contents.into()]).map(|_| ())
    }

    fn remove_dir(&self, dir: &str) -> Result<()> {
        self.call("removeDir", &[JsValue::from_str(dir)]).map(|_| ())
    }
}
