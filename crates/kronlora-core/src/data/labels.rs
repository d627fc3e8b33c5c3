//! Class labels: integers as given, or strings mapped to indices (sorted, so the mapping does
//! not depend on record order) and saved with the adapter.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Label {
    Index(usize),
    Name(String),
}

/// The label names of a classification task, in index order (empty for integer labels).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelMap {
    pub names: Vec<String>,
}

impl LabelMap {
    /// Build from training labels: all integers, or all strings (mixing is an error).
    pub fn from_labels<'a>(labels: impl Iterator<Item = &'a Label>, num_labels: usize) -> Result<Self> {
        let mut names = BTreeMap::new();
        let mut has_index = false;
        for label in labels {
            match label {
                Label::Name(n) => {
                    names.insert(n.clone(), ());
                }
                Label::Index(i) => {
                    has_index = true;
                    if *i >= num_labels {
                        return Err(Error::InvalidData(format!("label {i} is out of range for numLabels = {num_labels}; labels are 0..{}", num_labels - 1)));
                    }
                }
            }
        }
        if has_index && !names.is_empty() {
            return Err(Error::InvalidData("labels mix integers and strings; use one kind".into()));
        }
        let names: Vec<String> = names.into_keys().collect();
        if names.len() > num_labels {
            return Err(Error::InvalidData(format!("{} distinct label names ({}) exceed numLabels = {num_labels}", names.len(), names.join(", "))));
        }
        Ok(LabelMap { names })
    }

    /// The index of a label, or an error naming the labels that exist (e.g. at evaluation).
    pub fn index(&self, label: &Label, num_labels: usize) -> Result<usize> {
        match label {
            Label::Index(i) if *i < num_labels && self.names.is_empty() => Ok(*i),
            Label::Index(i) => Err(Error::InvalidData(format!("label {i} is not one of the labels this model was trained with"))),
            Label::Name(n) => self.names.iter().position(|x| x == n).ok_or_else(|| {
                Error::InvalidData(format!("unknown label `{n}`; the model knows {}", if self.names.is_empty() { "integer labels only".into() } else { self.names.join(", ") }))
            }),
        }
    }
}

/// What a classification dataset holds: its size and how many classes its labels need
/// (distinct names, or the largest index + 1; at least 2). The CLI sizes the head from it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSummary {
    pub records: usize,
    pub labels: Vec<String>,
    pub num_labels: usize,
}

impl LabelSummary {
    pub fn of<'a>(labels: impl Iterator<Item = &'a Label>) -> Self {
        let (mut names, mut max, mut records) = (std::collections::BTreeSet::new(), 1usize, 0usize);
        for label in labels {
            records += 1;
            match label {
                Label::Name(n) => {
                    names.insert(n.clone());
                }
                Label::Index(i) => max = max.max(*i),
            }
        }
        let num_labels = if names.is_empty() { max + 1 } else { names.len() }.max(2);
        LabelSummary { records, labels: names.into_iter().collect(), num_labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_the_classes() {
        let names = [Label::Name("pos".into()), Label::Name("neg".into()), Label::Name("meh".into()), Label::Name("pos".into())];
        assert_eq!(LabelSummary::of(names.iter()), LabelSummary { records: 4, labels: vec!["meh".into(), "neg".into(), "pos".into()], num_labels: 3 });
        assert_eq!(LabelSummary::of([Label::Index(0), Label::Index(4)].iter()).num_labels, 5);
        assert_eq!(LabelSummary::of([Label::Index(0)].iter()).num_labels, 2);
    }

    #[test]
    fn names_map_sorted_and_unknown_labels_are_errors() {
        let labels = [Label::Name("pos".into()), Label::Name("neg".into()), Label::Name("pos".into())];
        let map = LabelMap::from_labels(labels.iter(), 2).unwrap();
        assert_eq!(map.names, ["neg", "pos"]);
        assert_eq!(map.index(&Label::Name("pos".into()), 2).unwrap(), 1);
        let err = map.index(&Label::Name("meh".into()), 2).unwrap_err();
        assert!(err.to_string().contains("unknown label `meh`; the model knows neg, pos"));
        assert!(LabelMap::from_labels([Label::Index(0), Label::Name("a".into())].iter(), 2).is_err());
        assert!(LabelMap::from_labels([Label::Index(2)].iter(), 2).unwrap_err().to_string().contains("out of range"));
    }
}
