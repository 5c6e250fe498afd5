//! Whether a failing layer makes its own error or inherits it: the case's failing layers
//! classified against a second run of the target in the isolated feed, where every module is fed
//! its golden input.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::outcome::LayerOutcome;

/// Where a failing layer's error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribution {
    /// The layer fails in the isolated feed too: it makes error of its own.
    Introduced,
    /// The layer passes when fed its golden input: it only carries error from upstream.
    Inherited,
}

impl fmt::Display for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attribution::Introduced => "introduced",
            Attribution::Inherited => "inherited",
        })
    }
}

/// Marks every failing layer of `layers` [`Attribution::Introduced`] if the same key fails in
/// `isolated` too, [`Attribution::Inherited`] if it passes there. A key the isolated run did not
/// record stays unclassified (`None`); passing layers are never classified.
pub fn classify(layers: &mut [LayerOutcome], isolated: &[LayerOutcome]) {
    for layer in layers.iter_mut().filter(|l| !l.passed()) {
        layer.attribution = isolated.iter().find(|i| i.key == layer.key).map(|i| if i.passed() { Attribution::Inherited } else { Attribution::Introduced });
    }
}

/// Marks every failing layer introduced: in the isolated feed each module already had its golden
/// input, so its error is its own.
pub fn all_introduced(layers: &mut [LayerOutcome]) {
    for layer in layers.iter_mut().filter(|l| !l.passed()) {
        layer.attribution = Some(Attribution::Introduced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Bounds, Failure};

    fn layer(key: &str, fails: bool) -> LayerOutcome {
        let failures = if fails { vec![(0, Failure { quantity: crate::verdict::Quantity::AbsDiffL2, observed: 2.0, threshold: Some(1.0), excess: 1.0, reason: "r".into() })] } else { vec![] };
        LayerOutcome { key: key.into(), bounds: Bounds::new(Some(1.0), None), observations: vec![], failures, error: None, attribution: None, location: None }
    }

    #[test]
    fn failing_layers_are_introduced_when_they_fail_isolated_and_inherited_when_they_pass() {
        let mut cumulative = vec![layer("a", false), layer("b", true), layer("c", true), layer("d", true)];
        let isolated = vec![layer("a", false), layer("b", true), layer("c", false)];
        classify(&mut cumulative, &isolated);
        let got: Vec<Option<Attribution>> = cumulative.iter().map(|l| l.attribution).collect();
        assert_eq!(got, [None, Some(Attribution::Introduced), Some(Attribution::Inherited), None]);
        all_introduced(&mut cumulative);
        assert_eq!(cumulative[0].attribution, None);
        assert_eq!(cumulative[2].attribution, Some(Attribution::Introduced));
        assert_eq!(serde_json::to_string(&Attribution::Inherited).unwrap(), "\"inherited\"");
    }
}
