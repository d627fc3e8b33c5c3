//! `NativeModel`: a pretrained model with adapters (`loadModel` in TS). Inference runs off the
//! JS thread; results are JSON strings or flat Float32Arrays, the same as the WASM binding's.

use std::sync::{Arc, RwLock};

use kronlora_core::api::{self, FsStorage, ModelSource, PretrainedModel};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js_error;
use crate::task::CoreTask;
use crate::training::NativeTraining;

/// Row-major rows × width floats.
#[napi(object)]
pub struct FloatRows {
    pub data: Float32Array,
    pub width: u32,
}

#[napi]
pub struct NativeModel {
    inner: Arc<RwLock<PretrainedModel>>,
}

fn busy() -> api::Error {
    api::Error::InvalidState("the model is busy (training, or being changed by another call); await that first".into())
}

impl NativeModel {
    /// Run `f` on the model in the thread pool (a read lock: calls may overlap).
    fn run<T: ToNapiValue + TypeName + Send + 'static>(
        &self,
        f: impl FnOnce(&PretrainedModel) -> api::Result<T> + Send + 'static,
    ) -> AsyncTask<CoreTask<T>> {
        let inner = self.inner.clone();
        // try_read: calls may overlap, but not with training or a change (no silent wait).
        CoreTask::new(move || f(&*inner.try_read().map_err(|_| busy())?))
    }

    /// Run `f` on the model in the thread pool with a write lock (a change: nothing overlaps).
    fn change<T: ToNapiValue + TypeName + Send + 'static>(
        &self,
        f: impl FnOnce(&mut PretrainedModel) -> api::Result<T> + Send + 'static,
    ) -> AsyncTask<CoreTask<T>> {
        let inner = self.inner.clone();
        CoreTask::new(move || f(&mut *inner.try_write().map_err(|_| busy())?))
    }
}

/// Load a model directory or `.gguf` file; `options_json` is `{ task?, numLabels?, seed? }`.
// Called from JS only: napi registers it outside `cfg(test)`.
#[cfg_attr(test, allow(dead_code))]
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model(path: String, options_json: String) -> AsyncTask<CoreTask<NativeModel>> {
    CoreTask::new(move || {
        let model = api::load_model(ModelSource::Path(path.into()), &options_json)?;
        Ok(NativeModel { inner: Arc::new(RwLock::new(model)) })
    })
}

#[napi]
impl NativeModel {
    /// JSON `{ architecture, task, report }`.
    #[napi(catch_unwind)]
    pub fn describe(&self) -> Result<String> {
        api::describe_json(&*self.inner.try_read().map_err(|_| js_error(busy()))?).map_err(js_error)
    }

    /// Add an adapter; returns the number of adapted modules.
    #[napi(catch_unwind)]
    pub fn add_adapter(&self, name: String, options_json: String) -> Result<u32> {
        let mut m = self.inner.try_write().map_err(|_| js_error(busy()))?;
        api::add_adapter(&mut m, &name, &options_json).map(|n| n as u32).map_err(js_error)
    }

    #[napi(ts_return_type = "Promise<FloatRows>")]
    pub fn embed(&self, texts: Vec<String>, options_json: String) -> AsyncTask<CoreTask<FloatRows>> {
        self.run(move |m| {
            api::embed(m, &texts, &options_json)
                .map(|(data, width)| FloatRows { data: data.into(), width: width as u32 })
        })
    }

    #[napi(ts_return_type = "Promise<FloatRows>")]
    pub fn logits(&self, texts: Vec<String>, options_json: String) -> AsyncTask<CoreTask<FloatRows>> {
        self.run(move |m| {
            api::logits(m, &texts, &options_json)
                .map(|(data, width)| FloatRows { data: data.into(), width: width as u32 })
        })
    }

    /// JSON `[{ label, score, scores }]`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn classify(&self, texts: Vec<String>, options_json: String) -> AsyncTask<CoreTask<String>> {
        self.run(move |m| api::classify_json(m, &texts, &options_json))
    }

    /// JSON `{ text, promptTokens, generatedTokens, stoppedAtEos }`; options `{ maxTokens?, temperature?, seed? }`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn generate(&self, prompt: String, options_json: String) -> AsyncTask<CoreTask<String>> {
        self.run(move |m| api::generate_json(m, &prompt, &options_json))
    }

    /// Start training; events and the result come through the returned handle.
    #[napi(catch_unwind)]
    pub fn train(&self, options_json: String) -> Result<NativeTraining> {
        // Fail now, not on the training thread, when the model is in use.
        drop(self.inner.try_write().map_err(|_| js_error(busy()))?);
        Ok(NativeTraining::start(self.inner.clone(), options_json))
    }

    /// JSON `{ loss, accuracy?, perplexity?, examples }`; `data_json` is a path or records.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn evaluate(&self, data_json: String, options_json: String) -> AsyncTask<CoreTask<String>> {
        self.run(move |m| api::evaluate_json(m, &data_json, &options_json, &FsStorage))
    }

    /// Write adapter `name` (default: the only one) to `dir` in PEFT's layout.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save_adapter(&self, dir: String, name: Option<String>) -> AsyncTask<CoreTask<()>> {
        self.run(move |m| api::save_adapter(m, &FsStorage, &dir, name.as_deref()))
    }

    /// Write adapter `name` (default: the only one) to `path` as `{ format, name? }` says:
    /// "peft-lora" (a directory) or "gguf-lora" (a file for llama.cpp).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn export_adapter(&self, path: String, options_json: String) -> AsyncTask<CoreTask<()>> {
        self.run(move |m| api::export_adapter(m, &FsStorage, &path, &options_json))
    }

    /// The model with its active adapters merged, written to `path` (a GGUF file).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save_merged(&self, path: String) -> AsyncTask<CoreTask<()>> {
        self.run(move |m| api::save_merged(m, &FsStorage, &path))
    }

    /// Add the adapter saved in `dir`, options `{ name?, replace? }`; returns the module count.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn load_adapter(&self, dir: String, options_json: String) -> AsyncTask<CoreTask<u32>> {
        self.change(move |m| api::load_adapter(m, &FsStorage, &dir, &options_json).map(|n| n as u32))
    }

    /// `{ adapters, weights? }`: exactly these adapters active, with these weights.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_active_adapters(&self, json: String) -> AsyncTask<CoreTask<()>> {
        self.change(move |m| api::set_active_adapters(m, &json))
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_adapter(&self, name: String) -> AsyncTask<CoreTask<()>> {
        self.change(move |m| api::delete_adapter(m, &name))
    }

    /// Fold the active adapters into the base weights; the number of projections changed.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn merge_adapters(&self) -> AsyncTask<CoreTask<u32>> {
        self.change(|m| api::merge_adapters(m).map(|n| n as u32))
    }

    /// Restore the base weights exactly; the number of projections restored.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn unmerge_adapters(&self) -> AsyncTask<CoreTask<u32>> {
        self.change(|m| api::unmerge_adapters(m).map(|n| n as u32))
    }
}
