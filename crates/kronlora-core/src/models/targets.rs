//! Which projections of a model get an adapter, and with what settings (PEFT's
//! `target_modules`, `rank_pattern` and `alpha_pattern`).

use regex::Regex;

use crate::adapters::AdapterConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    /// A module matches when its path equals a name or ends with `.name` (PEFT's list form).
    Names(Vec<String>),
    /// A module matches when the whole path matches the expression (PEFT's string form).
    Regex(String),
    /// Every linear projection except the output head (PEFT's `all-linear`).
    AllLinear,
}

/// Settings for the modules whose path matches `pattern` (as PEFT: `(.*\.)?pattern$`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModuleOverride {
    pub pattern: String,
    pub rank: Option<usize>,
    pub alpha: Option<f64>,
    pub kron_in: Option<usize>,
    pub kron_out: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdapterPlan {
    pub targets: TargetModules,
    pub config: AdapterConfig,
    pub overrides: Vec<ModuleOverride>,
    /// Adapter dropout rate during training (PEFT's `lora_dropout`), 0 for none.
    pub dropout: f64,
}

fn bad_regex(what: &str, pattern: &str, e: regex::Error) -> Error {
    Error::InvalidOption(format!("{what} `{pattern}` is not a valid regular expression: {e}"))
}

impl AdapterPlan {
    /// For each module `(path, is_output_head)`, the adapter config to give it, in model order.
    /// A plan that matches nothing is an error listing the module names that exist.
    pub fn resolve(&self, modules: &[(String, bool)]) -> Result<Vec<(String, AdapterConfig)>> {
        type Matcher<'a> = Box<dyn Fn(&str, bool) -> bool + 'a>;
        let matches: Matcher = match &self.targets {
            TargetModules::AllLinear => Box::new(|_, is_head| !is_head),
            TargetModules::Names(names) => {
                if names.is_empty() {
                    return Err(Error::InvalidOption(
                        "targetModules is an empty list; name at least one module".into(),
                    ));
                }
                let names = names.clone();
                Box::new(move |path, _| names.iter().any(|n| path == n || path.ends_with(&format!(".{n}"))))
            }
            TargetModules::Regex(pattern) => {
                let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| bad_regex("targetModules", pattern, e))?;
                Box::new(move |path, _| re.is_match(path))
            }
        };
        let overrides = self
            .overrides
            .iter()
            .map(|o| {
                let re = Regex::new(&format!(r"^(?:.*\.)?(?:{})$", o.pattern))
                    .map_err(|e| bad_regex("override pattern", &o.pattern, e))?;
                Ok((re, o))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for (path, is_head) in modules {
            if !matches(path, *is_head) {
                continue;
            }
            let mut config = self.config.clone();
            config.seed = config.seed.wrapping_add(crate::hash::fnv1a(path)) & ((1u64 << 53) - 1);
            // Each setting comes from the first override that matches and sets it.
            let matching: Vec<&ModuleOverride> =
                overrides.iter().filter(|(re, _)| re.is_match(path)).map(|(_, o)| *o).collect();
            config.rank = matching.iter().find_map(|o| o.rank).unwrap_or(config.rank);
            config.alpha = matching.iter().find_map(|o| o.alpha).unwrap_or(config.alpha);
            config.kron_in = matching.iter().find_map(|o| o.kron_in).or(config.kron_in);
            config.kron_out = matching.iter().find_map(|o| o.kron_out).or(config.kron_out);
            out.push((path.clone(), config));
        }
        if out.is_empty() {
            // Short names (the last path component) are what users usually write.
            let mut short: Vec<&str> = modules.iter().map(|(p, _)| p.rsplit('.').next().unwrap_or(p)).collect();
            short.sort();
            short.dedup();
            return Err(Error::InvalidOption(format!(
                "targetModules {:?} matches no module of this model; its linear modules are named {} \
                 (full paths like `{}`), or use \"all-linear\"",
                self.targets,
                short.join(", "),
                modules.first().map_or("", |(p, _)| p.as_str())
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::AdapterKind;

    fn plan(targets: TargetModules, overrides: Vec<ModuleOverride>) -> AdapterPlan {
        let config = AdapterConfig {
            kind: AdapterKind::KronLora,
            rank: 8,
            alpha: 16.0,
            kron_in: None,
            kron_out: None,
            use_rslora: false,
            seed: 0,
        };
        AdapterPlan { targets, config, overrides, dropout: 0.0 }
    }

    fn modules() -> Vec<(String, bool)> {
        let mut m: Vec<(String, bool)> = (0..2)
            .flat_map(|l| {
                ["attention.self.query", "attention.self.key", "attention.self.value", "output.dense"]
                    .map(|s| (format!("encoder.layer.{l}.{s}"), false))
            })
            .collect();
        m.push(("classifier".into(), true));
        m
    }

    #[test]
    fn names_regex_and_all_linear() {
        let names =
            plan(TargetModules::Names(vec!["query".into(), "value".into()]), vec![]).resolve(&modules()).unwrap();
        assert_eq!(names.len(), 4);
        assert!(names.iter().all(|(p, _)| p.ends_with(".query") || p.ends_with(".value")));
        let re =
            plan(TargetModules::Regex(r"encoder\.layer\.1\..*(query|key)".into()), vec![]).resolve(&modules()).unwrap();
        assert_eq!(
            re.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.key"]
        );
        let all = plan(TargetModules::AllLinear, vec![]).resolve(&modules()).unwrap();
        assert_eq!(all.len(), 8, "all-linear excludes the head");
        // Different modules get different seeds.
        assert_ne!(all[0].1.seed, all[1].1.seed);
    }

    #[test]
    fn overrides_apply_by_suffix_pattern() {
        let o = ModuleOverride {
            pattern: r"layer\.1\.attention\.self\.value".into(),
            rank: Some(2),
            alpha: Some(4.0),
            kron_out: Some(8),
            ..Default::default()
        };
        let r = plan(TargetModules::Names(vec!["value".into()]), vec![o]).resolve(&modules()).unwrap();
        assert_eq!((r[0].1.rank, r[0].1.alpha), (8, 16.0));
        assert_eq!((r[1].1.rank, r[1].1.alpha, r[1].1.kron_out), (2, 4.0, Some(8)));
    }

    #[test]
    fn no_match_lists_the_modules() {
        let err = plan(TargetModules::Names(vec!["q_proj".into()]), vec![]).resolve(&modules()).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        assert!(msg.contains("q_proj") && msg.contains("classifier, dense, key, query, value"), "{msg}");
        let err = plan(TargetModules::Regex("(".into()), vec![]).resolve(&modules()).unwrap_err();
        assert!(err.to_string().contains("not a valid regular expression"));
    }
}
