//! `WasmModel`: a pretrained model with adapters. WASM has no file system, so the model comes
//! as file bytes; the TS package runs it in a worker thread so calls do not block JS.

use js_sys::{Array, Float32Array, Object, Uint8Array};
use kronlora_core::api::{self, ModelSource, PretrainedModel, TrainEvent, TrainObserver};
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
        let _ = self.on_event.call1(&JsValue::NULL, &JsValue::from_str(&api::event_json(event)));
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
        let inner = api::load_model(ModelSource::Files(files), options_json).map_err(js_error)?;
        Ok(WasmModel { inner })
    }

    /// JSON `{ architecture, task, report }`.
    pub fn describe(&self) -> Result<String, JsError> {
        api::describe_json(&self.inner).map_err(js_error)
    }

    #[wasm_bindgen(js_name = addAdapter)]
    pub fn add_adapter(&mut self, name: &str, options_json: &str) -> Result<u32, JsError> {
        api::add_adapter(&mut self.inner, name, options_json).map(|n| n as u32).map_err(js_error)
    }

    pub fn embed(&self, texts: Vec<String>, options_json: &str) -> Result<JsValue, JsError> {
        api::embed(&self.inner, &texts, options_json).map(float_rows).map_err(js_error)
    }

    pub fn logits(&self, texts: Vec<String>, options_json: &str) -> Result<JsValue, JsError> {
        api::logits(&self.inner, &texts, options_json).map(float_rows).map_err(js_error)
    }

    pub fn classify(&self, texts: Vec<String>, options_json: &str) -> Result<String, JsError> {
        api::classify_json(&self.inner, &texts, options_json).map_err(js_error)
    }

    /// JSON `{ text, promptTokens, generatedTokens, stoppedAtEos }`; options `{ maxTokens?, temperature?, seed? }`.
    pub fn generate(&self, prompt: &str, options_json: &str) -> Result<String, JsError> {
        api::generate_json(&self.inner, prompt, options_json).map_err(js_error)
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
        api::train_json(&mut self.inner, options_json, &JsStorage::new(storage), &mut observer).map_err(js_error)
    }

    pub fn evaluate(&self, data_json: &str, options_json: &str, storage: JsValue) -> Result<String, JsError> {
        api::evaluate_json(&self.inner, data_json, options_json, &JsStorage::new(storage)).map_err(js_error)
    }

    #[wasm_bindgen(js_name = saveAdapter)]
    pub fn save_adapter(&self, dir: &str, name: Option<String>, storage: JsValue) -> Result<(), JsError> {
        api::save_adapter(&self.inner, &JsStorage::new(storage), dir, name.as_deref()).map_err(js_error)
    }

    #[wasm_bindgen(js_name = exportAdapter)]
    pub fn export_adapter(&self, path: &str, options_json: &str, storage: JsValue) -> Result<(), JsError> {
        api::export_adapter(&self.inner, &JsStorage::new(storage), path, options_json).map_err(js_error)
    }

    #[wasm_bindgen(js_name = saveMerged)]
    pub fn save_merged(&self, path: &str, storage: JsValue) -> Result<(), JsError> {
        api::save_merged(&self.inner, &JsStorage::new(storage), path).map_err(js_error)
    }

    #[wasm_bindgen(js_name = setActiveAdapters)]
    pub fn set_active_adapters(&mut self, json: &str) -> Result<(), JsError> {
        api::set_active_adapters(&mut self.inner, json).map_err(js_error)
    }

    #[wasm_bindgen(js_name = deleteAdapter)]
    pub fn delete_adapter(&mut self, name: &str) -> Result<(), JsError> {
        api::delete_adapter(&mut self.inner, name).map_err(js_error)
    }

    #[wasm_bindgen(js_name = mergeAdapters)]
    pub fn merge_adapters(&mut self) -> Result<u32, JsError> {
        api::merge_adapters(&mut self.inner).map(|n| n as u32).map_err(js_error)
    }

    #[wasm_bindgen(js_name = unmergeAdapters)]
    pub fn unmerge_adapters(&mut self) -> Result<u32, JsError> {
        api::unmerge_adapters(&mut self.inner).map(|n| n as u32).map_err(js_error)
    }

    #[wasm_bindgen(js_name = loadAdapter)]
    pub fn load_adapter(&mut self, dir: &str, options_json: &str, storage: JsValue) -> Result<u32, JsError> {
        api::load_adapter(&mut self.inner, &JsStorage::new(storage), dir, options_json)
            .map(|n| n as u32)
            .map_err(js_error)
    }
}
