//! Several adapters on one model: which are active and with what weight (a weighted sum of
//! their updates), per model or for one call, removing one, and merging the active ones into
//! the base weights (exactly undone by unmerging: the weights from before are kept).

use super::{ActiveAdapter, PretrainedModel};
use crate::error::{Error, Result};
use crate::models::AdapterSelection;

impl PretrainedModel {
    /// The adapters forward passes use now, with their weights, in the order they were added.
    pub fn active_adapters(&self) -> Vec<ActiveAdapter> {
        self.adapters
            .iter()
            .filter_map(|a| a.weight.map(|weight| ActiveAdapter { name: a.name.clone(), weight }))
            .collect()
    }

    /// Whether `mergeAdapters` folded the active adapters into the base weights.
    pub fn is_merged(&self) -> bool {
        self.backbone.projections().iter().any(|p| p.is_merged())
    }

    fn refuse_while_merged(&self, what: &str) -> Result<()> {
        if self.is_merged() {
            return Err(Error::InvalidState(format!(
                "the active adapters are merged into the base weights; call unmergeAdapters() before {what}"
            )));
        }
        Ok(())
    }

    /// `selection` checked against the model: adapters it has, each once, finite weights.
    pub fn check_selection(&self, selection: &[(String, f64)]) -> Result<AdapterSelection> {
        for (i, (name, weight)) in selection.iter().enumerate() {
            if !self.adapters.iter().any(|a| &a.name == name) {
                let names: Vec<&str> = self.adapters.iter().map(|a| a.name.as_str()).collect();
                return Err(Error::InvalidOption(format!(
                    "the model has no adapter named `{name}`; it has {}",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                )));
            }
            if selection[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::InvalidOption(format!("adapter `{name}` is named twice")));
            }
            if !weight.is_finite() {
                return Err(Error::InvalidOption(format!(
                    "adapter `{name}`: weight must be a finite number, got {weight}"
                )));
            }
        }
        Ok(std::sync::Arc::new(selection.to_vec()))
    }

    /// A selection for one call (`with_adapter_selection`): refused while merged, where the
    /// updates are in the weights and cannot be chosen per call.
    pub fn selection_for_call(&self, selection: &[(String, f64)]) -> Result<AdapterSelection> {
        self.refuse_while_merged("choosing adapters per call")?;
        self.check_selection(selection)
    }

    /// Make exactly `selection`'s adapters active, with their weights (an empty one: the base
    /// model alone).
    pub fn set_active_adapters(&mut self, selection: &[(String, f64)]) -> Result<()> {
        self.refuse_while_merged("changing the active adapters")?;
        let selection = self.check_selection(selection)?;
        for p in self.backbone.projections_mut() {
            p.set_active(&selection);
        }
        for a in &mut self.adapters {
            a.weight = selection.iter().find(|(n, _)| *n == a.name).map(|(_, w)| *w);
        }
        Ok(())
    }

    /// Remove adapter `name` from every projection.
    pub fn delete_adapter(&mut self, name: &str) -> Result<()> {
        self.refuse_while_merged("deleting an adapter")?;
        self.check_selection(&[(name.to_string(), 1.0)])?;
        for p in self.backbone.projections_mut() {
            p.remove_adapter(name);
        }
        self.adapters.retain(|a| a.name != name);
        Ok(())
    }

    /// Fold the active adapters' weighted updates into the base weights of the projections
    /// that carry one; forward passes then cost what the base model's do. Returns how many
    /// projections changed.
    pub fn merge_adapters(&mut self) -> Result<usize> {
        self.refuse_while_merged("merging again")?;
        if self.active_adapters().is_empty() {
            return Err(Error::InvalidState("no adapter is active; nothing to merge".into()));
        }
        let active: Vec<String> = self.active_adapters().into_iter().map(|a| a.name).collect();
        let mut merged = 0;
        for p in self.backbone.projections_mut() {
            if active.iter().any(|n| p.adapter_weight(n).is_some()) {
                p.merge()?;
                merged += 1;
            }
        }
        Ok(merged)
    }

    /// Restore the base weights exactly as they were before `merge_adapters`.
    pub fn unmerge_adapters(&mut self) -> Result<usize> {
        let mut restored = 0;
        for p in self.backbone.projections_mut() {
            if p.is_merged() {
                p.unmerge()?;
                restored += 1;
            }
        }
        if restored == 0 {
            return Err(Error::InvalidState("the adapters are not merged; nothing to unmerge".into()));
        }
        Ok(restored)
    }
}
