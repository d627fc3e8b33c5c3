//! LyCORIS / kohya adapter files: one safetensors file whose keys are
//! `lycoris_<module path with dots as underscores>.<tensor>`; LoKr modules hold `lokr_w1`,
//! `lokr_w2_a`, `lokr_w2_b` (`ΔW = scale · w1 ⊗ (w2_a · w2_b)`), LoRA modules `lora_down.weight`
//! and `lora_up.weight`, each with a scalar `alpha` (scale = alpha / rank; rank when absent).

/// The key prefix LyCORIS gives a network's modules.
pub const LYCORIS_PREFIX: &str = "lycoris_";

/// The metadata entry that marks a file kronlora wrote (so a later export may replace it).
pub const LYCORIS_MARKER: &str = "kronlora.format";

/// `model.layers.0.self_attn.q_proj` → `lycoris_model_layers_0_self_attn_q_proj`.
pub fn lycoris_module_key(path: &str) -> String {
    format!("{LYCORIS_PREFIX}{}", path.replace('.', "_"))
}

/// Whether `bytes` are a safetensors file kronlora wrote (its metadata holds `LYCORIS_MARKER`).
pub fn is_kronlora_safetensors(bytes: &[u8]) -> bool {
    safetensors::SafeTensors::read_metadata(bytes)
        .is_ok_and(|(_, m)| m.metadata().as_ref().is_some_and(|m| m.contains_key(LYCORIS_MARKER)))
}
