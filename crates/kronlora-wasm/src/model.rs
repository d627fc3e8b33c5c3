//! `WasmModel`: a pretrained model with adapters. WASM has no file system, so the model comes
//! as file bytes; the TS package runs it in a worker thread so calls do not block JS.

use js_sys::{Array, Float32Array, Object, Uint8Array};
use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{evaluate_json, train_json, TrainEvent, TrainObserver};
use wasm_bindgen::prelude::*;

use crate::storage::JsStorage;
use crate::{js_error, set};

/// `{ data: Float32Array, width }`, as the Node binding's `FloatRows`.
fn float_rows((data, width): (Vec<f32>, usize)) -> JsValue {
    let obj = Object::new();
    set(&obj, "data", &Float32Array::from(data.as_slice()));
    set(&obj, "width", &JsValue::from(width as u32));
    obj.into()
}

/// Events go to a JS callback; `should_stop` asks another (it reads a shared flag, because
/// the worker cannot receive messages while it trains).
struct CallbackObserver {
    on_event: js_sys::Function,
    should_stop: js_sys::Function,
}

impl TrainObserver for CallbackObserver {
    fn event(&mut self, event: &TrainEvent) {
        let _ = self.on_event.call1(&JsValue::NULL, &JsValue::from_str(&event.to_json()));
    }
    fn should_stop(&mut self) -> bool {
        self.should_stop.call0(&JsValue::NULL).is_ok_and(|v| v.is_truthy())
    }
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
                let bytes = bytes.dyn_into::<Uint8Array>().map_err(|_| {
                    JsError::new(&format!("[ERR_INVALID_OPTION] file {name}: contents must be a Uint8Array"))
                })?;
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

    /// Train; `storage` reads data and writes checkpoints (see `JsStorage`). Returns the result JSON.
    pub fn train(
        &mut self,
        options_json: &str,
        storage: JsValue,
        on_event: js_sys::Function,
        should_stop: js_sys::Function,
    ) -> Result<String, JsError> {
        let mut observer = CallbackObserver { on_event, should_stop };
        train_json(&mut self.inner, options_json, &JsStorage::new(storage), &mut observer).map_err(js_error)
    }

    pub fn evaluate(&self, data_json: &str, options_json: &str, storage: JsValue) -> Result<String, JsError> {
        evaluate_json(&self.inner, data_json, options_json, &JsStorage::new(storage)).map_err(js_error)
    }

    #[wasm_bindgen(js_name = saveAdapter)]
    pub fn save_adapter(&self, dir: &str, name: Option<String>, storage: JsValue) -> Result<(), JsError> {
        self.inner.save_adapter(&JsStorage::new(storage), dir, name.as_deref()).map_err(js_error)
    }

    #[wasm_bindgen(js_name = loadAdapter)]
    pub fn load_adapter(&mut self, dir: &str, name: Option<String>, storage: JsValue) -> Result<u32, JsError> {
        self.inner.load_adapter(&JsStorage::new(storage), dir, name.as_deref()).map(|n| n as u32).map_err(js_error)
    }
}
