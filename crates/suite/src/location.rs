//! Where in a failing layer's output the error sits: its worst tokens and the hidden channels
//! that carry most of its squared error. Small vectors, computed for every layer (the heat strip
//! of a case's report shows passing layers too); messages and reports name them for failing ones.

use serde::{Deserialize, Serialize};

use crate::number::{percent, sci};

/// How many tokens and channels a [`ErrorLocation`] keeps.
pub const TOP: usize = 5;

/// The worst tokens and channels of one layer, over all its records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorLocation {
    /// The tokens with the largest squared error, worst first.
    pub tokens: Vec<TokenError>,
    /// The hidden channels (last dim) with the largest share of the squared error, largest first.
    pub channels: Vec<ChannelShare>,
    /// The layer's whole squared error, `sum (reference - target)^2` over all its records.
    pub total_sq: f64,
    /// Per token position, the squared error summed over prompts and records (a heat strip's row).
    pub token_sq: Vec<f64>,
    /// Every channel's squared error while records are added; not kept in outcome files.
    #[serde(skip)]
    pub channel_sq: Vec<f64>,
}

/// One token's squared error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenError {
    /// Record name (`{key}` or `{key}.iter-N`).
    pub record: String,
    /// Prompt (batch item).
    pub item: usize,
    /// Position within the prompt (row within the item).
    pub token: u64,
    /// `sum (reference - target)^2` over the token's channels.
    pub sq: f64,
}

/// One hidden channel's part of the squared error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelShare {
    pub channel: u64,
    /// Its squared error over the layer's whole squared error, in [0, 1].
    pub share: f64,
}

impl ErrorLocation {
    /// One line for a failure message or a report: worst tokens, then top channels.
    pub fn describe(&self) -> String {
        let tokens: Vec<String> = self
            .tokens
            .iter()
            .map(|t| {
                let call = t.record.rsplit_once(".iter-").map(|(_, n)| format!(", record iter-{n}")).unwrap_or_default();
                format!("token {} of prompt {}{call} ({})", t.token, t.item, sci(t.sq))
            })
            .collect();
        let channels: Vec<String> = self.channels.iter().map(|c| format!("{} ({})", c.channel, percent(c.share))).collect();
        format!("worst tokens (squared error): {}; channels carrying most of it: {}", tokens.join(", "), channels.join(", "))
    }
}

impl ErrorLocation {
    /// An empty location, to [`ErrorLocation::add`] records to.
    pub fn empty() -> Self {
        ErrorLocation { tokens: Vec::new(), channels: Vec::new(), total_sq: 0.0, token_sq: Vec::new(), channel_sq: Vec::new() }
    }

    /// Adds one record's squared-error sums: `per_token[item][token]` and `per_channel`, its rows
    /// at positions 0, 1, ...
    pub fn add(&mut self, record: &str, per_token: &[Vec<f64>], per_channel: &[f64]) {
        self.add_at(record, 0, per_token, per_channel);
    }

    /// Adds one record whose first row is at position `first` of the sequence (in generate mode a
    /// decode step's one row is at the prompt's length plus the step, after the prefill's rows).
    pub fn add_at(&mut self, record: &str, first: usize, per_token: &[Vec<f64>], per_channel: &[f64]) {
        for (item, rows) in per_token.iter().enumerate() {
            if self.token_sq.len() < first + rows.len() {
                self.token_sq.resize(first + rows.len(), 0.0);
            }
            for (acc, v) in self.token_sq[first..].iter_mut().zip(rows) {
                *acc += v;
            }
            for (token, &sq) in rows.iter().enumerate() {
                self.tokens.push(TokenError { record: record.to_string(), item, token: (first + token) as u64, sq });
            }
        }
        // Worst first; NaN sorts as the worst (total order, NaN above +inf).
        self.tokens.sort_by(|a, b| b.sq.total_cmp(&a.sq));
        self.tokens.truncate(TOP);
        if self.channel_sq.len() < per_channel.len() {
            self.channel_sq.resize(per_channel.len(), 0.0);
        }
        for (acc, v) in self.channel_sq.iter_mut().zip(per_channel) {
            *acc += v;
        }
        self.total_sq = self.channel_sq.iter().sum();
        // Channels without error carry none of it: not listed.
        let mut order: Vec<usize> = (0..self.channel_sq.len()).filter(|&c| self.channel_sq[c] > 0.0 || self.channel_sq[c].is_nan()).collect();
        order.sort_by(|&a, &b| self.channel_sq[b].total_cmp(&self.channel_sq[a]));
        self.channels = order.into_iter().take(TOP).map(|c| ChannelShare { channel: c as u64, share: self.channel_sq[c] / self.total_sq }).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_worst_tokens_and_the_channel_shares_over_records() {
        let mut loc = ErrorLocation::empty();
        loc.add("k", &[vec![1.0, 4.0], vec![9.0, 2.0]], &[2.0, 5.0, 9.0]);
        loc.add("k.iter-1", &[vec![0.5, 0.25]], &[0.0, 0.0, 0.75]);
        let tokens: Vec<(&str, usize, u64)> = loc.tokens.iter().map(|t| (t.record.as_str(), t.item, t.token)).collect();
        assert_eq!(tokens, [("k", 1, 0), ("k", 0, 1), ("k", 1, 1), ("k", 0, 0), ("k.iter-1", 0, 0)]);
        assert_eq!(loc.total_sq, 16.75);
        assert_eq!(loc.token_sq, [10.5, 6.25]);
        let shares: Vec<(u64, f64)> = loc.channels.iter().map(|c| (c.channel, c.share)).collect();
        assert_eq!(shares, [(2, 9.75 / 16.75), (1, 5.0 / 16.75), (0, 2.0 / 16.75)]);
        let mut steps = ErrorLocation::empty();
        steps.add("k", &[vec![1.0, 4.0]], &[5.0]);
        steps.add_at("k.iter-1", 2, &[vec![3.0]], &[3.0]);
        assert_eq!(steps.token_sq, [1.0, 4.0, 3.0], "a decode step's row sits after the prompt's");
        assert_eq!(steps.tokens[1].token, 2);
        assert_eq!(loc.describe(), "worst tokens (squared error): token 0 of prompt 1 (9.0000e0), token 1 of prompt 0 (4.0000e0), token 1 of prompt 1 (2.0000e0), token 0 of prompt 0 (1.0000e0), token 0 of prompt 0, record iter-1 (5.0000e-1); channels carrying most of it: 2 (58.21%), 1 (29.85%), 0 (11.94%)");
    }
}
