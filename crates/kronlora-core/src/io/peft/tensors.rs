//! `adapter_model.safetensors`: tensor keys, and a file's tensors grouped by module.

use std::collections::BTreeMap;

use crate::adapters::{AdapterKind, KronShape};
use crate::TensorData;

/// What PEFT puts before every module path.
pub const KEY_PREFIX: &str = "base_model.model.";

/// The key of the tensor at `path` (a module's `<module>.<param>`, a head's `classifier.weight`).
pub fn tensor_key(path: &str) -> String {
    format!("{KEY_PREFIX}{path}")
}

/// An adapter tensor of one module, by its name in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// LoRA's `A [r, in]`.
    LoraA,
    /// LoRA's `B [out, r]`.
    LoraB,
    /// Kron-LoRA's `A [d_a2, d_a1]`.
    LokrW1,
    /// Kron-LoRA's `B1 [d_b2, r]`.
    LokrW2A,
    /// Kron-LoRA's `B2 [r, d_b1]`.
    LokrW2B,
}

impl Param {
    /// The name after the module path.
    pub fn name(self) -> &'static str {
        match self {
            Param::LoraA => "lora_A.weight",
            Param::LoraB => "lora_B.weight",
            Param::LokrW1 => "lokr_w1",
            Param::LokrW2A => "lokr_w2_a",
            Param::LokrW2B => "lokr_w2_b",
        }
    }

    /// An adapter kind's tensors.
    pub fn of(kind: AdapterKind) -> &'static [Param] {
        match kind {
            AdapterKind::Lora => &[Param::LoraA, Param::LoraB],
            AdapterKind::KronLora => &[Param::LokrW1, Param::LokrW2A, Param::LokrW2B],
        }
    }

    /// The tensor that marks a module as adapted by `kind`: the others must come with it.
    pub fn marker(kind: AdapterKind) -> Param {
        match kind {
            AdapterKind::Lora => Param::LoraA,
            AdapterKind::KronLora => Param::LokrW1,
        }
    }
}

/// One module's adapter factors.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleWeights {
    /// `lora_A.weight [r, in]`, `lora_B.weight [out, r]`.
    Lora { lora_a: TensorData, lora_b: TensorData },
    /// `lokr_w1 = A [d_a2, d_a1]`, `lokr_w2_a = B1 [d_b2, r]`, `lokr_w2_b = B2 [r, d_b1]`.
    LoKr { lokr_w1: TensorData, lokr_w2_a: TensorData, lokr_w2_b: TensorData },
}

/// The adapter tensors of one module (`module`: its path, without `KEY_PREFIX`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleTensors {
    pub module: String,
    pub weights: ModuleWeights,
}

impl ModuleTensors {
    pub fn kind(&self) -> AdapterKind {
        match self.weights {
            ModuleWeights::Lora { .. } => AdapterKind::Lora,
            ModuleWeights::LoKr { .. } => AdapterKind::KronLora,
        }
    }

    /// The tensors under their keys.
    pub fn into_keyed(self) -> Vec<(String, TensorData)> {
        let key = |param: Param| tensor_key(&format!("{}.{}", self.module, param.name()));
        match self.weights {
            ModuleWeights::Lora { lora_a, lora_b } => vec![(key(Param::LoraA), lora_a), (key(Param::LoraB), lora_b)],
            ModuleWeights::LoKr { lokr_w1, lokr_w2_a, lokr_w2_b } => {
                vec![(key(Param::LokrW1), lokr_w1), (key(Param::LokrW2A), lokr_w2_a), (key(Param::LokrW2B), lokr_w2_b)]
            }
        }
    }

    /// The tensor whose shape states the rank.
    pub fn rank_param(&self) -> Param {
        match self.weights {
            ModuleWeights::Lora { .. } => Param::LoraA,
            ModuleWeights::LoKr { .. } => Param::LokrW2A,
        }
    }

    /// Kron-LoRA's factor shapes, when the three tensors are matrices with one inner rank.
    pub fn kron_shape(&self) -> Option<KronShape> {
        let ModuleWeights::LoKr { lokr_w1, lokr_w2_a, lokr_w2_b } = &self.weights else { return None };
        let (&[d_a2, d_a1], &[d_b2, rank], &[rank2, d_b1]) =
            (lokr_w1.shape.as_slice(), lokr_w2_a.shape.as_slice(), lokr_w2_b.shape.as_slice())
        else {
            return None;
        };
        (rank == rank2).then_some(KronShape { d_a1, d_a2, d_b1, d_b2, rank })
    }

    /// The rank, when the tensors make an update of a `[out_features, in_features]` layer;
    /// otherwise what is wrong with them.
    pub fn rank_for_layer(&self, out_features: usize, in_features: usize) -> Result<usize, String> {
        match &self.weights {
            ModuleWeights::Lora { lora_a: a, lora_b: b } => {
                let (&[r, a_in], &[b_out, r2]) = (a.shape.as_slice(), b.shape.as_slice()) else {
                    return Err(format!("lora_A {:?} and lora_B {:?} must be matrices", a.shape, b.shape));
                };
                if a_in != in_features || b_out != out_features || r != r2 {
                    return Err(format!(
                        "lora_A {:?} / lora_B {:?} do not fit a [{out_features}, {in_features}] layer",
                        a.shape, b.shape
                    ));
                }
                Ok(r)
            }
            ModuleWeights::LoKr { lokr_w1: a, lokr_w2_a: b1, lokr_w2_b: b2 } => {
                let (&[d_a2, d_a1], &[d_b2, r], &[r2, d_b1]) =
                    (a.shape.as_slice(), b1.shape.as_slice(), b2.shape.as_slice())
                else {
                    return Err("lokr_w1, lokr_w2_a and lokr_w2_b must be matrices".into());
                };
                if r != r2
                    || d_a1.checked_mul(d_b1) != Some(in_features)
                    || d_a2.checked_mul(d_b2) != Some(out_features)
                {
                    return Err(format!(
                        "lokr_w1 {:?} ⊗ (lokr_w2_a {:?} · lokr_w2_b {:?}) does not give a [{out_features}, {in_features}] update",
                        a.shape, b1.shape, b2.shape
                    ));
                }
                Ok(r)
            }
        }
    }
}

/// The adapter tensors a file holds for one module, before they are known to be complete.
#[derive(Default)]
struct Found {
    lora_a: Option<TensorData>,
    lora_b: Option<TensorData>,
    lokr_w1: Option<TensorData>,
    lokr_w2_a: Option<TensorData>,
    lokr_w2_b: Option<TensorData>,
}

impl Found {
    fn slot(&mut self, param: Param) -> &mut Option<TensorData> {
        match param {
            Param::LoraA => &mut self.lora_a,
            Param::LoraB => &mut self.lora_b,
            Param::LokrW1 => &mut self.lokr_w1,
            Param::LokrW2A => &mut self.lokr_w2_a,
            Param::LokrW2B => &mut self.lokr_w2_b,
        }
    }

    fn has(&self, param: Param) -> bool {
        match param {
            Param::LoraA => self.lora_a.is_some(),
            Param::LoraB => self.lora_b.is_some(),
            Param::LokrW1 => self.lokr_w1.is_some(),
            Param::LokrW2A => self.lokr_w2_a.is_some(),
            Param::LokrW2B => self.lokr_w2_b.is_some(),
        }
    }

    /// The module's weights of `kind`, or which tensor is missing.
    fn complete(self, kind: AdapterKind) -> Result<ModuleWeights, &'static str> {
        match kind {
            AdapterKind::Lora => Ok(ModuleWeights::Lora {
                lora_a: self.lora_a.ok_or("lora_A.weight is missing")?,
                lora_b: self.lora_b.ok_or("lora_A.weight is there but lora_B.weight is missing")?,
            }),
            AdapterKind::KronLora => Ok(ModuleWeights::LoKr {
                lokr_w1: self.lokr_w1.ok_or("lokr_w1 is missing")?,
                lokr_w2_a: self.lokr_w2_a.ok_or("lokr_w2_a is missing (a full lokr_w2 is not supported)")?,
                lokr_w2_b: self.lokr_w2_b.ok_or("lokr_w2_b is missing")?,
            }),
        }
    }
}

/// A weights file's tensors for an adapter of one kind: each module's adapter tensors, and the
/// rest (a head's, or tensors no module claims). Taking what a model uses leaves what it does
/// not, for errors.
pub struct AdapterTensors {
    kind: AdapterKind,
    /// How many tensors the file holds.
    count: usize,
    modules: BTreeMap<String, Found>,
    other: BTreeMap<String, TensorData>,
}

impl AdapterTensors {
    /// Group `tensors` (key → tensor) by module: `KEY_PREFIX<module>.<param>` for each of
    /// `kind`'s params is a module's tensor; anything else is kept as it is.
    pub fn group(tensors: BTreeMap<String, TensorData>, kind: AdapterKind) -> Self {
        let count = tensors.len();
        let mut modules: BTreeMap<String, Found> = BTreeMap::new();
        let mut other = BTreeMap::new();
        for (key, tensor) in tensors {
            let place = key.strip_prefix(KEY_PREFIX).and_then(|path| {
                Param::of(kind)
                    .iter()
                    .find_map(|&param| path.strip_suffix(param.name())?.strip_suffix('.').map(|module| (module, param)))
            });
            match place {
                Some((module, param)) => *modules.entry(module.to_string()).or_default().slot(param) = Some(tensor),
                None => {
                    other.insert(key, tensor);
                }
            }
        }
        AdapterTensors { kind, count, modules, other }
    }

    /// How many tensors the file holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether the file adapts `module`: it holds the kind's marker tensor for it (`lora_A.weight`, `lokr_w1`).
    pub fn has_module(&self, module: &str) -> bool {
        self.modules.get(module).is_some_and(|found| found.has(Param::marker(self.kind)))
    }

    /// Take `module`'s tensors (see `has_module`): None when the file does not adapt it, an
    /// error saying which tensor is missing when they are not all there.
    pub fn take_module(&mut self, module: &str) -> Option<Result<ModuleTensors, &'static str>> {
        if !self.has_module(module) {
            return None;
        }
        let found = self.modules.remove(module)?;
        Some(found.complete(self.kind).map(|weights| ModuleTensors { module: module.to_string(), weights }))
    }

    /// Take the tensor stored under `key` that is no module's adapter tensor (a head's).
    pub fn take(&mut self, key: &str) -> Option<TensorData> {
        self.other.remove(key)
    }

    /// The keys of every tensor not taken, in order.
    pub fn untaken(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.other.keys().cloned().collect();
        for (module, found) in &self.modules {
            for &param in Param::of(self.kind) {
                if found.has(param) {
                    keys.push(tensor_key(&format!("{module}.{}", param.name())));
                }
            }
        }
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> TensorData {
        TensorData { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    #[test]
    fn tensors_group_by_module_and_keys_round_trip() {
        let keys = [
            "base_model.model.enc.q.lora_A.weight",
            "base_model.model.enc.q.lora_B.weight",
            "base_model.model.enc.v.lora_B.weight",
            "base_model.model.classifier.weight",
            "base_model.model.enc.k.lokr_w1",
            "stray",
        ];
        let tensors = keys.iter().map(|k| (k.to_string(), t(&[2, 2]))).collect();
        let mut grouped = AdapterTensors::group(tensors, AdapterKind::Lora);
        assert_eq!(grouped.count(), 6);
        assert!(grouped.has_module("enc.q") && !grouped.has_module("enc.v") && !grouped.has_module("enc.k"));
        assert!(grouped.take_module("enc.v").is_none());
        let q = grouped.take_module("enc.q").unwrap().unwrap();
        assert_eq!((q.kind(), q.rank_param()), (AdapterKind::Lora, Param::LoraA));
        let keyed: Vec<String> = q.into_keyed().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keyed, keys[..2]);
        assert!(grouped.take("base_model.model.classifier.weight").is_some());
        assert_eq!(
            grouped.untaken(),
            ["base_model.model.enc.k.lokr_w1", "base_model.model.enc.v.lora_B.weight", "stray"]
        );
    }

    #[test]
    fn a_module_without_all_its_tensors_says_which_is_missing() {
        let tensors = [("base_model.model.m.lokr_w1".to_string(), t(&[2, 2]))].into_iter().collect();
        let mut grouped = AdapterTensors::group(tensors, AdapterKind::KronLora);
        assert_eq!(
            grouped.take_module("m").unwrap().unwrap_err(),
            "lokr_w2_a is missing (a full lokr_w2 is not supported)"
        );
        assert!(grouped.untaken().is_empty());
    }

    #[test]
    fn shapes_are_checked_against_the_layer() {
        let lokr = |w1: &[usize], w2_a: &[usize], w2_b: &[usize]| ModuleTensors {
            module: "m".into(),
            weights: ModuleWeights::LoKr { lokr_w1: t(w1), lokr_w2_a: t(w2_a), lokr_w2_b: t(w2_b) },
        };
        let m = lokr(&[4, 2], &[4, 3], &[3, 8]);
        assert_eq!(m.rank_for_layer(16, 16), Ok(3));
        assert_eq!(m.kron_shape(), Some(KronShape { d_a1: 2, d_a2: 4, d_b1: 8, d_b2: 4, rank: 3 }));
        assert!(m.rank_for_layer(16, 15).unwrap_err().contains("does not give a [16, 15] update"));
        let m = lokr(&[4, 2], &[4, 3], &[2, 8]);
        assert!(m.kron_shape().is_none() && m.rank_for_layer(16, 16).is_err());
        let m = lokr(&[4], &[4, 3], &[3, 8]);
        assert_eq!(m.rank_for_layer(16, 16).unwrap_err(), "lokr_w1, lokr_w2_a and lokr_w2_b must be matrices");
        let lora = ModuleTensors {
            module: "m".into(),
            weights: ModuleWeights::Lora { lora_a: t(&[4, 16]), lora_b: t(&[8, 4]) },
        };
        assert_eq!(lora.rank_for_layer(8, 16), Ok(4));
        assert_eq!(
            lora.rank_for_layer(16, 16).unwrap_err(),
            "lora_A [4, 16] / lora_B [8, 4] do not fit a [16, 16] layer"
        );
        assert_eq!(lora.kron_shape(), None);
    }
}
