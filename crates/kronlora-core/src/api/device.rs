//! The `device` option: `"cpu"` (default), `"cuda"`, `"cuda:N"`, or `"auto"` (the first GPU when
//! this build has CUDA and one is present, else the CPU).

use candle_core::Device;
use serde_json::Value;

use super::fields::invalid;
use crate::error::{Error, Result};

/// How to get a GPU build, for the error when this one has none.
const NO_CUDA: &str = "this build of kronlora has no CUDA support; use device \"cpu\" (or \"auto\"), or build the \
     CUDA addon (kronlora-core with the `cuda` feature) on a machine with the CUDA toolkit";

/// The device a `device` option names; absent or null is the CPU.
pub fn device(value: Option<&Value>) -> Result<Device> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(Device::Cpu),
        Some(Value::String(name)) => device_named(name),
        Some(v) => Err(invalid(format!("option `device` must be \"cpu\", \"cuda\", \"cuda:N\" or \"auto\", got {v}"))),
    }
}

/// How many CUDA GPUs this process can use: 0 in a build without the `cuda` feature, and where
/// the driver cannot be initialised or shows no device (e.g. `CUDA_VISIBLE_DEVICES=""`).
/// The TypeScript package asks this before choosing the CUDA addon for `device: "auto"`.
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        CudaContext::device_count().map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// `"cpu"`, `"cuda"`, `"cuda:N"` or `"auto"` as a device.
pub fn device_named(name: &str) -> Result<Device> {
    let cuda = |ordinal: usize| -> Result<Device> {
        if !candle_core::utils::cuda_is_available() {
            return Err(Error::Unsupported(format!("device \"{name}\": {NO_CUDA}")));
        }
        Device::new_cuda(ordinal).map_err(|e| {
            Error::Unsupported(format!(
                "device \"{name}\" cannot be opened: {}",
                e.to_string().lines().next().unwrap_or("")
            ))
        })
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        // A CUDA build on a machine without a usable GPU falls back to the CPU.
        "auto" => Ok(Device::new_cuda(0).unwrap_or(Device::Cpu)),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => cuda(ordinal),
            _ => Err(invalid(format!(
                "option `device` must be \"cpu\", \"cuda\", \"cuda:N\" or \"auto\", got \"{other}\""
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_cuda_without_the_feature_is_unsupported() {
        assert!(device(None).unwrap().is_cpu());
        assert!(device_named("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda:-1", "CPU"] {
            assert_eq!(device_named(bad).unwrap_err().code(), "ERR_INVALID_OPTION", "{bad}");
        }
        if !candle_core::utils::cuda_is_available() {
            assert_eq!(cuda_device_count(), 0);
            assert!(device_named("auto").unwrap().is_cpu());
            for name in ["cuda", "cuda:1"] {
                let e = device_named(name).unwrap_err();
                assert_eq!(e.code(), "ERR_UNSUPPORTED");
                assert!(e.to_string().contains("no CUDA support"), "{e}");
            }
        }
    }
}
