//! `WasmModel`: a pretrained model with adapters. WASM has no file system, so the model comes
//! as file bytes; the TS package runs it in a worker thread so calls do not block JS.

use js_sys::{Array, Float32Array, Object, Uint8Array};
use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::PretrainedModel;
use wasm_bindgen::prelude::*;

use crate::{js_error, set};

/// `{ data: Float32Array, width }`, as the Node binding's `FloatRows`.
fn float_rows((data, width): (Vec<f32>, usize)) -> JsValue {
    let obj = Object::new();
    set(&obj, "data", &Float32Array::from(data.as_slice()));
    set(&obj, "width", &JsValue::from(width as u32));
    obj.into()
}

#[wasm_bindgen]
pub struct WasmModel {
    inner: PretrainedModel,
}

#[wasm_bindgen]
impl WasmModel {
    /// `names[i]` is the file name of `contents[i]` (a Uint8Array); `options_json` is
    /// `{ task?, numLabels?, seed? }`.
    pub fn load(names: Vec<String>, contents: Array, options_json: &str) -> Result<WasmModel, JsError> {
        if names.len() as u32 != contents.length() {
            return Err(JsError::new("[ERR_INVALID_OPTION] load: one content per file name"));
        }
        let files = names
            .into_iter()
            .zip(contents.iter())
            .map(|(name, bytes)| {
                let bytes = bytes.dyn_into::<Uint8Array>().map_err(|_| JsError::new(&format!("[ERR_INVALID_OPTION] file {name}: contents must be a Uint8Array")))?;
                Ok((name, bytes.to_vec()))
            })
            .collect::<Result<_, JsError>>()?;
        let inner = PretrainedModel::load(ModelSource::Files(files), options_json).map_err(js_error)?;
        Ok(WasmModel { inner })
    }

    /// JSON `{ architecture, task, report }`.
    pub fn describe(&self) -> Result<String, JsError> {
        self.inner.describe_json().map_err(js_error)
    }

    #[wasm_bindgen(js_name = addAdapter)]
    pub fn add_adapter(&mut self, name: &str, options_json: &str) -> Result<u32, JsError> {
        self.inner.add_adapter(name, options_json).map(|n| n as u32).map_err(js_error)
    }

    pub fn embed(&self, texts: Vec<String>) -> Result<JsValue, JsError> {
        self.inner.embed(&texts).map(float_rows).map_err(js_error)
    }

    pub fn logits(&self, texts: Vec<String>) -> Result<JsValue, JsError> {
        self.inner.logits(&texts).map(float_rows).map_err(js_error)
    }

    pub fn classify(&self, texts: Vec<String>) -> Result<String, JsError> {
        self.inner.classify_json(&texts).map_err(js_error)
    }

    pub fn generate(&self, prompt: &str, max_tokens: u32, temperature: f64, seed: f64) -> Result<String, JsError> {
        self.inner.generate_json(prompt, max_tokens, temperature, seed).map_err(js_error)
    }
}
