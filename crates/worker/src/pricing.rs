use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Dollars per million input (prompt) tokens.
    pub input_per_million_usd: f64,
    /// Dollars per million output (completion) tokens.
    pub output_per_million_usd: f64,
}

/// Prices by model name, for runners whose provider does not report a cost.
///
/// A model matches its exact name or else the longest configured prefix, so
/// `claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929` too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// A table of `prices`.
    pub fn new(prices: BTreeMap<String, ModelPrice>) -> Self {
        PriceTable { prices }
    }

    /// The price of `model`, when configured.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        if let Some(price) = self.prices.get(model) {
            return Some(*price);
        }
        self.prices
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| *price)
    }

    /// The cost of `input` and `output` tokens of `model`; `None` when it has no price.
    pub fn cost(&self, model: Option<&str>, input: u64, output: u64) -> Option<f64> {
        let price = self.price(model?)?;
        Some(
            (input as f64 * price.input_per_million_usd
                + output as f64 * price.output_per_million_usd)
                / 1_000_000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_win_then_the_longest_prefix() {
        let price = |input, output| ModelPrice {
            input_per_million_usd: input,
            output_per_million_usd: output,
        };
        let table = PriceTable::new(BTreeMap::from([
            ("gpt-5".to_string(), price(1.25, 10.0)),
            ("gpt-5-mini".to_string(), price(0.25, 2.0)),
            ("gpt-5-mini-2025".to_string(), price(0.5, 4.0)),
        ]));
        let cost = table
            .cost(Some("gpt-5-mini"), 1_000_000, 1_000_000)
            .unwrap();
        assert!((cost - 2.25).abs() < 1e-9, "{cost}");
        let cost = table.cost(Some("gpt-5-2025-08-07"), 2_000_000, 0).unwrap();
        assert!((cost - 2.5).abs() < 1e-9, "{cost}");
        let cost = table
            .cost(Some("gpt-5-mini-2025-08-07"), 0, 1_000_000)
            .unwrap();
        assert!((cost - 4.0).abs() < 1e-9, "{cost}");
        assert_eq!(table.cost(Some("claude-opus"), 10, 10), None);
        assert_eq!(table.cost(None, 10, 10), None);
    }
}
