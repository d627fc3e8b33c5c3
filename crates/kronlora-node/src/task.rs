//! Long work runs on libuv's thread pool: a core closure wrapped as a napi `Task` (a Promise
//! in JS), with panics caught and reported as errors.

use std::panic::{catch_unwind, AssertUnwindSafe};

use kronlora_core::api;
use napi::bindgen_prelude::*;
use napi::{Env, Task};

use crate::js_error;

type Work<T> = Box<dyn FnOnce() -> api::Result<T> + Send>;

pub struct CoreTask<T: Send + 'static> {
    work: Option<Work<T>>,
}

impl<T: ToNapiValue + TypeName + Send + 'static> CoreTask<T> {
    pub fn new(work: impl FnOnce() -> api::Result<T> + Send + 'static) -> AsyncTask<Self> {
        AsyncTask::new(CoreTask { work: Some(Box::new(work)) })
    }
}

pub fn panic_error(payload: Box<dyn std::any::Any + Send>) -> napi::Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    napi::Error::new(
        Status::GenericFailure,
        format!("[ERR_INTERNAL] kronlora panicked (please report this bug): {what}"),
    )
}

impl<T: ToNapiValue + TypeName + Send + 'static> Task for CoreTask<T> {
    type Output = T;
    type JsValue = T;

    fn compute(&mut self) -> Result<T> {
        let work = self.work.take().ok_or_else(|| napi::Error::new(Status::GenericFailure, "task already ran"))?;
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(result) => result.map_err(js_error),
            Err(payload) => Err(panic_error(payload)),
        }
    }

    fn resolve(&mut self, _env: Env, output: T) -> Result<T> {
        Ok(output)
    }
}
